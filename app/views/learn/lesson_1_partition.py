"""Lesson 1: a linear router partitions the input space into expert regions."""

import streamlit as st

from analysis import figures, teaching
from app import learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l1"
SPECS = {
    **learn_state.ROUTER_SPECS,
    "view": learn_state.Spec("top1", choices=("top1", "top2")),
    "seed": learn_state.Spec(0, 0, 9999),
}

params = learn_state.lesson_header("A router partitions input space", P, SPECS)
slot = st.container()  # the main figure goes first; it is drawn once the controls below have run
st.markdown(
    "Each token reaches the MoE layer as a vector **x**. The router gives every expert *e* a logit "
    "**w_e · x**, turns the logits into scores (sigmoid or softmax), adds the expert's bias **b_e** and keeps "
    "the best *k*. Here **x** has just 2 dimensions and there are 4 experts, so we can colour the whole plane "
    "by the expert each point would go to. The arrows are the weight vectors **w_e**."
)
c1, c2, c3 = st.columns(3)
c1.radio(
    "Regions",
    ["top1", "top2"],
    key=learn_state.widget_key(P, "view"),
    horizontal=True,
    format_func=lambda v: "top-1 expert" if v == "top1" else "top-2 pairs",
)
c2.radio("Scores", ["sigmoid", "softmax"], key=learn_state.widget_key(P, "score"), horizontal=True)
c3.number_input("Sample seed", 0, 9999, key=learn_state.widget_key(P, "seed"))
learn_state.router_controls(P)
params = learn_state.get_params(P, SPECS)

W, b = learn_state.weights_array(params)
regions = teaching.decision_regions(W, b, params["score"], lim=3.0, n=121)
points = teaching.token_batches(params["seed"], 1, 150, centre=(0.0, 0.0), spread=1.2)[0]
topk, _, _ = teaching.route(points, W, b, 2, params["score"])
fig = figures.lessons.regions_figure(regions, params["view"], W, points, topk[:, 0])
learn_state.main_figure(P, slot, {"l1_regions": fig}, config)
load = teaching.expert_load(topk[:, :1], learn_state.N_EXPERTS)
st.caption(
    "Sample tokens per expert (top-1): "
    + ", ".join(f"E{e}: {int(n)}" for e, n in enumerate(load))
    + f" · MaxVio {teaching.maxvio(load):.2f}"
)
st.markdown(
    "With zero biases the borders are straight lines through the origin: a linear router without an "
    "intercept compares directions. The bias only shifts which expert *wins*; it bends the borders."
)

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
