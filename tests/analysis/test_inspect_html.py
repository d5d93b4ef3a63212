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


def test_tooltip_css_shows_on_hover_and_focus_not_on_the_selection():
    """The selected token keeps its ring but no tooltip (its details stand in the page's panel): a tooltip that
    stayed open covered the next line of text."""
    css = figures.routing.TOKEN_CSS
    for trigger in ("[data-tip]:hover::after", "[data-tip]:focus-visible::after"):
        assert trigger in css
    assert ".moe-sel:hover::after,.moe-tokens .moe-sel:focus-visible::after{content:none}" in css  # after the rule
    assert css.index("{content:none}") > css.index("content:attr(data-tip)") and ".moe-changed{" in css
    assert "content:attr(data-tip)" in css
    js = figures.routing.CLICK_JS
    assert 'setTriggerValue("token"' in js and 'setTriggerValue("expert"' in js and "removeEventListener" in js
    assert '"cell", { token: Number(p.x), layer: Number(p.y) }' in js and figures.routing.GRID_META in js


def test_changed_tokens_are_marked(tiny_routing):
    text, tokens, routing = tiny_routing
    top1 = tables.top1_table(routing, 0)
    html = figures.routing.colored_text_html(text, tokens, top1, 3, selected=2, marked=[0, 2])
    assert re.findall(r'data-token="(\d+)"[^>]*class="([^"]*)"', html) == [
        ("0", "moe-changed"),
        ("2", "moe-sel moe-changed"),
    ]


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
    text = figures.routing.token_layer_grid(tokens, routing, 2, 3).data[0].text
    shown = "".join(text[0])
    assert "&quot;" not in shown and "&#x27;" not in shown
    assert text[0][0] == "&#34;" and text[0][1] == "&#39;"
