"""Image export of any figure through plotly's own modebar camera button (`st.plotly_chart(..., config=...)`).

plotly.js has one image button, `toImage`, which saves in the single format named by the config's
`toImageButtonOptions` (png, svg, jpeg or webp); a second button would need a JavaScript click handler,
which a JSON config (all Streamlit passes on) cannot carry. So `CONFIG` saves PNG at twice the on-screen
size, and `config("svg")` gives the vector version for a page that offers the choice.
"""

from __future__ import annotations

FORMATS = ("png", "svg")
PNG_SCALE = 2  # PNG pixels per on-screen pixel (sharp on slides and high-density screens)


def config(image_format: str = "png", filename: str = "moe-explorer") -> dict:
    """A plotly config whose camera button downloads the figure as `image_format` (png or svg) named
    `filename`.png/.svg, at the size it has on screen (PNG scaled by PNG_SCALE)."""
    if image_format not in FORMATS:
        raise ValueError(f"image_format must be one of {FORMATS}, got {image_format!r}")
    return {
        "displaylogo": False,
        "toImageButtonOptions": {
            "format": image_format,
            "filename": filename,
            "scale": PNG_SCALE if image_format == "png" else 1,
        },
    }


CONFIG = config("png")
