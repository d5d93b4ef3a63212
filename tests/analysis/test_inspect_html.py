"""Click-to-inspect HTML of Token routing (analysis.figures.routing): tokens carry their index, the selected one
is marked, tooltips are CSS (data-tip, not the browser's title), legend chips link to the expert profile, and
quotes reach plotly hovers as references plotly decodes."""

import re

from analysis import figures, tables


def test_tokens_carry_index_tip_and_selection(tiny_routing):
    text, tokens, routing = tiny_routing
    top1 = tables.top1_table(routing, 0)
    html = figures.routing.colored_text_html(text, tokens, top1, 3, tooltips={1: 'E0 "0.50"'}, selected=1)
    assert re.findall(r'data-token="(\d+)"', html) == ["0", "1", "2"]
    assert "title=" not in html and html.count("data-tip=") == 3 and html.count('tabindex="0"') == 3
    assert 'data-tip="E0 &#34;0.50&#34;"' in html  # escaped once, inside the attribute
    marked = re.findall(r'<span data-token="(\d+)"[^>]*class="moe-sel"', html)
    assert marked == ["1"] and html.count("moe-sel") == 1
    assert "moe-sel" not in figures.routing.colored_text_html(text, tokens, top1, 3)


def test_tooltip_css_shows_on_hover_focus_and_selection():
    css = figures.routing.TOKEN_CSS
    for trigger in ("[data-tip]:hover::after", "[data-tip]:focus-visible::after", ".moe-sel::after"):
        assert trigger in css
    assert "content:attr(data-tip)" in css
    js = figures.routing.CLICK_JS
    assert 'setTriggerValue("token"' in js and 'setTriggerValue("expert"' in js and "removeEventListener" in js


def test_legend_chips_link_to_the_expert_profile():
    plain = figures.routing.legend_html(3, counts=[5, 0, 2])
    assert "<a " not in plain
    html = figures.routing.legend_html(3, counts=[5, 0, 2], layer=2)
    assert re.findall(r'href="([^"]+)"', html) == [f"expert?layer=2&amp;expert={e}" for e in range(3)]
    assert html.count('target="_self"') == 3 and 'data-expert-link="1"' in html and "E2 (2)</a>" in html


def test_quotes_in_grid_hovers_are_escaped_once(tiny_routing):
    """plotly decodes &#34; but shows a named &quot; as it is: the token " must not reach the hover as &quot;."""
    _, tokens, routing = tiny_routing
    tokens = tokens.assign(token_text=['"', "'", "a"])
    hover = figures.routing.token_layer_grid(tokens, routing, 2, 3).data[1].hovertext
    assert "&quot;" not in "".join(hover) and "&#x27;" not in "".join(hover)
    assert "<b>&#34;</b>" in hover[0] and "<b>&#39;</b>" in hover[1]
