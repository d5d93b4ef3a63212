"""Lesson 5: with a capacity per expert, the late tokens of an overloaded expert are dropped."""

import numpy as np
import pandas as pd
import streamlit as st

from analysis import figures, teaching
from app import learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l5"
SPECS = {
    **learn_state.ROUTER_SPECS,
    "cap": learn_state.Spec(1.0, 0.25, 2.0),  # capacity factor C
    "tokens": learn_state.Spec(32, 8, 64),  # tokens in the batch
    "k": learn_state.Spec(2, 1, 2),  # top-k
    "seed": learn_state.Spec(0, 0, 9999),
}

params = learn_state.lesson_header("Capacity and dropped tokens", P, SPECS)
slot = st.container()  # the capacity figure goes first; drawn once the controls below have run
st.markdown(
    "Some MoE implementations (Switch, GShard) give every expert a fixed **capacity** per batch: "
    "**ceil(C · T · k / E)** tokens, with capacity factor C, T tokens, top-k and E experts. Tokens are served "
    "in order; once an expert is full, later tokens that picked it are **dropped** for that expert (they keep "
    "only the residual path). DeepSeek-V3 drops nothing, which is why it needs good balance instead."
)
c1, c2, c3, c4 = st.columns(4)
c1.slider("Capacity factor C", 0.25, 2.0, step=0.05, key=learn_state.widget_key(P, "cap"))
c2.slider("Tokens T", 8, 64, key=learn_state.widget_key(P, "tokens"))
c3.radio("top-k", [1, 2], key=learn_state.widget_key(P, "k"), horizontal=True)
c4.number_input("Stream seed", 0, 9999, key=learn_state.widget_key(P, "seed"))
learn_state.router_controls(P, "Router (as in lesson 1)", expanded=False)
params = learn_state.get_params(P, SPECS)

W, b = learn_state.weights_array(params)
T, k = int(params["tokens"]), int(params["k"])
x = teaching.token_batches(params["seed"], 1, T, spread=0.6)[0]  # the same skewed stream as lesson 4
topk, _, _ = teaching.route(x, W, b, k, params["score"])
keep = teaching.capacity_keep(topk, learn_state.N_EXPERTS, params["cap"])
cap = teaching.capacity(T, k, learn_state.N_EXPERTS, params["cap"])
m1, m2, m3 = st.columns(3)
m1.metric("Capacity per expert", cap)
m2.metric("Routings dropped", f"{int((~keep).sum())} of {keep.size}")
m3.metric("Tokens losing every expert", int((~keep).all(axis=1).sum()))
learn_state.main_figure(P, slot, {"l5_capacity": figures.lessons.capacity_figure(topk, keep, cap)}, config)
load = teaching.expert_load(topk, learn_state.N_EXPERTS)
learn_state.chart(st, figures.lessons.load_figure(load, f"Demand per expert (capacity {cap})"), "l5_load", config)
dropped = np.flatnonzero(~keep.all(axis=1))
if len(dropped):
    table = pd.DataFrame(
        {
            "position": dropped,
            "experts wanted": [", ".join(f"E{e}" for e in topk[t]) for t in dropped],
            "dropped from": [", ".join(f"E{e}" for e, ok in zip(topk[t], keep[t]) if not ok) for t in dropped],
        }
    )
    st.dataframe(table, hide_index=True)
else:
    st.success("No token is dropped at this capacity factor.")

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
