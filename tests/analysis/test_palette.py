"""The expert palette (analysis.figures.colors): colour science against published values, and the measured
distinguishability and contrast that docs/COLOURS.md states."""

import numpy as np
import pytest

from analysis.figures import colors

# docs/COLOURS.md: the smallest CIEDE2000 distance of any pair, under every vision, at least this
MIN_DISTANCE = {8: 15.0, 16: 11.0, 32: 7.0, 64: 4.5}


@pytest.mark.parametrize(
    ("lab1", "lab2", "expected"),
    [  # Sharma, Wu & Dalal (2005), test data pairs 1, 7, 17 and 25
        ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
        ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
        ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
        ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
    ],
)
def test_delta_e2000_matches_sharma_test_data(lab1, lab2, expected):
    assert colors.delta_e2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)
    assert colors.delta_e2000(np.array(lab2), np.array(lab1)) == pytest.approx(expected, abs=1e-4)


def test_lab_and_luminance_of_known_colours():
    white, black = colors.linear_to_lab(np.ones(3)), colors.linear_to_lab(np.zeros(3))
    assert white == pytest.approx([100.0, 0.0, 0.0], abs=1e-3) and black == pytest.approx([0.0, 0.0, 0.0], abs=1e-9)
    # sRGB red is L* 53.24, a* 80.09, b* 67.20 (D65)
    assert colors.linear_to_lab(np.array([1.0, 0, 0])) == pytest.approx([53.24, 80.09, 67.20], abs=0.02)
    assert colors.contrast("#ffffff", "#000000") == pytest.approx(21.0)
    assert colors.contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)  # the classic just-failing grey


def test_cvd_simulation_keeps_greys_and_merges_red_and_green():
    grey = np.full(3, 0.4)
    for vision in colors.VISIONS:
        assert colors.simulate(grey, vision) == pytest.approx(grey, abs=2e-3)
    red, green = colors.srgb_to_linear(colors.hex_to_rgb(["#d62728", "#2ca02c"]))

    def distance(vision):
        return colors.delta_e2000(*colors.linear_to_lab(colors.simulate(np.stack([red, green]), vision)))

    assert distance("normal") > 50
    assert distance("deuteranopia") < distance("normal") / 2  # the old palette's pair 2/3, merged under deutan
    assert distance("protanopia") < distance("normal") / 2


@pytest.mark.parametrize("n", sorted(MIN_DISTANCE))
def test_measured_minimum_pairwise_distance(n):
    measured = colors.pairwise_min_distance(colors.expert_colors(n))
    assert set(measured) == set(colors.VISIONS)
    for vision, distance in measured.items():
        assert distance >= MIN_DISTANCE[n], (n, vision, distance)


def test_every_palette_colour_has_readable_text_and_stays_visible_in_both_themes():
    for n in range(2, 65):
        for c in colors.expert_colors(n):
            assert colors.contrast(c, colors.text_color(c)) >= 4.5, (n, c)
            assert colors.contrast(c, colors.DARK_BACKGROUND) >= colors.MIN_BACKGROUND_CONTRAST, (n, c)
            assert colors.contrast(c, colors.LIGHT_BACKGROUND) >= colors.MIN_BACKGROUND_CONTRAST, (n, c)


def test_text_color_picks_the_higher_wcag_contrast():
    # #ff0000 has luminance 0.2126: black 5.25:1, white 4.00:1 (the old 0.5 threshold chose white)
    assert colors.text_color("#ff0000") == "#000000"
    assert colors.text_color("#0072b2") == "#ffffff"
    for c in ("#808080", "#7a7a7a", "#00ff00", "#0000ff", "#ff00ff"):
        assert colors.contrast(c, colors.text_color(c)) >= 4.5


def test_palette_is_a_deterministic_prefix_sequence():
    big = colors.expert_colors(128)
    assert len(set(big)) == 128
    for n in (2, 8, 16, 33, 64):
        assert colors.expert_colors(n) == big[:n]
    first = colors.expert_colors(16)
    colors._sequence.cache_clear()
    assert colors.expert_colors(16) == first
    assert first[0] == colors.SEED[0].lower()
    assert colors.expert_colors(0) == []


def test_report_rows_are_the_measured_values():
    (row,) = colors.palette_report([8])
    pal = colors.expert_colors(8)
    assert row["deuteranopia"] == colors.pairwise_min_distance(pal)["deuteranopia"]
    assert row["text_contrast"] == min(colors.contrast(c, colors.text_color(c)) for c in pal) >= 4.5
    assert row["vs_dark"] == min(colors.contrast(c, colors.DARK_BACKGROUND) for c in pal)
