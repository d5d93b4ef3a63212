"""Lesson 2: one token's routing step by step, from logits to the weighted sum of expert outputs."""

import numpy as np
import streamlit as st

from analysis import figures, tables, teaching
from app import learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l2"
SPECS = {
    **learn_state.ROUTER_SPECS,
    "x": learn_state.Spec((0.8, 0.6), -3.0, 3.0),  # the token's 2-D input
    "k": learn_state.Spec(2, 1, learn_state.N_EXPERTS),  # top-k
    "shared": learn_state.Spec(True),  # with a shared expert
}

params = learn_state.lesson_header("Top-k and gates", P, SPECS)
slot = st.container()  # the four steps go first; drawn once the controls below have run
st.markdown(
    "Pick a token and follow it through the router: **1.** logits **w_e · x** → **2.** scores (sigmoid or "
    "softmax) → **3.** add the bias and keep the top-*k* → **4.** gate weights, taken from the scores "
    "*without* the bias (with sigmoid they are divided by their sum) → the output is the gate-weighted sum "
    "of the chosen experts' outputs, plus the shared expert that every token goes through."
)
c1, c2, c3, c4 = st.columns(4)
c1.slider("token x₁", -3.0, 3.0, step=0.05, key=learn_state.widget_key(P, "x", 0))
c2.slider("token x₂", -3.0, 3.0, step=0.05, key=learn_state.widget_key(P, "x", 1))
c3.slider("top-k", 1, learn_state.N_EXPERTS, key=learn_state.widget_key(P, "k"))
c4.radio("Scores", ["sigmoid", "softmax"], key=learn_state.widget_key(P, "score"), horizontal=True)
c4.toggle("Shared expert", key=learn_state.widget_key(P, "shared"))
learn_state.router_controls(P, label="Router weights and biases (as in lesson 1)", expanded=False)
params = learn_state.get_params(P, SPECS)

W, b = learn_state.weights_array(params)
x = np.array(params["x"])
steps = teaching.explain_token(
    x, W, b, params["k"], params["score"], shared_22=teaching.DEFAULT_SHARED if params["shared"] else None
)
panels = figures.lessons.gate_step_panels(steps)  # four figures in columns: one per row on a phone
learn_state.main_figure(P, slot, {f"l2_step{i}": fig for i, fig in enumerate(panels)}, config)
st.dataframe(tables.gate_steps_table(steps, b), hide_index=True)
chosen = ", ".join(f"E{e} × {g:.3f}" for e, g in zip(steps.chosen, steps.gates))
st.markdown(
    f"**Chosen:** {chosen} · gate sum {steps.gates.sum():.3f} · output ({steps.output[0]:.3f}, {steps.output[1]:.3f})"
)
if steps.bias_flip:
    st.warning("The bias changed the choice: without it this token would go to a different set of experts.")
left, right = st.columns(2)
regions = teaching.decision_regions(W, b, params["score"], lim=3.0, n=81)
where = figures.lessons.regions_figure(regions, "top1", W, x[None], steps.chosen[:1], title="Where the token sits")
learn_state.chart(left, where, "l2_regions", config)
learn_state.chart(right, figures.lessons.output_figure(steps), "l2_output", config)
st.caption("Toy experts rotate their input (E0 by 45°, E1 by 90°, …); the shared expert halves it.")

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
