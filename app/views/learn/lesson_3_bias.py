"""Lesson 3: a skewed token stream overloads two experts; the aux-loss-free bias rule restores balance."""

import numpy as np
import streamlit as st

from analysis import figures, teaching
from app import learn_state, session

config = session.figure_config()  # every figure's camera button saves the sidebar's format

P = "l3"
RATES = (1e-4, 1e-3, 1e-2)  # slow / good / oscillating
N_STEPS, BATCH, SHOWN = 600, 4096, 200  # steps simulated, tokens per step, tokens drawn per step
PLAY_STRIDE, PLAY_PAUSE = 5, 0.4  # Play advances this many steps per rerun, pausing this many seconds
SPECS = {
    **learn_state.ROUTER_SPECS,
    "u": learn_state.Spec(1e-3, choices=RATES),
    "seed": learn_state.Spec(0, 0, 9999),
    "step": learn_state.Spec(0, 0, N_STEPS),
}


@st.cache_data(show_spinner="Simulating the bias rule…", max_entries=16)
def simulate(w: tuple, b0: tuple, score: str, seed: int) -> tuple[dict, np.ndarray]:
    """The three rates on the same seeded stream (top-2): {rate: BiasRun}, and a few tokens of each step."""
    batches = teaching.token_batches(seed, N_STEPS, BATCH)
    W = np.array(w).reshape(learn_state.N_EXPERTS, 2)
    runs = {u: teaching.simulate_bias_rule(batches, W, np.array(b0), u, 2, score) for u in RATES}
    return runs, batches[:, :SHOWN].copy()


params = learn_state.lesson_header("Imbalance and the bias rule", P, SPECS)
slot = st.container()  # regions and load at this step go first; drawn once the controls below have run
st.markdown(
    "Real token streams are skewed: here the tokens sit in a small cloud that experts **E0** and **E1** "
    "both win, so with top-2 they get every token and E2, E3 idle. After each step the aux-loss-free rule "
    "(Wang et al. 2024, DeepSeek-V3) nudges every bias: **b_i ← b_i + u · sign(mean load − load_i)**. "
    "Overloaded experts go down, idle ones go up, until the load evens out. MaxVio = (max load − mean) / mean."
)
playing = learn_state.play_advance(P, N_STEPS, PLAY_STRIDE)  # before the Step widget is drawn
c1, c2, c3 = st.columns([2, 1, 1])
c1.select_slider("Rate u", RATES, key=learn_state.widget_key(P, "u"), format_func=lambda u: f"{u:g}")
c2.number_input("Stream seed", 0, 9999, key=learn_state.widget_key(P, "seed"))
c3.number_input("Step", 0, N_STEPS, key=learn_state.widget_key(P, "step"))
learn_state.step_buttons(P, N_STEPS, PLAY_STRIDE, PLAY_PAUSE)
learn_state.router_controls(P, "Router weights (as in lesson 1) and biases at step 0", expanded=False)
params = learn_state.get_params(P, SPECS)

runs, shown = simulate(params["w"], params["b"], params["score"], params["seed"])
run, step = runs[params["u"]], int(params["step"])
bias = run.biases[step]
load = run.loads[min(step, N_STEPS - 1)]
cols = st.columns(learn_state.N_EXPERTS + 1)
cols[0].metric("MaxVio", f"{teaching.maxvio(load):.3f}")
for e in range(learn_state.N_EXPERTS):
    cols[e + 1].metric(f"bias b{e}", f"{bias[e]:+.4f}")
W = np.array(params["w"]).reshape(learn_state.N_EXPERTS, 2)
tokens = shown[min(step, N_STEPS - 1)]
topk, _, _ = teaching.route(tokens, W, bias, 2, params["score"])
regions = teaching.decision_regions(W, bias, params["score"], lim=1.2, n=121)
main = {
    "l3_regions": figures.lessons.regions_figure(
        regions, "top2", W, tokens, topk[:, 0], title=f"Top-2 regions at step {step}"
    ),
    "l3_load": figures.lessons.load_figure(load, f"Load at step {step} (tokens whose top-2 has the expert)"),
}
learn_state.main_figure(P, slot, main, config)
learn_state.chart(st, figures.lessons.bias_figure(run.biases, step), "l3_bias", config)

st.subheader("Three rates side by side, same stream")
curves = {f"u = {u:g}": runs[u].maxvio for u in (1e-2, 1e-4, 1e-3)}  # the good rate drawn last, on top
learn_state.chart(st, figures.lessons.maxvio_figure(curves, 0.05, step), "l3_rates", config)
summary = []
for u in RATES:
    s = teaching.steps_to_balance(runs[u].maxvio)
    status = f"balanced from step {s}" if s is not None else "not balanced"
    summary.append(f"u = {u:g}: {status}, last-100-step MaxVio {runs[u].maxvio[-100:].mean():.3f}")
st.markdown(" · ".join(summary))
st.caption(f"Balanced = mean MaxVio over 20 steps below 0.05. Each step routes {BATCH:,} fresh tokens ({SHOWN} drawn).")

learn_state.predict_then_reveal(P)
learn_state.write_params(P, SPECS)
learn_state.play_continue(P, playing, PLAY_PAUSE)
