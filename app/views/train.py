"""Train: start a small training run in the background, watch its curves live, stop it."""

import re
from pathlib import Path

import streamlit as st

from analysis import figures, tables
from app import cache, session, settings, training_jobs

config = session.figure_config()  # every figure's camera button saves the sidebar's format

st.title("Train a model")
st.caption(
    "Runs `moe-explorer train` in the background on the built-in small corpus. The run is written to "
    f"`{settings.runs_dir()}/NAME` and appears in the sidebar's run selector; stopping it keeps its last checkpoint."
)
job = st.session_state.get(session.KEY_TRAIN_PROC)
running = job is not None and job["proc"].poll() is None

with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    name = c1.text_input("Run name", "my-run", help="letters, digits, - and _", key="train_name")
    preset = c2.selectbox("Preset", ["tiny", "small", "default", "seed"], help="tiny trains fast", key="train_preset")
    steps = c3.number_input("Steps", 1, 100_000, 200, step=50, key="train_steps")
    c1, c2, c3 = st.columns(3)
    strategies = ["aux_free", "switch", "seq", "comp", "zloss"]
    hint = "aux_free = DeepSeek-V3 bias rule; switch/seq/comp/zloss = auxiliary losses"
    balance = c1.multiselect("Balancing", strategies, ["aux_free"], help=hint, key="train_balance")
    experts = c2.number_input("Experts (0 = preset)", 0, 64, 0, key="train_experts")
    top_k = c3.number_input("Top-k (0 = preset)", 0, 8, 0, key="train_topk")
    submitted = st.form_submit_button("Start training", type="primary", disabled=running)
if submitted:
    out = settings.runs_dir() / name
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
        st.error("The run name may only hold letters, digits, - and _ (at most 64 characters).")
    elif out.exists():
        st.error(f"A run named {name!r} already exists in {settings.runs_dir()}; choose another name.")
    elif top_k and experts and top_k > experts:
        st.error("Top-k cannot exceed the number of experts.")
    else:
        try:
            out = training_jobs.run_dir_for(name)  # never outside the runs folder (a symlink named like the run)
        except ValueError as exc:
            st.error(f"Cannot use this run name: {exc}")
        else:
            cmd = training_jobs.train_command(out, preset, int(steps), balance, experts, top_k)
            job = training_jobs.start_training(cmd, out)
            running = True
            st.toast(f"Training {name} started")


@st.fragment(run_every=2 if running else None)
def live(job: dict) -> None:
    """Status, curves and log of the background run; refreshes every 2 s while it runs."""
    code = job["proc"].poll()
    out = Path(job["out"])
    st.markdown(f"**{out.name}**: " + ("running…" if code is None else f"finished (exit code {code})"))
    if code is None and st.button("Stop training", key="train_stop"):
        training_jobs.stop_training(job)
        st.info("Stopping: the trainer finishes its step and writes a checkpoint.")
    hist = cache.get_source(str(out)).history() if (out / "run.json").is_file() else None
    if hist is not None and len(hist):
        steps = hist["step"].to_numpy()
        c1, c2, c3 = st.columns([2, 1, 1])
        smooth = c1.slider("Smoothing (EMA)", 0.0, 0.99, 0.6, key="train_smooth", help="0 = raw")
        log_y, log_vio = c2.toggle("Log y: loss", key="train_log"), c3.toggle("Log y: MaxVio", True, key="train_lv")
        loss = {out.name: (steps, hist["loss"].to_numpy())}
        vio = {out.name: tables.maxvio_series(hist)}
        c1, c2 = st.columns(2)
        c1.plotly_chart(
            figures.training.run_curves(loss, "Loss", "loss", smooth, log_y), key="train_loss", config=config
        )
        title = "MaxVio_batch (mean of layers)"
        c2.plotly_chart(
            figures.training.run_curves(vio, title, "MaxVio", smooth, log_vio), key="train_vio", config=config
        )
        st.progress(min(1.0, steps[-1] / max(1, int(job["cmd"][job["cmd"].index("--steps") + 1]))))
    st.code(training_jobs.log_tail(job["log"]) or "(no output yet)", language=None)
    if code is not None and running:
        st.rerun(scope="app")  # stop refreshing; the run selector picks the finished run up


if job is not None:
    st.subheader("Current run")
    live(job)
