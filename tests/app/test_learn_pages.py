"""The Learn pages: URL parameter parsing (pure) and every lesson page under AppTest."""

import json
import math
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import cache
from app.learn_state import Spec, format_value, parse_value
from app.views.learn import LESSONS

LEARN = Path(__file__).resolve().parents[2] / "app" / "views" / "learn"


def page(name: str, **params: str) -> AppTest:
    at = AppTest.from_file(str(LEARN / name), default_timeout=30)
    for key, value in params.items():
        at.query_params[key] = value
    return at.run()


def warnings(at: AppTest) -> list[str]:
    return [w.value for w in at.warning]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# --- parsing (pure) ----------------------------------------------------------------------------------------


def test_parse_value_good_bad_and_clamped():
    assert parse_value("k", None, Spec(2, 1, 4)) == (2, [])
    assert parse_value("k", "3", Spec(2, 1, 4)) == (3, [])
    value, problems = parse_value("k", "9", Spec(2, 1, 4))
    assert value == 4 and "clamped to 4" in problems[0]
    value, problems = parse_value("k", "2.5", Spec(2, 1, 4))
    assert value == 2 and "not a valid value" in problems[0]
    for bad in ("nan", "inf", "1e999", "x"):
        assert parse_value("c", bad, Spec(1.0, 0.25, 2.0))[0] == 1.0
    assert parse_value("c", "0.1", Spec(1.0, 0.25, 2.0))[0] == 0.25
    assert parse_value("on", "1", Spec(False)) == (True, [])
    assert parse_value("on", "maybe", Spec(False))[0] is False
    assert parse_value("score", "softmax", Spec("sigmoid", choices=("sigmoid", "softmax"))) == ("softmax", [])
    assert parse_value("score", "<script>", Spec("sigmoid", choices=("sigmoid", "softmax")))[0] == "sigmoid"


def test_parse_value_vectors_and_snapping():
    spec = Spec((0.0, 0.0, 0.0), -1.0, 1.0)
    assert parse_value("b", "0.1,-0.2,0", spec) == ((0.1, -0.2, 0.0), [])
    value, problems = parse_value("b", "5,-5,0", spec)
    assert value == (1.0, -1.0, 0.0) and len(problems) == 1  # one message per parameter
    assert parse_value("b", "1,2", spec)[0] == (0.0, 0.0, 0.0)
    assert parse_value("b", "1,x,2", spec)[0] == (0.0, 0.0, 0.0)
    assert parse_value("b", "1," * 500, spec)[1] == ["`b` was too long; using the default."]
    rates = Spec(1e-3, choices=(1e-4, 1e-3, 1e-2))
    assert parse_value("u", "0.003", rates)[0] == 1e-3  # nearest on a log scale (midpoint 0.00316)
    assert parse_value("u", "0.0033", rates)[0] == 1e-2
    assert parse_value("u", "-1", rates)[0] == 1e-4


def test_format_value():
    assert format_value(True) == "1" and format_value(0.001) == "0.001" and format_value(3) == "3"
    assert format_value((2.0, -0.5)) == "2,-0.5"
    assert parse_value("w", format_value((2.0, -0.5)), Spec((0.0, 0.0)))[0] == (2.0, -0.5)


def test_lessons_list_names_existing_pages():
    assert len(LESSONS) == 6
    for file, title, icon in LESSONS:
        assert (LEARN / file).is_file() and title and icon.startswith(":material/")
        lines = len((LEARN / file).read_text().splitlines())
        assert 30 <= lines <= 110, (file, lines)


# --- every page loads ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("file", [lesson[0] for lesson in LESSONS])
def test_each_lesson_loads_with_defaults(file):
    at = page(file)
    assert not at.exception, at.exception
    assert not warnings(at)
    assert len(at.radio) >= 1  # the predict-then-reveal question
    assert any(e.label == "Reveal the answer" for e in at.expander)
    assert at.query_params  # its settings were written into the URL


@pytest.mark.parametrize(
    "file, param, bad",
    [
        ("lesson_1_partition.py", "w", "1,2,3"),
        ("lesson_2_gates.py", "k", "many"),
        ("lesson_3_bias.py", "step", "-5"),
        ("lesson_4_aux_loss.py", "alpha", "nan"),
        ("lesson_5_capacity.py", "tokens", "1e9"),
        ("lesson_6_real.py", "layer", "<b>x</b>"),
    ],
)
def test_bad_query_parameter_gives_a_message_not_a_crash(file, param, bad):
    at = page(file, **{param: bad})
    assert not at.exception, at.exception
    messages = warnings(at)
    assert len(messages) == 1 and f"`{param}`" in messages[0]
    assert bad not in messages[0]  # the user's string is never echoed
    assert at.query_params[param] != bad  # the URL now holds a valid value


def presenting_css(at: AppTest) -> bool:
    return any("<style>" in m.value and "stSidebar" in m.value for m in at.markdown)


def test_presentation_mode_from_the_url_injects_css_and_exits():
    at = page("lesson_1_partition.py", present="1")
    assert presenting_css(at)
    assert at.button(key="present_next").label.startswith("Next")
    at.button(key="present_exit").click().run()
    assert "present" not in at.query_params
    assert not presenting_css(at)
    at.button(key="present_on").click().run()
    assert presenting_css(at) and at.query_params["present"] == "1"


def presented(file: str) -> AppTest:
    at = AppTest.from_file(str(LEARN.parents[1] / "main.py"), default_timeout=30)
    at.query_params["present"] = "1"
    return at.switch_page(f"views/learn/{file}").run()


def test_presentation_next_and_previous_go_to_the_neighbouring_lessons():
    # AppTest reruns the page it was given, so each test takes one step (the browser test walks them all)
    at = presented("lesson_3_bias.py")
    at.button(key="present_next").click().run()
    assert at.title[0].value == "Aux loss vs aux-loss-free" and presenting_css(at)
    at = presented("lesson_3_bias.py")
    at.button(key="present_prev").click().run()
    assert at.title[0].value == "Top-k and gates" and presenting_css(at)


def test_presentation_leads_back_to_exploring_at_both_ends():
    for file, button in (("lesson_1_partition.py", "present_prev"), ("lesson_6_real.py", "present_next")):
        at = presented(file)
        at.button(key=button).click().run()
        assert not at.exception and not presenting_css(at)
        assert "present" not in at.query_params
        assert all(t.value not in [title.split(" · ")[1] for _, title, _ in LESSONS] for t in at.title)


def test_teacher_notes_toggle_on_and_off_and_follow_the_teacher():
    at = page("lesson_3_bias.py")
    assert not any(m.value.startswith("**Ask:**") for m in at.markdown)
    at.toggle(key="learn_notes_toggle").set_value(True).run()
    assert any(m.value.startswith("**Ask:**") for m in at.markdown)
    assert any("about 12 minutes" in m.value for m in at.markdown)
    at.toggle(key="learn_notes_toggle").set_value(False).run()
    assert not any(m.value.startswith("**Ask:**") for m in at.markdown)


def in_order(node, out: list) -> list:
    """(element type, key) of every element under `node`, in page order."""
    out.append((getattr(node, "type", None), getattr(node, "key", None) if hasattr(node, "key") else None))
    for child in getattr(node, "children", {}).values():
        in_order(child, out)
    return out


@pytest.mark.parametrize("file", [lesson[0] for lesson in LESSONS[:5]])
def test_the_main_figure_comes_before_the_controls(file):
    kinds = [kind for kind, _ in in_order(page(file).main, [])]
    first_chart = kinds.index("plotly_chart")
    assert not {"slider", "radio", "number_input", "select_slider"} & set(kinds[:first_chart])


def test_lesson_2_keeps_its_router_sliders_folded_below_the_figures():
    at = page("lesson_2_gates.py")
    assert [e.proto.expanded for e in at.expander if e.label.startswith("Router")] == [False]
    keys = [key for kind, key in in_order(at.main, []) if kind == "plotly_chart"]
    assert keys[:4] == ["l2_step0", "l2_step1", "l2_step2", "l2_step3"]  # four figures: one per row on a phone


# --- lesson widgets --------------------------------------------------------------------------------------------


def test_lesson_1_opens_the_linked_router_and_writes_changes_back():
    at = page("lesson_1_partition.py", w="1,1,0,2,-2,0,0,-2", b="0.1,0,0,0", view="top2", score="softmax")
    assert [s.value for s in at.slider[:3]] == [1.0, 1.0, 0.1]  # w0x, w0y, b0 of expert 0
    assert at.radio[0].value == "top2" and at.radio[1].value == "softmax"
    chart = at.get("plotly_chart")[0].proto.spec  # the regions figure, as plotly JSON
    assert '"heatmap"' in chart and "E0+E1" in chart  # top-2 pair regions
    at.slider[0].set_value(3.0).run()
    assert at.query_params["w"] == "3,1,0,2,-2,0,0,-2"


def test_lesson_2_top_k_changes_the_chosen_experts():
    at = page("lesson_2_gates.py", x="1,0", k="1")
    table = at.dataframe[0].value
    assert table["chosen (rank)"].notna().sum() == 1
    assert float(table["gate weight"].sum()) == pytest.approx(1.0)
    at.slider(key="l2_k").set_value(3).run()
    assert at.dataframe[0].value["chosen (rank)"].notna().sum() == 3
    assert at.query_params["k"] == "3"


def test_lesson_3_step_button_moves_the_biases():
    at = page("lesson_3_bias.py", step="150", u="0.001", seed="0")
    before = metrics(at)
    assert before["bias b0"] == "-0.1500"  # 150 steps of -0.001 on the overloaded expert 0
    buttons = {b.label: b for b in at.button}
    buttons["Step ▶"].click().run()
    after = metrics(at)
    assert after["bias b0"] != before["bias b0"] and at.query_params["step"] == "151"
    next(b for b in at.button if b.label == "+100 ▶▶▶").click().run()
    assert at.query_params["step"] == "251"
    assert float(metrics(at)["MaxVio"]) < 0.2  # u = 1e-3 has balanced by step ~224
    next(b for b in at.button if b.label == "Reset ⟲").click().run()
    assert metrics(at)["bias b0"] == "+0.0000" and at.query_params["step"] == "0"


def test_lesson_3_play_runs_to_the_last_step_and_stops():
    at = page("lesson_3_bias.py", step="592")
    at.toggle(key="l3_play").set_value(True).run()  # 597, then 600 and Play switches itself off
    assert at.query_params["step"] == "600"
    assert at.toggle(key="l3_play").value is False
    assert not at.exception


def test_lesson_3_rate_from_url_snaps_to_an_offered_rate():
    at = page("lesson_3_bias.py", u="0.02", step="600")
    assert "nearest, 0.01" in warnings(at)[0]
    assert at.query_params["u"] == "0.01"


def test_lesson_4_alpha_changes_the_switch_result():
    def bend(at):  # (Switch, bias rule) columns: the same labels twice
        return [float(m.value) for m in at.metric if m.label == "‖W − W₀‖"]

    at = page("lesson_4_aux_loss.py", alpha="0.001")
    weak = bend(at)
    at.select_slider(key="l4_alpha").set_value(1.0).run()
    strong = bend(at)
    assert at.query_params["alpha"] == "1"
    assert strong[0] > 2.0 > weak[0]  # measured 2.77 vs 0.01
    assert weak[1] == strong[1] == 0.0  # the bias rule never touches the weights


def test_lesson_5_capacity_from_url():
    at = page("lesson_5_capacity.py", cap="0.5", tokens="16", k="1")
    assert metrics(at)["Capacity per expert"] == str(math.ceil(0.5 * 16 * 1 / 4))
    at.slider(key="l5_cap").set_value(2.0).run()
    assert metrics(at)["Capacity per expert"] == "8"
    assert at.query_params["cap"] == "2"


def test_lesson_6_without_a_run_shows_links_and_a_message(monkeypatch):
    monkeypatch.setattr(cache, "discover_sources", lambda: {})
    at = page("lesson_6_real.py", layer="1")
    assert not at.exception
    assert "No trained run" in at.info[0].value
    links = [m.value for m in at.markdown if m.value.startswith("[")]
    assert links[0] == "[Token routing (layer 1)](token_routing?layer=1)"
    assert any("heatmaps?layer=1" in link for link in links) and any("training?layer=1" in link for link in links)


def test_lesson_6_with_a_run_shows_its_numbers(monkeypatch, tmp_path):
    (tmp_path / "history").mkdir()
    row = {"step": 40, "load": [[10, 10, 10, 10], [30, 10, 0, 0]], "bias": [[0, 0, 0, 0], [-0.01, 0, 0.01, 0.01]]}
    (tmp_path / "history" / "train.jsonl").write_text(json.dumps(row) + "\n")
    monkeypatch.setattr(cache, "discover_sources", lambda: {"my run": str(tmp_path)})
    at = page("lesson_6_real.py", layer="5")  # clamped to this model's last layer
    assert not at.exception
    assert metrics(at)["MaxVio_batch, layer 1"] == "2.000"  # (30 - 10) / 10
    assert "Run my run, training step 40" in at.text[0].value
    assert any("run=my+run" in m.value for m in at.markdown)


def test_settings_survive_a_visit_to_another_lesson():
    def go(at, file):  # like the browser's navigation, which clears the URL's query parameters
        at.query_params.clear()
        return at.switch_page(f"views/learn/{file}").run()

    at = AppTest.from_file(str(LEARN.parents[1] / "main.py"), default_timeout=30).run()
    go(at, "lesson_1_partition.py").slider(key="l1_w_0").set_value(-1.5).run()
    assert go(at, "lesson_2_gates.py").slider(key="l2_w_0").value == 2.0  # each lesson has its own router
    go(at, "lesson_1_partition.py")
    assert not at.exception
    assert at.slider(key="l1_w_0").value == -1.5
    assert at.query_params["w"] == "-1.5,0,0,2,-2,0,0,-2"


# --- the model's numbers come from its config (lesson 6) ---------------------------------------------------------


def test_lesson_6_quotes_the_selected_models_width_from_its_config(monkeypatch):
    from moe_core.paths import default_run_path

    run = default_run_path()
    model = json.loads((run / "run.json").read_text())["model"]
    monkeypatch.setattr(cache, "discover_sources", lambda: {"default (shipped)": str(run)})
    at = page("lesson_6_real.py")
    prose = " ".join(m.value for m in at.markdown)
    assert f"{model['n_embd']}-dimensional" in prose and "256-dimensional" not in prose
    assert f"{model['moe']['top_k']} of {model['moe']['n_experts']} experts" in prose


def test_model_facts_from_run_json_and_hf_config(tmp_path):
    from analysis import teaching

    (tmp_path / "config.json").write_text(
        json.dumps({"hidden_size": 2048, "num_experts": 60, "num_experts_per_tok": 4})
    )
    facts = teaching.model_facts(tmp_path)
    assert (facts.width, facts.n_experts, facts.top_k, facts.n_moe_layers) == (2048, 60, 4, None)
    assert "2048-dimensional" in teaching.real_model_sentence(facts)
    (tmp_path / "config.json").write_text("{not json")
    assert teaching.model_facts(tmp_path) is None
    assert not re.search(r"\d+-dimensional", teaching.real_model_sentence(None))  # no number is made up


def test_no_learn_page_types_in_the_model_width():
    sources = [*LEARN.glob("*.py"), LEARN.parents[2] / "analysis" / "teaching.py"]
    for path in sources:
        assert not re.search(r"\b(128|256|512)-dimensional", path.read_text()), path


# --- class and projector figures (pure) ----------------------------------------------------------------------


def test_tally_figure_counts_and_marks_the_answer():
    from analysis import figures

    fig = figures.lessons.tally_figure(["a", "b", "c"], [3, 0, 1])
    assert list(fig.data[0].x) == [3, 0, 1] and fig.layout.title.text == "4 answers"
    revealed = figures.lessons.tally_figure(["a", "b", "c"], [3, 0, 1], answer=2)
    assert (
        revealed.data[0].y[2].startswith("✓") and revealed.data[0].marker.color[2] != revealed.data[0].marker.color[0]
    )


def test_for_projector_scales_text_and_lines_without_touching_the_original():
    import numpy as np

    from analysis import figures, teaching

    fig = figures.lessons.maxvio_figure({"u = 0.001": np.array([1.0, 0.5])})
    big = figures.lessons.for_projector(fig, height=400)
    assert big.layout.font.size == figures.lessons.PROJECTOR["font"] and big.layout.height == 400
    assert big.data[0].line.width > 2 and fig.data[0].line.width is None and fig.layout.height == 360
    assert big.layout.xaxis.tickfont.size == figures.lessons.PROJECTOR["tick"]
    assert big.layout.shapes[0].line.width > 2  # the dashed target line
    regions = teaching.decision_regions(teaching.default_weights(), np.zeros(4), "sigmoid", 1.0, 11)
    arrows = figures.lessons.for_projector(figures.lessons.regions_figure(regions, "top1", teaching.default_weights()))
    assert all(a.arrowwidth == 3 * figures.lessons.PROJECTOR["line"] for a in arrows.layout.annotations)


def test_gate_step_panels_are_four_figures_with_the_chosen_outlined():
    import numpy as np

    from analysis import figures, teaching

    steps = teaching.explain_token(np.array([1.0, 0.0]), teaching.default_weights(), np.zeros(4), 2, "sigmoid")
    panels = figures.lessons.gate_step_panels(steps)
    assert len(panels) == 4 and panels[3].layout.title.text == "4. gate weights"
    widths = panels[2].data[0].marker.line.width
    assert sorted(widths) == [0, 0, 3, 3] and sum(panels[3].data[0].y) == pytest.approx(1.0)


# --- the live class's pages ------------------------------------------------------------------------------------


@pytest.fixture
def class_db(tmp_path, monkeypatch):
    monkeypatch.setenv("MOE_EXPLORER_CLASS_DB", str(tmp_path / "classes.sqlite3"))
    return tmp_path / "classes.sqlite3"


def start_class_page() -> tuple[AppTest, str]:
    at = page("class_teacher.py")
    at.button(key="class_start").click().run()
    code = next(m.value for m in at.markdown if m.value.startswith("### Code:")).split("`")[1]
    return at, code


def test_a_student_joins_from_the_link_answers_and_the_teacher_counts_it(class_db):
    from app.classroom.store import ClassStore, StoreConfig

    teacher, code = start_class_page()
    assert [kind for kind, _ in in_order(teacher.main, [])].count("image") == 1  # the QR code
    student = page("class_join.py", **{"class": code})
    assert student.text_input(key="class_code_input").value == code
    student.text_input(key="class_name_input").set_value("<img src=x onerror=alert(1)>")
    student.button(key="class_join").click().run()
    student.radio(key="class_pick_l1").set_value(2).run()
    student.button(key="class_send_l1").click().run()
    assert student.success[0].value.startswith("Sent: The regions rotate")
    assert ClassStore(StoreConfig(class_db)).tally(code) == [0, 0, 1]
    teacher.run()
    assert "1 joined · 1 answered" in [c.value for c in teacher.caption]
    names = teacher.dataframe[0].value  # a name is a table cell, never markup
    assert names["name"].tolist() == ["<img src=x onerror=alert(1)>"]
    assert not any("onerror" in m.value for m in teacher.markdown)
    teacher.toggle(key="class_reveal_l1").set_value(True).run()
    student.run()
    assert any(i.value.startswith("Answer: **Nothing") for i in student.info)


def test_a_reloaded_teacher_page_shows_counts_but_not_names_or_controls(class_db):
    teacher, code = start_class_page()
    assert teacher.query_params["class"] == code
    student = page("class_join.py", **{"class": code})
    student.text_input(key="class_name_input").set_value("Ada")
    student.button(key="class_join").click().run()
    student.radio(key="class_pick_l1").set_value(0).run()
    student.button(key="class_send_l1").click().run()
    fresh = page("class_teacher.py", **{"class": code})  # a new session: anyone with the link
    assert "1 joined · 1 answered" in [c.value for c in fresh.caption]
    assert "did not start the class" in fresh.info[0].value
    assert not fresh.toggle and not fresh.dataframe and not fresh.selectbox
    teacher.button(key="class_end").click().run()
    assert "class" not in teacher.query_params and teacher.button(key="class_start")


def test_a_wrong_or_strange_class_code_gets_one_clear_message(class_db):
    student = page("class_join.py", **{"class": "<b>nope</b>"})
    assert student.text_input(key="class_code_input").value == "BNOPEB"  # only letters and digits are kept
    student.button(key="class_join").click().run()
    assert student.error[0].value == "There is no class with the code BNOPEB. Check the code on the teacher's screen."


def test_a_lesson_opened_by_the_teacher_opens_its_question_in_the_class(class_db):
    from app.classroom.store import ClassStore, StoreConfig

    at = AppTest.from_file(str(LEARN.parents[1] / "main.py"), default_timeout=30)
    at.switch_page("views/learn/class_teacher.py").run()
    at.button(key="class_start").click().run()
    code = next(m.value for m in at.markdown if m.value.startswith("### Code:")).split("`")[1]
    at.switch_page("views/learn/lesson_3_bias.py").run()
    assert ClassStore(StoreConfig(class_db)).get_class(code).question == "l3"
    assert any(c.value.startswith(f"Live class {code}: 0 answers") for c in at.caption)
