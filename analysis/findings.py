"""Specialization findings of a run, from its eval traces: the tables of docs/FINDINGS.md §2 AND the summary
sentences that quote them, made from the same numbers so that the two cannot drift apart.

    python -m scripts.findings --run sample_data/default_run --out-of-corpus tests/data/out_of_corpus
    compute(load_run(RUN)) -> Findings;  summary(f) -> bullet sentences;  markdown(f) -> the whole section

Two shares, never mixed up (analysis.specialization): the SHARE OF TOKENS of expert i in domain d is the
fraction of d's tokens whose top-k contains i (sums to K over experts, uniform K/E); the SHARE OF ROUTINGS is
the fraction of d's routings (one per (token, rank)) that go to i (sums to 1, uniform 1/E). Their ratios to
uniform are equal. Every number is recomputed from the run's files with `metrics`, `specialization` and
`significance`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import metrics, out_of_corpus, significance, specialization
from analysis.trace import load
from moe_core.model import count_parameters
from moe_core.run import Run


@dataclass(frozen=True)
class FindingsConfig:
    n_permutations: int = significance.N_PERMUTATIONS  # family-wise domain x expert null
    probe_permutations: int = significance.PROBE_PERMUTATIONS  # domain-probe label-permutation baseline
    shuffles: int = significance.SHUFFLES  # consecutive-token test
    n_boot: int = 200  # bootstrap CI over documents of each ratio
    alpha: float = significance.ALPHA  # a "significant" result: p < alpha (per test family)
    out_of_corpus: Path | None = None  # folder of LABEL_SOURCE_N.txt documents to test the named experts on


@dataclass(frozen=True)
class Findings:
    run_lines: str
    n_docs: int
    n_tokens: int
    labels: list[str]
    top_k: int
    n_experts: int
    final_maxvio_global: list[float]
    domain: pd.DataFrame  # significance.familywise_domain_null + bootstrap CI (ratio_lo, ratio_hi)
    probe: pd.DataFrame  # significance.probe_permutation_baseline
    mi: pd.DataFrame
    token_spec: pd.DataFrame
    coactivation: pd.DataFrame
    consecutive: pd.DataFrame  # significance.consecutive_test
    saturation: pd.DataFrame
    balance: pd.DataFrame  # MaxVio, dead experts, the two bias-flip rates
    claims: pd.DataFrame | None = None  # out_of_corpus.claims_table
    pair_claims: pd.DataFrame | None = None  # out_of_corpus.pair_claims_table
    ooc_sources: dict[str, list[str]] = field(default_factory=dict)  # label -> sources of the ooc docs
    config: FindingsConfig = FindingsConfig()


# --- computing -----------------------------------------------------------------------------------------------


def run_summary(run: Run) -> str:
    cfg = run.config
    params = count_parameters(cfg)
    hist = run.history()
    final = run.eval_history()[-1]
    tokens = hist[-1].get("tokens", 0) if hist else 0
    moe = cfg.moe
    model = (
        f"- model: {cfg.n_layer} blocks ({len(cfg.moe_layers)} MoE), d {cfg.n_embd}, {moe.n_experts} routed experts "
        f"(hidden {moe.expert_hidden}) top-{moe.top_k} + {moe.n_shared} shared, {moe.score_func} gating, "
    )
    balance = f"balancing {', '.join(moe.balance.strategies)}; "
    size = f"{params['total'] / 1e6:.2f} M parameters, {params['active'] / 1e6:.2f} M active per token\n"
    maxvio = ", ".join(f"{v:.3f}" for v in final["maxvio_global"])
    training = (
        f"- training: {final['step']} steps, {tokens / 1e6:.2f} M tokens; final validation loss "
        f"{final['val_loss']:.3f} (PPL {final['val_ppl']:.1f}); MaxVio_global per MoE layer {maxvio}"
    )
    return model + balance + size + training


def saturation_table(run: Run) -> pd.DataFrame:
    steps = sorted(int(p.stem.split("_")[-1]) for p in (run.path / "eval").glob("trace_step_*.parquet"))
    final = load(run.trace_path(steps[-1])).experts_array()
    rows = []
    for step in steps:
        sat = metrics.router_saturation(load(run.trace_path(step)).experts_array(), final)
        rows.append({"step": step, **{f"top-1 agreement, layer {r.layer}": r.top1_agreement for r in sat.itertuples()}})
    return pd.DataFrame(rows)


def coactivation_table(trace, top: int = 3) -> pd.DataFrame:
    co = metrics.coactivation(trace.experts_array(), trace.n_experts)
    rows = []
    for layer, lift in enumerate(co.lift_LEE):
        lift = np.where(np.eye(len(lift), dtype=bool) | ~np.isfinite(lift), -np.inf, lift)
        for flat in np.argsort(lift, axis=None)[::-1][: 2 * top : 2]:  # each pair appears twice (i, j), (j, i)
            i, j = sorted(np.unravel_index(flat, lift.shape))
            rows.append(
                {"layer": layer, "pair": f"{i}+{j}", "lift": lift[i, j], "P(j given i)": co.cond_LEE[layer, i, j]}
            )
    return pd.DataFrame(rows)


def domain_table(trace, config: FindingsConfig) -> pd.DataFrame:
    """Per (layer, domain): the best expert, its family-wise test and its bootstrap CI over documents."""
    E, ex, tok = trace.n_experts, trace.experts_array(), trace.tokens
    fw = significance.familywise_domain_null(ex, tok, E, n_permutations=config.n_permutations)
    ci = specialization.specialization_bootstrap_ci(ex, tok, E, n_boot=config.n_boot)
    ci = ci.rename(columns={"lo": "ratio_lo", "hi": "ratio_hi"})[["layer", "label", "expert", "ratio_lo", "ratio_hi"]]
    return fw.merge(ci, on=["layer", "label", "expert"])


def compute(run: Run, config: FindingsConfig = FindingsConfig()) -> Findings:
    trace = load(run.trace_path(run.checkpoints()[-1]))
    E, ex, tok = trace.n_experts, trace.experts_array(), trace.tokens
    domain = domain_table(trace, config)
    load_LE = metrics.expert_load(ex, E)
    balance = pd.DataFrame(
        {
            "layer": range(trace.n_layers),
            "MaxVio": metrics.max_vio(load_LE),
            "dead experts": metrics.dead_experts(load_LE).sum(1),
            "flipped routings": metrics.bias_flip_rate(trace.routing, trace.n_layers, per="pair"),
            "tokens with a changed top-k": metrics.bias_flip_rate(trace.routing, trace.n_layers, per="token"),
        }
    )
    coactivation = coactivation_table(trace)
    claims, pair_claims, sources = None, None, {}
    if config.out_of_corpus is not None:
        docs = out_of_corpus.read_docs(config.out_of_corpus)
        ooc = out_of_corpus.trace_of(run, docs)
        claims = out_of_corpus.claims_table(domain, ooc)
        pair_claims = out_of_corpus.pair_claims_table(coactivation, ooc)
        for d in docs:
            sources.setdefault(d.label, [])
            if d.source not in sources[d.label]:
                sources[d.label].append(d.source)
    return Findings(
        run_lines=run_summary(run),
        n_docs=int(tok["doc_id"].nunique()),
        n_tokens=trace.n_tokens,
        labels=sorted(tok["label"].unique()),
        top_k=trace.top_k,
        n_experts=E,
        final_maxvio_global=list(run.eval_history()[-1]["maxvio_global"]),
        domain=domain,
        probe=significance.probe_permutation_baseline(ex, tok, E, n_permutations=config.probe_permutations),
        mi=specialization.mi_summary(ex, tok, E),
        token_spec=specialization.token_specialization_summary(specialization.token_specialization(ex, tok, E)),
        coactivation=coactivation,
        consecutive=significance.consecutive_test(ex, tok, n_shuffles=config.shuffles, alpha=config.alpha),
        saturation=saturation_table(run),
        balance=balance,
        claims=claims,
        pair_claims=pair_claims,
        ooc_sources=sources,
        config=config,
    )


# --- formatting -----------------------------------------------------------------------------------------------


def table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for row in df.itertuples(index=False):
        cells = [format(v, floatfmt) if isinstance(v, (float, np.floating)) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def span(values, fmt: str = ".2f", unit: str = "", sep: str = "–") -> str:
    """'lo–hi' of `values` as formatted (one value when both ends format alike); signed values read better with
    sep=" to "."""
    v = np.asarray(values, dtype=float)
    lo, hi = format(v.min(), fmt), format(v.max(), fmt)
    return f"{lo}{unit}" if lo == hi else f"{lo}{sep}{hi}{unit}"


def pct(values, digits: int = 1) -> str:
    return span(np.asarray(values, dtype=float) * 100, f".{digits}f", " %")


def p_text(p: float, floor: float) -> str:
    return f"p ≤ {floor:.2g} (the floor)" if p <= floor * (1 + 1e-9) else f"p = {p:.2g}"


# --- the summary sentences (each quotes only the tables below it) ------------------------------------------------


def _domain_sentences(f: Findings) -> list[str]:
    d, K, E, cfg = f.domain, f.top_k, f.n_experts, f.config
    floor = significance.p_floor(cfg.n_permutations)
    weak = d[d["p_value"] >= cfg.alpha]
    at_floor = d[d["p_value"] <= floor * (1 + 1e-9)]
    weak_text = "; ".join(
        f"layer {r.layer} {r.label} (E{r.expert}, {r.ratio:.2f}×, {p_text(r.p_value, floor)})"
        for r in weak.itertuples()
    )
    above = int((d["ratio_lo"] > d["null_p95"]).sum())
    out = [
        f"**Domain × expert**: in every MoE layer each domain's most-used expert gets {span(d['ratio'])}× its uniform "
        f"share. The *share of tokens* of an expert in a domain is the fraction of the domain's tokens whose top-{K} "
        f"contains it (it sums to K = {K} over the experts, uniform K/E = {K / E:.3f}); the *share of routings* is the "
        f"fraction of the domain's {K} routings per token that go to it (it sums to 1, uniform 1/E = {1 / E:.4f}); "
        f"both give the same ratio to uniform. Each reported cell is the best of {E} experts, so it is tested against "
        f"the family-wise null: the best of the {E} under {cfg.n_permutations:,} permutations of the documents' labels "
        f"(p-value floor 1/{cfg.n_permutations + 1:,}). "
        + (
            f"{len(d) - len(weak)} of the {len(d)} (layer, domain) maxima are significant at p < {cfg.alpha}"
            + (f"; not significant: {weak_text}" if len(weak) else "")
            + f". {len(at_floor)} of the {len(d)} p-values are at the floor; z (the observed maximum minus the null's "
            f"mean, in null standard deviations) is {span(d['z'], '.1f')}; the bootstrap 95 % CIs over documents of "
            f"{above} of {len(d)} lie above the null's 95th percentile."
        ),
    ]
    best = d.loc[d.groupby("layer")["ratio"].idxmax()]
    worst = d.loc[d["ratio"].idxmin()]
    if best["label"].nunique() == 1:
        label = best["label"].iloc[0]
        mine = d[d["label"] == label]
        out.append(
            f"{label.capitalize()} is the most concentrated domain in every layer: its top expert's share of tokens "
            f"is {pct(mine['share_of_tokens'])} (share of routings {pct(mine['share_of_routings'])}). The least "
            f"concentrated cell is {worst['label']} in layer {worst['layer']} (E{worst['expert']}: share of tokens "
            f"{worst['share_of_tokens']:.1%}, {worst['ratio']:.2f}×)."
        )
    return [" ".join(out)]


def _probe_sentence(f: Findings) -> str:
    pr, floor = f.probe, significance.p_floor(f.config.probe_permutations)
    single, all_layers = pr[pr["layer"] >= 0], pr[pr["layer"] < 0]
    ps = "; ".join(f"{r.features}: {p_text(r.p_value, floor)}" for r in pr.itertuples())
    if (pr["p_value"] <= floor * (1 + 1e-9)).all():
        ps = f"{p_text(floor, floor)} for every feature set"
    return (
        f"**Domain probe**: a logistic regression on per-document routing histograms tells the domain apart with "
        f"{pct(single['accuracy'])} accuracy from any single layer and {pct(all_layers['accuracy'])} from all "
        f"layers (5-fold CV over {f.n_docs} documents). The majority-class chance is {pct(pr['chance'])}; the same "
        f"probe fitted to labels permuted across documents ({f.config.probe_permutations} permutations) averages "
        f"{pct(pr['perm_mean'])} (95th percentile {pct(pr['perm_p95'])}): {ps}."
    )


def _token_sentences(f: Findings) -> str:
    mi, ts = f.mi, f.token_spec
    beyond_token, beyond_domain = (
        mi["mi_token_bits"] - mi["mi_token_baseline"],
        mi["mi_domain_bits"] - mi["mi_domain_baseline"],
    )
    top = int(ts.loc[ts["mean_share"].idxmax(), "layer"])
    return (
        f"**Token identity explains routing more than domain** (as OLMoE found): the plug-in mutual information "
        f"between the chosen expert (each of a token's {f.top_k} routings one sample) and the token id is "
        f"{span(mi['mi_token_bits'])} bits vs {span(mi['mi_domain_bits'])} bits for the domain; shuffling the token "
        f"ids (the domain labels, across documents) gives {span(mi['mi_token_baseline'])} "
        f"({span(mi['mi_domain_baseline'])}) bits, the plug-in bias, so {span(beyond_token)} "
        f"vs {span(beyond_domain)} bits beyond it. A token id's most frequent "
        f"expert is in the top-{f.top_k} of {pct(ts['mean_share'], 0)} of its occurrences (mean over the "
        f"{span(ts['n_token_ids'], '.0f')} ids with ≥ 10 occurrences; {pct(ts['weighted_share'], 0)} weighting ids by "
        f"occurrences; uniform K/E = {f.top_k / f.n_experts:.1%}), highest in layer {top}."
    )


def _coactivation_sentence(f: Findings) -> str:
    co = f.coactivation
    best = co.loc[co.groupby("layer")["lift"].idxmax()]
    pairs = ", ".join(f"{r.pair} in layer {r.layer} ({r.lift:.2f}×)" for r in best.itertuples())
    return (
        f"**Co-activation**: the strongest pair of each layer is chosen together {span(best['lift'])}× as often as "
        f"independence predicts (lift): experts {pairs}."
    )


def _consecutive_sentence(f: Findings) -> str:
    c, L = f.consecutive, len(f.consecutive)
    per_layer = "; ".join(
        f"layer {r.layer}: {r.rate:.1%} vs {r.baseline:.1%} shuffled (ratio {r.ratio:.2f}, z = {r.z:.1f}): "
        f"{r.conclusion}"
        for r in c.itertuples()
    )
    return (
        f"**Consecutive tokens** of a document on the same top-1 expert, against {f.config.shuffles} shuffles of the "
        f"token order within each document (z against the shuffles' std; a conclusion needs two-sided p < "
        f"{f.config.alpha}/{L}): {per_layer}."
    )


def _saturation_sentence(f: Findings) -> str:
    s = f.saturation.set_index("step")
    cols = list(s.columns)
    shown = [s.index[0], s.index[(len(s) - 1) // 2], s.index[-2]] if len(s) >= 3 else list(s.index)
    at = ", ".join(f"{pct(s.loc[step], 0)} at step {step}" for step in dict.fromkeys(shown))
    gap = s[cols[0]] - s[cols[-1]]
    ordered = bool((s[cols].diff(axis=1).iloc[:, 1:] <= 0).all().all())
    return (
        f"**Router saturation** (top-1 agreement of each checkpoint's routing with the final one, on the same eval "
        f"tokens): {at}. Layer {len(cols) - 1} lags layer 0 by {span(gap.iloc[:-1])} (largest at step "
        f"{int(gap.idxmax())})" + ("; agreement falls with depth at every step." if ordered else ".")
    )


def _balance_sentence(f: Findings) -> str:
    b = f.balance
    return (
        f"**Balance and bias flips** on the eval set: MaxVio {span(b['MaxVio'])}, {int(b['dead experts'].sum())} dead "
        f"experts (final MaxVio_global on the validation batches {span(f.final_maxvio_global)}). The aux-loss-free "
        f"bias changes the choice: {pct(b['flipped routings'])} of the (token, layer, rank) routings are *flipped "
        f"routings* (an expert chosen on the biased scores that is not in the top-{f.top_k} of the raw scores), and "
        f"{pct(b['tokens with a changed top-k'])} of the (token, layer) pairs are *tokens with a changed top-k*."
    )


def _claims_sentence(f: Findings) -> str:
    c = f.claims
    counts = out_of_corpus.verdict_counts(c)
    sources = "; ".join(f"{label}: {', '.join(src)}" for label, src in sorted(f.ooc_sources.items()))
    parts = []
    for label, rows in c.groupby("label", sort=True):
        verdicts = ", ".join(
            f"E{r.expert} of layer {r.layer} {r.verdict} ({r.ooc_ratio:.2f}×)" for r in rows.itertuples()
        )
        parts.append(f"{label}: {verdicts}")
    return (
        f'**Named experts out of corpus**: each claim "expert i of layer l prefers domain d" (the maxima above) '
        f"was re-measured on {int(c.groupby('label')['n_docs'].first().sum())} documents written for this test "
        f"from sources the corpus never contained ({sources}). A claim *held* when the expert's ratio on those "
        f"documents has a bootstrap CI above 1× and the domain is still its top domain; *partly* when one of the two "
        f"holds. {counts['held']} of {len(c)} held, {counts['partly']} partly, {counts['did not hold']} did not — "
        + "; ".join(parts)
        + "."
        + (_pair_claims_text(f.pair_claims) if f.pair_claims is not None else "")
    )


def _pair_claims_text(pc: pd.DataFrame) -> str:
    counts = out_of_corpus.verdict_counts(pc)
    named = pc.loc[pc.groupby("layer")["eval_lift"].idxmax()]
    pairs = ", ".join(f"{r.pair} of layer {r.layer} {r.ooc_lift:.2f}× ({r.verdict})" for r in named.itertuples())
    return (
        f" The co-activation pairs of the table ({len(pc)}) on the same documents: {counts['held']} held (lift above "
        f"1 and still among the layer's 3 strongest pairs), {counts['partly']} partly (lift above 1 only), "
        f"{counts['did not hold']} did not; the strongest pair of each layer: {pairs}."
    )


def summary(f: Findings) -> list[str]:
    """The bullet sentences of docs/FINDINGS.md §2, each made from the tables `markdown` prints."""
    out = [
        *_domain_sentences(f),
        _probe_sentence(f),
        _token_sentences(f),
        _coactivation_sentence(f),
        _consecutive_sentence(f),
        _saturation_sentence(f),
        _balance_sentence(f),
    ]
    if f.claims is not None:
        out.append(_claims_sentence(f))
    return out


def markdown(f: Findings) -> str:
    """The generated part of docs/FINDINGS.md §2: the summary bullets, then the tables they quote."""
    cfg, K, E = f.config, f.top_k, f.n_experts
    dom = f.domain.rename(
        columns={
            "share_of_tokens": "share of tokens",
            "share_of_routings": "share of routings",
            "ratio_lo": "ratio 95% CI lo",
            "ratio_hi": "ratio 95% CI hi",
            "null_mean": "null mean",
            "null_p95": "null 95th pct",
            "p_value": "family-wise p",
        }
    )
    dom = dom[["layer", "label", "expert", "share of tokens", "share of routings", "ratio", "ratio 95% CI lo",
               "ratio 95% CI hi", "null mean", "null 95th pct", "z", "family-wise p"]]  # fmt: skip
    dom["family-wise p"] = [p_text(p, significance.p_floor(cfg.n_permutations)) for p in dom["family-wise p"]]
    probe = f.probe.drop(columns=["p_floor", "n_permutations"])
    probe["p_value"] = [p_text(p, significance.p_floor(cfg.probe_permutations)) for p in probe["p_value"]]
    cons = f.consecutive.copy()
    cons["p_value"] = [f"{p:.2g}" for p in cons["p_value"]]
    sections = [
        "\n".join(f"- {s}" for s in summary(f)),
        f"### The run\n\n{f.run_lines}\n- eval set: {f.n_docs} held-out documents, {f.n_tokens} tokens, labels "
        f"{', '.join(f.labels)}",
        f"### Domain × expert specialization\n\nMost specialised expert per (layer, domain). Share of tokens: "
        f"fraction of the domain's tokens whose top-{K} contains the expert (uniform K/E = {K / E:.3f}); share of "
        f"routings: fraction of the domain's routings (uniform 1/E = {1 / E:.4f}); ratio = share / uniform (the same "
        f"for both). CI: bootstrap over documents ({cfg.n_boot} resamples). Null: the best of the {E} experts under "
        f"{cfg.n_permutations:,} label permutations across documents (family-wise over experts; p-value floor "
        f"1/{cfg.n_permutations + 1:,}).\n\n{table(dom)}",
        f"### Domain probe (5-fold logistic regression on per-document routing histograms; baseline: "
        f"{cfg.probe_permutations} label permutations)\n\n{table(probe)}",
        f"### Mutual information (plug-in, bits; baseline = labels / token ids shuffled)\n\n{table(f.mi)}",
        "### Token specialization (OLMoE: share of a token id's occurrences whose top-k holds its most frequent "
        f"expert)\n\n{table(f.token_spec)}",
        f"### Co-activation: strongest pairs by lift\n\n{table(f.coactivation)}",
        f"### Consecutive tokens on the same top-1 expert vs {cfg.shuffles} within-document shuffles\n\n{table(cons)}",
        f"### Router saturation (top-1 agreement with the final checkpoint)\n\n{table(f.saturation)}",
        "### Balance and bias flips on the eval set (flipped routings: per (token, layer, rank); tokens with a "
        f"changed top-k: per (token, layer))\n\n{table(f.balance)}",
    ]
    if f.claims is not None:
        sections.append(
            "### Named experts on out-of-corpus text (ratio = share of the label's tokens / uniform K/E; CI: "
            f"bootstrap over the out-of-corpus documents)\n\n{table(f.claims)}"
        )
    if f.pair_claims is not None:
        sections.append(f"### Co-activation pairs on out-of-corpus text (lift on its tokens)\n\n{table(f.pair_claims)}")
    return "\n\n".join(sections)


CURVE_STEPS = (100, 200, 500, 1000, 1500, 1800, 1900, 2000)  # the validation points of docs/FINDINGS.md §1


def training_markdown(run: Run, steps: tuple[int, ...] = CURVE_STEPS) -> str:
    """§1's validation curve of `run` (the logged validations at `steps`) and the sentence on its flattening."""
    by_step = {r["step"]: r for r in run.eval_history()}
    steps = tuple(s for s in steps if s in by_step)
    lines = [
        "| step | " + " | ".join(map(str, steps)) + " |",
        "|---|" + "---:|" * len(steps),
        "| val loss | " + " | ".join(f"{by_step[s]['val_loss']:.3f}" for s in steps) + " |",
        "| val PPL | " + " | ".join(f"{by_step[s]['val_ppl']:.1f}" for s in steps) + " |",
    ]
    last, quarter = steps[-1], [s for s in (steps[-1] // 4, steps[-1] // 2, 3 * steps[-1] // 4) if s in by_step]
    marks = [*quarter, last]
    loss = {s: by_step[s]["val_loss"] for s in steps}
    drops = [f"{loss[a] - loss[b]:.2f} over steps {a}→{b}" for a, b in zip(marks, marks[1:])]
    prev = steps[-2]
    return "\n".join(lines) + (
        f"\n\nThe validation loss fell {', '.join(drops)} and "
        f"{by_step[prev]['val_loss'] - by_step[last]['val_loss']:.3f} over the last {last - prev} steps."
    )


def findings(run: Run, config: FindingsConfig = FindingsConfig()) -> str:
    """The generated Markdown of docs/FINDINGS.md §2 for `run`."""
    return markdown(compute(run, config))
