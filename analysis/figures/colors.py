"""Expert colours and HTML escaping shared by every figure, so an expert has the same colour everywhere.

Every user string (token text, document labels, run names) that reaches hover text, tick labels or HTML
goes through `esc`, because plotly renders a subset of HTML in labels and coloured text is raw HTML.
"""

from __future__ import annotations

import colorsys
import html
from collections.abc import Sequence

# Qualitative palettes, distinct at a glance; beyond 24 experts we fall back to evenly spaced hues.
_PALETTE_10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
               "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]  # fmt: skip
_PALETTE_24 = ["#2E91E5", "#E15F99", "#1CA71C", "#FB0D0D", "#DA16FF", "#222A2A", "#B68100", "#750D86",
               "#EB663B", "#511CFB", "#00A08B", "#FB00D1", "#FC0080", "#B2828D", "#6C7C32", "#778AAE",
               "#862A16", "#A777F1", "#620042", "#1616A7", "#DA60CA", "#6C4516", "#0D2A63", "#AF0038"]  # fmt: skip


def esc(value: object) -> str:
    """HTML-escape any value for hover text, tick labels or raw HTML (quotes included).

    Quotes become numeric references (&#34; &#39;): plotly decodes those in hover and label text but shows
    a named `&quot;` as it is, while HTML attributes and text read both the same.
    """
    return html.escape(str(value), quote=False).replace('"', "&#34;").replace("'", "&#39;")


def expert_colors(n_experts: int) -> list[str]:
    """One hex colour per expert; the same expert always gets the same colour for a given E."""
    if n_experts <= len(_PALETTE_10):
        return _PALETTE_10[:n_experts]
    if n_experts <= len(_PALETTE_24):
        return _PALETTE_24[:n_experts]
    colors = []
    for i in range(n_experts):
        # golden-ratio hue steps keep neighbours apart; alternate lightness for more contrast
        r, g, b = colorsys.hls_to_rgb((i * 0.618034) % 1.0, 0.45 if i % 2 else 0.6, 0.75)
        colors.append(f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}")
    return colors


def text_color(background: str) -> str:
    """Black or white, whichever reads better on a hex background (relative luminance > 0.5)."""
    r, g, b = (int(background[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "#000000" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "#ffffff"


def discrete_colorscale(colors: Sequence[str]) -> list[list]:
    """A stepped colourscale so that integer z = i maps exactly to colors[i] (use zmin=-0.5, zmax=len-0.5)."""
    n = len(colors)
    scale: list[list] = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def mix(a: str, b: str) -> str:
    """The average of two hex colours (the colour of a top-2 pair region)."""
    rgb = [(int(a[i : i + 2], 16) + int(b[i : i + 2], 16)) // 2 for i in (1, 3, 5)]
    return "#" + "".join(f"{c:02x}" for c in rgb)


def rgba(hex_color: str, alpha: float) -> str:
    """A hex colour as a CSS rgba() string with the given opacity."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
