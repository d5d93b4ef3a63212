"""Lesson 4: the same toy balanced by a Switch aux loss (gradient on the router) vs the bias rule."""

import numpy as np
import streamlit as st

from analysis import figures, tables, teaching
from app import learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l4"
ALPHAS = (0.001, 0.01, 0.1, 0.3, 1.0, 3.0)
RATES = (1e-4, 1e-3, 1e-2)
N_STEPS, BATCH, SPREAD = 300, 1024, 0.6
SPECS = {
    "alpha": learn_state.Spec(0.3, choices=ALPHAS),
    "u": learn_state.Spec(1e-3, choices=RATES),
    "seed": learn_state.Spec(0, 0, 9999),
}


@st.cache_data(show_spinner="Training the toy both ways…", max_entries=8)
def train_all(seed: int) -> dict:
    """{("switch", alpha) | ("bias", u): BalanceResult} on one seeded stream (softmax router, top-2)."""
    batches = teaching.token_batches(seed, N_STEPS, BATCH, spread=SPREAD)
    W0 = teaching.default_weights()
    out = {("switch", a): teaching.train_switch(batches, W0, a) for a in ALPHAS}
    out.update({("bias", u): teaching.train_bias(batches, W0, u) for u in RATES})
    return out


params = learn_state.lesson_header("Aux loss vs aux-loss-free", P, SPECS)
slot = st.container()  # the two MaxVio curves go first; drawn once the controls below have run
st.markdown(
    f"Two ways to balance the same skewed stream (softmax router, top-2, {learn_state.N_EXPERTS} experts):\n"
    "- **Switch aux loss**: add **α · E · Σ_i f_i P_i** to the loss (f_i = share of routings to i, P_i = mean "
    "router probability) and let gradient descent change the router weights. A stand-in term "
    "½·0.01·‖W − W₀‖² plays the language-model loss, which wants the router as it was.\n"
    "- **Bias rule**: leave the weights alone and only shift the selection biases (lesson 3)."
)
c1, c2, c3 = st.columns(3)
c1.select_slider("Aux loss α", ALPHAS, key=learn_state.widget_key(P, "alpha"), format_func=lambda a: f"{a:g}")
c2.select_slider("Bias rate u", RATES, key=learn_state.widget_key(P, "u"), format_func=lambda u: f"{u:g}")
c3.number_input("Stream seed", 0, 9999, key=learn_state.widget_key(P, "seed"))
params = learn_state.get_params(P, SPECS)

results = train_all(params["seed"])
sw, bi = results[("switch", params["alpha"])], results[("bias", params["u"])]
cols = st.columns(2)
for col, res, name in (
    (cols[0], sw, f"Switch aux loss, α = {params['alpha']:g}"),
    (cols[1], bi, f"Bias rule, u = {params['u']:g}"),
):
    col.markdown(f"**{name}**")
    m1, m2, m3 = col.columns(3)
    m1.metric("MaxVio (last quarter)", f"{res.maxvio:.3f}")
    m2.metric("top-1 changed", f"{res.top1_changed:.1%}")
    m3.metric("‖W − W₀‖", f"{res.weight_change:.2f}")
    col.caption(f"Mean change of the router's scores: {res.score_change:.3f}")
curves = figures.lessons.maxvio_figure({name: r.maxvio_curve for name, r in (("Switch", sw), ("bias rule", bi))})
learn_state.main_figure(P, slot, {"l4_curves": curves}, config)
learn_state.chart(st, figures.lessons.tradeoff_figure(tables.tradeoff_rows(results)), "l4_tradeoff", config)
left, right = st.columns(2)
after_aux = figures.lessons.router_figure(
    sw.W, np.zeros(learn_state.N_EXPERTS), "softmax", title="Router after the aux loss"
)
learn_state.chart(left, after_aux, "l4_sw", config)
after_bias = figures.lessons.router_figure(bi.W, bi.bias, "softmax", title="Router + biases after the bias rule")
learn_state.chart(right, after_bias, "l4_b", config)
st.caption(
    f"Each run: {N_STEPS} steps of {BATCH:,} tokens. Both must re-route some tokens to balance; only the "
    "aux loss also changes the scores that become every token's gate weights."
)

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
