"""Overview / model card: the run in use, its architecture, parameters, training summary, and the pages."""

import numpy as np
import streamlit as st

from app import state
from moe_core import count_parameters

path, step = state.require_run(need_model=False)
if state.is_hf(path):
    from analysis.hf import hf_folder_info

    info = hf_folder_info(path)
    st.title(f"Hugging Face model: {info['model_id']}")
    st.table({"field": list(info), "value": [str(v) for v in info.values()]})
    st.info("Imported models have no checkpoints or training history: Training dynamics does not apply. "
            "Token routing, Expert heatmaps and Router geometry work as for our runs.")  # fmt: skip
    st.stop()
run = state.get_run(path)
cfg, moe = run.config, run.config.moe
st.title("MoE explorer")
st.markdown(
    "See how a Mixture-of-Experts language model routes tokens: which expert every token goes to, in every "
    "layer, how balanced the experts are, and how routing changes over training."
)
st.caption(f"Run **{run.name}** · checkpoint step **{step}** · `{path}` (change both in the sidebar)")

st.subheader("Architecture")
params = count_parameters(cfg)
balance = ", ".join(moe.balance.strategies)
if moe.balance.bias_rate:
    balance += f" (bias rate {moe.balance.bias_rate:g})"
c = st.columns(4)
c[0].metric("Layers (MoE)", f"{cfg.n_layer} ({len(cfg.moe_layers)})")
c[1].metric("Experts × top-k", f"{moe.n_experts} × {moe.top_k}")
c[2].metric("Parameters", f"{params['total'] / 1e6:.2f} M")
c[3].metric("Active per token", f"{params['active'] / 1e6:.2f} M")
st.table(
    {
        "setting": ["model width", "shared experts", "score function", "balancing", "context", "vocabulary"],
        "value": [
            str(cfg.n_embd),
            f"{moe.n_shared} (hidden {moe.shared_hidden})" if moe.n_shared else "none",
            moe.score_func,
            balance,
            f"{cfg.block_size} tokens",
            f"{cfg.vocab_size} BPE tokens",
        ],
    }
)

st.subheader("Training summary")
hist, ev = state.history(path), state.eval_history(path)
c = st.columns(4)
c[0].metric("Steps", f"{int(hist['step'].max()):,}" if "step" in hist and len(hist) else "–")
c[1].metric("Tokens", f"{int(hist['tokens'].max()):,}" if "tokens" in hist and len(hist) else "–")
if "val_loss" in ev and len(ev):
    last = ev.iloc[-1]
    c[2].metric("Final val loss / PPL", f"{last['val_loss']:.3f} / {last.get('val_ppl', np.exp(last['val_loss'])):.1f}")
    vio = last.get("maxvio_global")
    c[3].metric("MaxVio_global (mean of layers)", f"{np.mean(vio):.3f}" if vio is not None else "–")
else:
    c[2].metric("Final val loss / PPL", "–")
    c[3].metric("MaxVio_global", "–")

st.subheader("Pages")
st.markdown(
    "- **Token routing**: paste or upload text; each token coloured by its top-1 expert, any token step by step.\n"
    "- **Expert heatmaps**: load per layer, domain specialization, top tokens, co-activation, cross-layer flow.\n"
    "- **Training dynamics**: load balance, MaxVio, biases and losses over training; compare runs.\n"
    "- **Router geometry**: PCA/UMAP of the router inputs; select points to read their tokens.\n"
    "- **Train**: start a small training run in the background and watch its curves.\n"
    "- **Learn**: short lessons on how MoE routing works."
)
