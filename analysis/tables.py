"""Table shaping for the figures, the pages' tables and CSV downloads: pandas / numpy in, tables out. No plotting.

Routing tables are the trace's long tables (tokens indexed by token_row; routing rows token_row, layer,
rank, expert, weight); history tables have one row per logged training step (step, load, bias,
maxvio_batch, aux, ...). Shapes: T tokens, L MoE layers, E experts, K top-k, N history rows.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from analysis import metrics, specialization
from analysis.teaching import BalanceResult, GateSteps
from analysis.trace import RoutingTrace

MAX_TOKEN_CHARS = 40  # token texts in hovers are cut to this many characters


def short_token(text: str) -> str:
    """A token made visible for hovers and tables: whitespace shown as symbols, long tokens cut."""
    shown = str(text).replace(" ", "␣").replace("\n", "↵").replace("\t", "⇥")
    return shown if len(shown) <= MAX_TOKEN_CHARS else shown[: MAX_TOKEN_CHARS - 1] + "…"


# ---------------------------------------------------------------- token routing


def top1_table(routing: pd.DataFrame, layer: int) -> pd.Series:
    """Top-1 (rank 0) expert per token_row at one layer."""
    rows = routing[(routing["layer"] == layer) & (routing["rank"] == 0)]
    return rows.set_index("token_row")["expert"].astype(int).sort_index()


def routing_summary(routing: pd.DataFrame) -> pd.Series:
    """Per (token_row, layer): 'E3 0.62, E1 0.38' (chosen experts by rank with gate weights)."""
    r = routing.sort_values(["token_row", "layer", "rank"], kind="stable")
    keys = list(zip(r["token_row"].tolist(), r["layer"].tolist()))
    texts: dict[tuple[int, int], list[str]] = {}
    for key, e, w in zip(keys, r["expert"].tolist(), r["weight"].tolist()):  # plain Python: fast for 10^4 rows
        texts.setdefault(key, []).append(f"E{e} {w:.2f}")
    index = pd.MultiIndex.from_tuples(list(texts), names=["token_row", "layer"])
    return pd.Series([", ".join(v) for v in texts.values()], index=index, dtype=object)


def routing_arrays(tokens: pd.DataFrame, routing: pd.DataFrame, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(experts, weights), each (T, L, K), of the T tokens of `tokens` (in their order): the expert chosen at
    rank k in layer l and its gate weight; -1 and 0 where `routing` has no row for that (token, layer, rank)."""
    rows = tokens.index.to_numpy()
    r = routing[routing["token_row"].isin(rows)]
    K = int(r["rank"].max()) + 1 if len(r) else 1
    experts = np.full((len(rows), n_layers, K), -1, dtype=np.int16)
    weights = np.zeros((len(rows), n_layers, K), dtype=np.float32)
    at = (np.argsort(rows)[np.searchsorted(rows, r["token_row"].to_numpy(), sorter=np.argsort(rows))],
          r["layer"].to_numpy().astype(np.int64), r["rank"].to_numpy().astype(np.int64))  # fmt: skip
    experts[at] = r["expert"].to_numpy()
    weights[at] = r["weight"].to_numpy()
    return experts, weights


def routing_steps_table(
    scores_E: np.ndarray,
    bias_E: np.ndarray,
    top_k: int,
    renormalize: bool = True,
    route_scale: float = 1.0,
    recorded: Mapping[int, float] | None = None,
    n_groups: int = 1,
    topk_groups: int = 1,
) -> pd.DataFrame:
    """One router decision step by step, recomputed from the scores and the bias (DeepSeek-V3).

    biased = score + bias (used only to choose); chosen = top-k of biased; the unbiased top-k is what
    would be chosen without the bias (both by `moe_core.moe.choose_experts`, group-limited when
    n_groups > 1, as the recorder's bias flips); gate weight = score of chosen experts, divided by their sum
    when `renormalize`, times `route_scale`. `recorded` = {expert: gate weight} as the model actually chose
    (from the trace) overrides the replay, so other families' rules show truly.
    """
    import torch

    from moe_core.moe import choose_experts

    scores_E = np.asarray(scores_E, dtype=np.float64)
    bias_E = np.asarray(bias_E, dtype=np.float64)
    biased_E = scores_E + bias_E
    chosen, unbiased = (
        choose_experts(torch.from_numpy(x_E)[None], top_k, n_groups, topk_groups)[0].numpy()
        for x_E in (biased_E, scores_E)
    )
    gate = np.zeros_like(scores_E)
    gate[chosen] = scores_E[chosen]
    if renormalize and gate.sum() > 0:
        gate = gate / gate.sum()
    gate *= route_scale
    if recorded is not None:
        chosen = np.asarray(list(recorded), dtype=np.int64)
        gate = np.zeros_like(scores_E)
        gate[chosen] = list(recorded.values())
    rank = np.full(len(scores_E), -1)
    rank[chosen] = np.arange(len(chosen))
    return pd.DataFrame(
        {
            "expert": np.arange(len(scores_E)),
            "score": scores_E,
            "bias": bias_E,
            "biased_score": biased_E,
            "chosen": np.isin(np.arange(len(scores_E)), chosen),
            "rank": rank,
            "chosen_without_bias": np.isin(np.arange(len(scores_E)), unbiased),
            "gate_weight": gate,
        }
    )


def bias_changed_choice(steps: pd.DataFrame) -> bool:
    """True when the bias changed the chosen set (an expert chosen only because of the bias)."""
    return bool((steps["chosen"] != steps["chosen_without_bias"]).any())


# ---------------------------------------------------------------- expert tables


def load_matrix(routing: pd.DataFrame, n_layers: int, n_experts: int) -> np.ndarray:
    """(L, E) load: load[l, i] = routings (any rank) of tokens to expert i at layer l."""
    flat = routing["layer"].to_numpy().astype(np.int64) * n_experts + routing["expert"].to_numpy().astype(np.int64)
    return np.bincount(flat, minlength=n_layers * n_experts).reshape(n_layers, n_experts)


def matrix_frame(m: np.ndarray, row_name: str, col_name: str, value_name: str, rows=None) -> pd.DataFrame:
    """A matrix as a long table (row, column, value) for CSV download."""
    m = np.asarray(m)
    rows = list(range(m.shape[0])) if rows is None else list(rows)
    r, c = np.meshgrid(np.arange(m.shape[0]), np.arange(m.shape[1]), indexing="ij")
    row_values = np.asarray(rows, dtype=object)[r.ravel()]
    return pd.DataFrame({row_name: row_values, col_name: c.ravel(), value_name: m.ravel()})


def series_frame(series: Mapping[str, tuple[np.ndarray, np.ndarray]], value_name: str) -> pd.DataFrame:
    """{run: (steps, values)} as a long table (run, step, value) for CSV download."""
    parts = [pd.DataFrame({"run": name, "step": s, value_name: v}) for name, (s, v) in series.items()]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["run", "step", value_name])


def flow_frame(flow_LEE: np.ndarray) -> pd.DataFrame:
    """(L-1, E, E) transition counts -> long table layer (source layer), src, dst, count (count > 0 only)."""
    flow = np.asarray(flow_LEE)
    l, i, j = np.nonzero(flow)
    return pd.DataFrame({"layer": l, "src": i, "dst": j, "count": flow[l, i, j]})


def top_tokens_table(tokens: pd.DataFrame, routing: pd.DataFrame, layer: int, n: int = 8) -> pd.DataFrame:
    """Per expert at one layer: its most frequent top-1 tokens, 'tok (count)', and its top-1 token count."""
    top1 = routing[(routing["layer"] == layer) & (routing["rank"] == 0)]
    texts = tokens["token_text"].reindex(top1["token_row"].to_numpy()).map(short_token).to_numpy()
    df = pd.DataFrame({"expert": top1["expert"].to_numpy(), "token": texts})
    rows = []
    for expert, group in df.groupby("expert", sort=True):
        counts = group["token"].value_counts().head(n)
        listed = ", ".join(f"{tok} ({c})" for tok, c in counts.items())
        rows.append({"expert": int(expert), "tokens": int(len(group)), "top tokens": listed})
    return pd.DataFrame(rows, columns=["expert", "tokens", "top tokens"])


def domain_share_ratio(trace: RoutingTrace, layer: int) -> pd.DataFrame:
    """(labels x E) `specialization.domain_specialization` ratio at `layer`: the share of a label's tokens
    routed to expert i divided by the uniform K/E, ratio[d, i] = E * count(d, i) / (K * tokens of d)."""
    return ratio_pivot(specialization.domain_specialization(trace.routing, trace.tokens, trace.n_experts), layer)


def ratio_pivot(cells: pd.DataFrame, layer: int) -> pd.DataFrame:
    """(labels x E) ratio at `layer` of `specialization.domain_specialization` cells (one row per layer, label,
    expert)."""
    return cells[cells["layer"] == layer].pivot(index="label", columns="expert", values="ratio")


# ---------------------------------------------------------------- training history


def history_array(history: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps (N,), values (N, ...)) from a history column of nested lists (load, bias, maxvio_batch)."""
    rows = history.dropna(subset=[column]) if column in history else history.iloc[:0]
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros((0,))
    return rows["step"].to_numpy(), np.asarray(rows[column].tolist(), dtype=np.float64)


def ema(values: np.ndarray, alpha: float) -> np.ndarray:
    """Exponential moving average y_t = alpha*y_{t-1} + (1-alpha)*x_t (alpha=0: no smoothing)."""
    values = np.asarray(values, dtype=np.float64)
    out = np.empty_like(values)
    acc = None
    for i, v in enumerate(values):
        acc = v if acc is None else alpha * acc + (1 - alpha) * v
        out[i] = acc
    return out


def ema_steps(steps: np.ndarray, values: np.ndarray, alpha: float) -> np.ndarray:
    """EMA with `alpha` per training step, for curves logged every few steps (validation):
    y_i = a_i * y_(i-1) + (1 - a_i) * x_i with a_i = alpha ** (steps_i - steps_(i-1)); equal to `ema` when
    every step is logged, so sparse and dense curves of one run are smoothed alike."""
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    gaps = np.diff(steps)
    if len(values) > 1 and values.ndim == 1 and gaps[0] >= 0 and np.all(gaps == gaps[0]):
        # evenly logged (every step, or every n): one constant weight, so a linear filter does the loop in C
        from scipy.signal import lfilter

        a = alpha ** gaps[0]
        return lfilter([1 - a], [1, -a], values, zi=[a * values[0]])[0]
    out = np.empty_like(values)
    for i, v in enumerate(values):
        a = alpha ** max(steps[i] - steps[i - 1], 0.0) if i else 0.0
        out[i] = v if i == 0 else a * out[i - 1] + (1 - a) * v
    return out


def aux_series(history: pd.DataFrame) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{aux loss name: (steps, values)} from the history's `aux` dicts (empty when no aux loss is on)."""
    if "aux" not in history:
        return {}
    rows = [(s, a) for s, a in zip(history["step"], history["aux"]) if isinstance(a, dict)]
    names = sorted({k for _, a in rows for k in a})
    return {
        n: (np.array([s for s, a in rows if n in a]), np.array([float(a[n]) for _, a in rows if n in a])) for n in names
    }


def history_table(history: pd.DataFrame) -> pd.DataFrame:
    """The history with nested lists/dicts flattened to columns (load_l0_e3, bias_l1_e0, aux_switch, …) for CSV."""
    columns: dict[str, object] = {}
    for col in history:
        values = history[col].tolist()
        first = next((v for v in values if isinstance(v, (list, dict))), None)
        if first is None:
            columns[col] = values
        elif isinstance(first, dict):
            for key in sorted({k for v in values if isinstance(v, dict) for k in v}):
                columns[f"{col}_{key}"] = [v.get(key) if isinstance(v, dict) else None for v in values]
        else:
            arr = np.asarray([v if isinstance(v, list) else np.full(np.shape(first), np.nan) for v in values])
            for idx in np.ndindex(arr.shape[1:]):
                name = "_".join(f"{p}{i}" for p, i in zip(("l", "e"), idx))
                columns[f"{col}_{name}"] = arr[(slice(None), *idx)]
    return pd.DataFrame(columns, index=history.index)


def maxvio_series(history: pd.DataFrame, layer: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MaxVio_batch over steps at one layer, or averaged over layers when `layer` is None."""
    steps, v = history_array(history, "maxvio_batch")  # (N, L)
    if v.ndim != 2 or not len(steps):
        return steps, np.zeros(len(steps))
    return steps, v.mean(axis=1) if layer is None else v[:, min(layer, v.shape[1] - 1)]


def top_bottom_experts(load_NE: np.ndarray, k: int) -> list[int]:
    """The k experts with the largest and the k with the smallest share of the last logged step's load
    (routings, any rank), largest first; all experts when 2k >= E."""
    load = np.asarray(load_NE, dtype=np.float64)
    if not len(load):
        return []
    order = [int(e) for e in np.argsort(-load[-1], kind="stable")]
    return order if 2 * k >= len(order) else order[:k] + order[-k:]


def saturation_table(experts_by_step: Mapping[int, np.ndarray]) -> pd.DataFrame:
    """Router saturation (`metrics.router_saturation`) of every step against the last one, on the same tokens:
    one row per (step, layer) with top1_agreement (share of tokens whose top-1 expert is the final step's),
    topk_overlap and topk_exact (share of tokens whose top-k set is the final step's)."""
    columns = ["step", "layer", "top1_agreement", "topk_overlap", "topk_exact"]
    if not experts_by_step:
        return pd.DataFrame(columns=columns)
    final = experts_by_step[max(experts_by_step)]
    parts = [metrics.router_saturation(e, final).assign(step=int(s)) for s, e in sorted(experts_by_step.items())]
    return pd.concat(parts, ignore_index=True)[columns]


def maxvio_global_series(eval_history: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """MaxVio_global over validation steps, averaged over layers (empty without that column)."""
    steps, v = history_array(eval_history, "maxvio_global")  # (N, L)
    return (steps, v.mean(axis=1)) if v.ndim == 2 and len(steps) else (steps, np.zeros(len(steps)))


# ---------------------------------------------------------------- run comparison

FINAL_WINDOW = 100  # MaxVio_batch of a run: the mean over its last this many logged steps
COMPARISON_METRICS = {"val_ppl": "val PPL", "maxvio_global": "MaxVio_global", "maxvio_batch": "MaxVio_batch"}


def final_metrics(history: pd.DataFrame | None, eval_history: pd.DataFrame | None, window: int = FINAL_WINDOW):
    """A run's final numbers: val_ppl and maxvio_global (mean over layers) of its last validation row;
    maxvio_batch = mean over the last `window` logged steps of the layer-mean MaxVio_batch. NaN when absent."""
    out = {"val_ppl": np.nan, "maxvio_global": np.nan, "maxvio_batch": np.nan}
    if eval_history is not None and len(eval_history):
        last = eval_history.iloc[-1]
        if "val_ppl" in last and pd.notna(last["val_ppl"]):
            out["val_ppl"] = float(last["val_ppl"])
        if isinstance(last.get("maxvio_global"), list):
            out["maxvio_global"] = float(np.mean(last["maxvio_global"]))
    if history is not None:
        _, v = maxvio_series(history)
        if len(v):
            out["maxvio_batch"] = float(np.mean(v[-window:]))
    return out


def strategy_groups(configs: Mapping[str, dict | None]) -> dict[str, str]:
    """{run: group}: runs whose training config is equal except train.seed are seeds of one strategy, named by
    their first run (a run without a config is its own group)."""
    first: dict[str, str] = {}
    groups = {}
    for run, config in configs.items():
        if config is None:
            groups[run] = run
            continue
        key = dict(config, train={k: v for k, v in config.get("train", {}).items() if k != "seed"})
        groups[run] = first.setdefault(json.dumps(key, sort_keys=True, default=str), run)
    return groups


def run_comparison(finals: Mapping[str, Mapping[str, float]], groups: Mapping[str, str]) -> pd.DataFrame:
    """One row per strategy (group of seeds): strategy, n (runs), runs, and per metric its mean and sample
    standard deviation over the runs (ddof=1; NaN when n = 1). `finals[run]` is `final_metrics` of the run."""
    rows = []
    for group in dict.fromkeys(groups[r] for r in finals):
        runs = [r for r in finals if groups[r] == group]
        row: dict[str, object] = {"strategy": group, "n": len(runs), "runs": ", ".join(runs)}
        for key in COMPARISON_METRICS:
            values = np.array([finals[r][key] for r in runs], dtype=np.float64)
            row[f"{key}_mean"] = float(np.mean(values))
            row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else np.nan
        rows.append(row)
    columns = ["strategy", "n", "runs"] + [f"{k}_{s}" for k in COMPARISON_METRICS for s in ("mean", "std")]
    return pd.DataFrame(rows, columns=columns)


def mean_std_text(mean: float, std: float, digits: int = 3) -> str:
    """'12.3 ± 0.4' (std given), '12.3' (std NaN: one run) or '–' (no value), to `digits` significant digits."""
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}g}" if pd.isna(std) else f"{mean:.{digits}g} ± {std:.2g}"


def comparison_display(table: pd.DataFrame) -> pd.DataFrame:
    """`run_comparison` for reading: strategy, n, one 'mean ± std' column per metric."""
    out = table[["strategy", "n"]].copy()
    for key, label in COMPARISON_METRICS.items():
        out[label] = [mean_std_text(m, s) for m, s in zip(table[f"{key}_mean"], table[f"{key}_std"])]
    return out


# ---------------------------------------------------------------- geometry


def selected_rows(points: Sequence[Mapping]) -> list[int]:
    """token_row values from a plotly selection event's points (customdata may be a scalar or a list)."""
    rows = []
    for p in points:
        cd = p.get("customdata")
        if isinstance(cd, (list, tuple)):
            cd = cd[0] if cd else None
        if cd is not None:
            rows.append(int(cd))
    return sorted(set(rows))


def keyword_in_context(tokens: pd.DataFrame, texts: Mapping, rows: Sequence[int], width: int = 40) -> pd.DataFrame:
    """Keyword in context: for each token row, `width` characters of its document before it, the token's own
    characters, and `width` after (plain text, newlines as spaces; escape before rendering as HTML).
    Returns columns: token_row, doc_id, label, left, token, right."""
    out = []
    for row in rows:
        t = tokens.loc[row]
        doc = str(texts.get(t["doc_id"], ""))
        s, e = int(t["char_start"]), int(t["char_end"])
        flat = doc.replace("\r\n", "  ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
        label = t.get("label", "")
        out.append({"token_row": int(row), "doc_id": t["doc_id"], "label": "" if pd.isna(label) else str(label),
                    "left": flat[max(0, s - width) : s], "token": doc[s:e], "right": flat[e : e + width]})  # fmt: skip
    return pd.DataFrame(out, columns=["token_row", "doc_id", "label", "left", "token", "right"])


def token_context(
    tokens: pd.DataFrame,
    texts: Mapping,
    rows: Sequence[int],
    width: int = 30,
    experts: Mapping[int, int] | None = None,
) -> pd.DataFrame:
    """For token rows: the token, its top-1 expert at the layer shown (`experts`: token_row -> expert; the
    column is left out without it) and `width` characters of its document on each side around the token in
    brackets, as plain text (`keyword_in_context` in one column)."""
    kwic = keyword_in_context(tokens, texts, rows, width)
    out = pd.DataFrame(
        {
            "token_row": kwic["token_row"],
            "token": [short_token(t) for t in tokens.loc[list(rows), "token_text"]],
            "expert": [int(experts[r]) for r in rows] if experts is not None else None,
            "label": kwic["label"],
            "context": kwic["left"] + "[" + kwic["token"].str.replace("\n", " ") + "]" + kwic["right"],
        }
    )
    return out if experts is not None else out.drop(columns="expert")


# ---------------------------------------------------------------- Learn lessons


def gate_steps_table(steps: GateSteps, bias_E: np.ndarray) -> pd.DataFrame:
    """One row per expert: logit, score, bias, score + bias, rank when chosen, gate weight."""
    E = len(steps.logits)
    rank = {int(e): r for r, e in enumerate(steps.chosen)}
    gate = {int(e): float(g) for e, g in zip(steps.chosen, steps.gates)}
    return pd.DataFrame(
        {
            "expert": [f"E{e}" for e in range(E)],
            "logit = w·x": steps.logits,
            "score": steps.scores,
            "bias": np.asarray(bias_E, dtype=float),
            "score + bias": steps.biased,
            "chosen (rank)": [rank[e] + 1 if e in rank else None for e in range(E)],
            "gate weight": [gate.get(e, 0.0) for e in range(E)],
        }
    )


def tradeoff_rows(results: Mapping[tuple[str, float], BalanceResult]) -> pd.DataFrame:
    """One row per run {(method, alpha or u): result}: method, label, maxvio, top1_changed, weight_change."""
    return pd.DataFrame(
        [
            {
                "method": method,
                "label": f"α={value:g}" if method == "switch" else f"u={value:g}",
                "maxvio": r.maxvio,
                "top1_changed": r.top1_changed,
                "weight_change": r.weight_change,
            }
            for (method, value), r in results.items()
        ]
    )
