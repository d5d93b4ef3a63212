"""Expert colours and HTML escaping shared by every figure, so an expert has the same colour everywhere.

The palette (docs/COLOURS.md): Okabe–Ito blue, then a greedy max-min choice over a grid of sRGB colours,
maximising the smallest CIEDE2000 distance to the colours already chosen, where the distance of a pair is
its minimum over normal vision and simulated deuteranopia, protanopia and tritanopia (Machado, Oliveira &
Fernandes 2009, severity 1.0, on linear sRGB). Candidates have a CIELAB chroma of at least `MIN_CHROMA`
and a WCAG contrast of at least `MIN_BACKGROUND_CONTRAST` against both the light (#ffffff) and the dark
(#0e1117) page background, so no expert vanishes in either theme. The sequence is deterministic and a
prefix of itself: expert e has the same colour for every E > e. `colors.print_report()` prints the
measured distances and contrasts.

Every user string (token text, document labels, run names) that reaches hover text, tick labels or HTML
goes through `esc`, because plotly renders a subset of HTML in labels and coloured text is raw HTML.
"""

from __future__ import annotations

import functools
import html
from collections.abc import Sequence

import numpy as np

LIGHT_BACKGROUND = "#ffffff"
DARK_BACKGROUND = "#0e1117"  # Streamlit's dark theme
MIN_BACKGROUND_CONTRAST = 1.5  # every palette colour against both backgrounds (WCAG ratio)
VISIONS = ("normal", "deuteranopia", "protanopia", "tritanopia")

MIN_CHROMA = 25.0  # CIELAB chroma floor of the candidates: greys read as "no expert" / "other"
# The sequence starts from Okabe & Ito's blue ("Color Universal Design", 2008). Seeding it with all six usable
# Okabe–Ito colours (black vanishes on the dark background, yellow on the light one) measured worse: minimum
# distance 10.9 instead of 15.6 at E = 8 (docs/COLOURS.md).
SEED = ["#0072B2"]

# Machado et al. (2009), severity 1.0, applied to linear sRGB.
_MACHADO = {
    "normal": np.eye(3),
    "deuteranopia": np.array([[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413],
                              [-0.011820, 0.042940, 0.968881]]),
    "protanopia": np.array([[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216],
                            [-0.003882, -0.048116, 1.051998]]),
    "tritanopia": np.array([[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602],
                            [0.004733, 0.691367, 0.303900]]),
}  # fmt: skip
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])  # fmt: skip
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
_GRID_LEVELS = np.arange(0, 256, 17)  # 16 levels per channel: 4,096 candidate colours before filtering


def esc(value: object) -> str:
    """HTML-escape any value for hover text, tick labels or raw HTML (quotes included).

    Quotes become numeric references (&#34; &#39;): plotly decodes those in hover and label text but shows
    a named `&quot;` as it is, while HTML attributes and text read both the same.
    """
    return html.escape(str(value), quote=False).replace('"', "&#34;").replace("'", "&#39;")


# ---------------------------------------------------------------- colour science (numpy, vectorised)


def hex_to_rgb(colors: Sequence[str] | str) -> np.ndarray:
    """Hex colours (#rrggbb) -> sRGB in 0..1, shape (..., 3)."""
    one = isinstance(colors, str)
    arr = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in ([colors] if one else colors)], float) / 255
    return arr[0] if one else arr


def to_hex(rgb: np.ndarray) -> str:
    """sRGB in 0..1 -> #rrggbb."""
    return "#" + "".join(f"{int(round(float(c) * 255)):02x}" for c in np.clip(rgb, 0, 1))


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def simulate(rgb: np.ndarray, vision: str) -> np.ndarray:
    """Linear sRGB as seen with `vision` (one of VISIONS), clipped to the gamut; input and output linear."""
    return np.clip(np.asarray(rgb, dtype=np.float64) @ _MACHADO[vision].T, 0.0, 1.0)


def linear_to_lab(lin: np.ndarray) -> np.ndarray:
    """Linear sRGB -> CIELAB (D65)."""
    xyz = np.asarray(lin, dtype=np.float64) @ _RGB_TO_XYZ.T / _WHITE_D65
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], axis=-1)


def delta_e2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005), broadcasting over leading axes."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, dtype=np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, dtype=np.float64), -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma0 = c1p * c2p == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma0, 0.0, dh)
    d_l, d_c = L2 - L1, c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar, c_bar_p = (L1 + L2) / 2, (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_bar = np.where(chroma0, h_sum, h_bar)
    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))  # fmt: skip
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(c_bar_p**7 / (c_bar_p**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c, s_h = 1 + 0.045 * c_bar_p, 1 + 0.015 * c_bar_p * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def relative_luminance(color: str) -> float:
    """WCAG 2 relative luminance of a hex colour."""
    return float(srgb_to_linear(hex_to_rgb(color)) @ np.array([0.2126, 0.7152, 0.0722]))


def contrast(a: str, b: str) -> float:
    """WCAG 2 contrast ratio (1..21) of two hex colours."""
    la, lb = sorted((relative_luminance(a), relative_luminance(b)))
    return (lb + 0.05) / (la + 0.05)


@functools.lru_cache(maxsize=1024)  # called once per coloured token: a few thousand times per text
def text_color(background: str) -> str:
    """Black or white, whichever has the higher WCAG contrast on a hex background (always >= 4.58:1)."""
    return "#000000" if contrast(background, "#000000") >= contrast(background, "#ffffff") else "#ffffff"


# ---------------------------------------------------------------- the palette


def _labs(rgb: np.ndarray) -> np.ndarray:
    """(n, 3) sRGB -> (len(VISIONS), n, 3) CIELAB as seen under each vision."""
    lin = srgb_to_linear(rgb)
    return np.stack([linear_to_lab(simulate(lin, v)) for v in VISIONS])


def pairwise_min_distance(colors: Sequence[str]) -> dict[str, float]:
    """{vision: smallest CIEDE2000 distance over all pairs of `colors`} (inf for fewer than two)."""
    labs = _labs(hex_to_rgb(colors))
    out = {}
    for v, lab in zip(VISIONS, labs):
        d = delta_e2000(lab[:, None, :], lab[None, :, :])
        d[np.diag_indices_from(d)] = np.inf
        out[v] = float(d.min()) if len(colors) > 1 else float("inf")
    return out


def _candidates() -> np.ndarray:
    grid = np.stack(np.meshgrid(_GRID_LEVELS, _GRID_LEVELS, _GRID_LEVELS, indexing="ij"), -1).reshape(-1, 3) / 255
    lum = srgb_to_linear(grid) @ np.array([0.2126, 0.7152, 0.0722])
    dark, light = relative_luminance(DARK_BACKGROUND), relative_luminance(LIGHT_BACKGROUND)
    vs_dark, vs_light = (lum + 0.05) / (dark + 0.05), (light + 0.05) / (lum + 0.05)
    ok = (vs_dark >= MIN_BACKGROUND_CONTRAST) & (vs_light >= MIN_BACKGROUND_CONTRAST)
    chroma = np.hypot(*linear_to_lab(srgb_to_linear(grid))[:, 1:].T)
    return grid[ok & (chroma >= MIN_CHROMA)]


@functools.lru_cache(maxsize=8)
def _sequence(n: int) -> tuple[str, ...]:
    """The first n colours of the palette sequence (greedy max-min after the seed)."""
    seed = hex_to_rgb(SEED)
    pool = _candidates()
    labs = _labs(pool)  # (V, N, 3)
    nearest = np.full(len(pool), np.inf)  # each candidate's distance to the closest chosen colour, worst vision
    chosen: list[str] = []
    for i in range(min(n, len(pool) + len(seed))):
        if i < len(seed):
            rgb, lab = seed[i], _labs(seed[i : i + 1])[:, 0]
        else:
            k = int(np.argmax(nearest))  # ties: the first in grid order, so the sequence is deterministic
            rgb, lab = pool[k], labs[:, k]
        chosen.append(to_hex(rgb))
        nearest = np.minimum(nearest, delta_e2000(labs, lab[:, None, :]).min(axis=0))
    return tuple(chosen)


def expert_colors(n_experts: int) -> list[str]:
    """One hex colour per expert; expert e has the same colour for every E > e (the palette is a sequence)."""
    if n_experts <= 0:
        return []
    seq = _sequence(max(64, 1 << (n_experts - 1).bit_length()))  # a few cached lengths, not one per E
    return [seq[e % len(seq)] for e in range(n_experts)]


def palette_report(sizes: Sequence[int] = (8, 16, 32, 64)) -> list[dict]:
    """For each E: the minimum pairwise CIEDE2000 per vision, the minimum text contrast (black or white
    text on each colour) and the minimum contrast against the light and dark page backgrounds."""
    rows = []
    for n in sizes:
        pal = expert_colors(n)
        row = {"E": n, **pairwise_min_distance(pal)}
        row["text_contrast"] = min(contrast(c, text_color(c)) for c in pal)
        row["vs_light"] = min(contrast(c, LIGHT_BACKGROUND) for c in pal)
        row["vs_dark"] = min(contrast(c, DARK_BACKGROUND) for c in pal)
        rows.append(row)
    return rows


# ---------------------------------------------------------------- helpers for figures


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


def print_report() -> None:
    """The table of docs/COLOURS.md: `python -c "from analysis.figures import colors; colors.print_report()"`."""
    head = " | ".join(f"min ΔE2000 {v}" for v in VISIONS)
    print(f"| E | {head} | min text contrast | min vs {LIGHT_BACKGROUND} | min vs {DARK_BACKGROUND} |")
    print("|---" * (len(VISIONS) + 4) + "|")
    for r in palette_report():
        cells = " | ".join(f"{r[v]:.1f}" for v in VISIONS)
        print(f"| {r['E']} | {cells} | {r['text_contrast']:.2f} | {r['vs_light']:.2f} | {r['vs_dark']:.2f} |")
