"""A run directory before its first step: the corpus, a fresh run's files, and the checks for a resume.

A fresh run gets (rank 0): tokenizer.json, data/tokens.safetensors (the token cache), eval/docs.jsonl
(held-out docs for routing traces) and run.json. A resumed run is checked against run.json and cut back to
its latest checkpoint (history rows written after it are dropped, so nothing is lost or duplicated).
"""

from __future__ import annotations

import json
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

from moe_core.config import ModelConfig
from moe_core.corpus import Doc, build_corpus, docs_from_paths, label_sizes, load_docs, split_docs
from moe_core.files import read_jsonl, write_json_atomic, write_jsonl_atomic
from moe_core.run import RUN_FORMAT, Run, save_weights
from moe_core.tokenizer import eot_id, save_tokenizer, train_tokenizer
from moe_core.training.config import RESUME_FIXED, TrainConfig
from moe_core.training.data import encode_docs


def corpus_summary(docs_train: list[Doc], docs_val: list[Doc], manifest: dict | None = None) -> dict:
    """Sizes per label of each split (+ the corpus manifest's seed/size/sources when built-in)."""
    summary = {
        "train": label_sizes(docs_train),
        "val": label_sizes(docs_val),
        "labels": sorted({d.label for d in docs_train}),
    }
    if manifest:
        summary["manifest"] = {
            k: manifest[k]
            for k in ("format", "seed", "size", "chars_per_domain", "sources", "source_descriptions", "python")
            if k in manifest
        }
    return summary


def select_eval_docs(docs_val: list[Doc], per_label: int, max_chars: int) -> list[Doc]:
    """Up to `per_label` val docs per label (in val order), each cut at a whitespace near `max_chars`."""
    counts: dict[str, int] = {}
    chosen = []
    for d in docs_val:
        if counts.get(d.label, 0) >= per_label:
            continue
        counts[d.label] = counts.get(d.label, 0) + 1
        text = d.text
        if len(text) > max_chars:
            cut = text.rfind(" ", max_chars // 2, max_chars)
            text = text[: cut if cut > 0 else max_chars]
        chosen.append(Doc(text, d.label, d.source, d.doc_id))
    return chosen


def _versions() -> dict[str, str]:
    import safetensors
    import tokenizers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "safetensors": safetensors.__version__,
        "platform": platform.platform(),
    }


def prepare_new_run(
    run_dir: Path,
    model_cfg: ModelConfig,
    cfg: TrainConfig,
    docs_train: list[Doc],
    docs_val: list[Doc],
    corpus_info: dict,
) -> None:
    """Tokenizer, token cache, eval docs and run.json of a fresh run (rank 0)."""
    if not docs_train or not docs_val:
        raise ValueError(f"need training and validation docs (got {len(docs_train)} train, {len(docs_val)} val)")
    vocab = cfg.vocab_size or model_cfg.vocab_size
    tok = train_tokenizer((d.text for d in docs_train), vocab)
    save_tokenizer(tok, run_dir / "tokenizer.json")
    train_ids, val_ids = encode_docs(tok, docs_train), encode_docs(tok, docs_val)
    save_weights(
        run_dir / "data" / "tokens.safetensors",
        {"train": train_ids, "val": val_ids},
        {"train_docs": len(docs_train), "val_docs": len(docs_val)},
    )
    eval_docs = select_eval_docs(docs_val, cfg.eval_docs_per_label, cfg.eval_doc_chars)
    write_jsonl_atomic(
        run_dir / "eval" / "docs.jsonl",
        [{"doc_id": d.doc_id, "label": d.label, "source": d.source, "text": d.text} for d in eval_docs],
    )
    info = {
        "format": RUN_FORMAT,
        "name": run_dir.name,
        "model": model_cfg.to_dict(),
        "train": cfg.to_dict(),
        "corpus": corpus_info,
        "tokenizer": {
            "file": "tokenizer.json",
            "kind": "byte-level BPE",
            "vocab_size": tok.get_vocab_size(),
            "requested_vocab_size": vocab,
            "eot_id": eot_id(tok),
            "train_tokens": int(train_ids.numel()),
            "val_tokens": int(val_ids.numel()),
        },
        "versions": _versions(),
        "balance": model_cfg.moe.balance.strategies,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json_atomic(run_dir / "run.json", info)


def setup_run_dir(
    run_dir: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    docs_train: list[Doc] | None,
    docs_val: list[Doc] | None,
    corpus_info: dict | None,
    resume: bool,
) -> None:
    """Rank 0: refuse to overwrite a run or to resume nothing; create a fresh run's files."""
    if (run_dir / "run.json").exists() and not resume:
        raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    if resume and not (run_dir / "run.json").exists():
        raise ValueError(f"nothing to resume: {run_dir} has no run.json")
    if resume:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write to run directory {run_dir}: {exc.strerror or exc}") from None
    docs_train, docs_val = docs_train or [], docs_val or []
    info = corpus_info or corpus_summary(docs_train, docs_val)
    prepare_new_run(run_dir, model_cfg, train_cfg, docs_train, docs_val, info)


def check_resume(run: Run, model_cfg: ModelConfig, cfg: TrainConfig) -> int:
    """The step to resume from (0: no checkpoint yet); ValueError when the configs or the files forbid it."""
    if run.config.to_dict() != model_cfg.to_dict():
        raise ValueError(f"model config differs from the one in {run.path / 'run.json'}; cannot resume")
    stored = run.info.get("train", {})
    for name in RESUME_FIXED:
        if name in stored and stored[name] != getattr(cfg, name):
            raise ValueError(f"train.{name} is {getattr(cfg, name)!r} but the run used {stored[name]!r}; cannot resume")
    start_step = run.latest_step() or 0
    if start_step and not run.state_path(start_step).is_file():
        raise ValueError(f"checkpoint {start_step} of {run.path} has no optimizer state file; cannot resume")
    return start_step


def cut_back_to_checkpoint(run: Run, cfg: TrainConfig, start_step: int) -> None:
    """Rank 0 on resume: store the new train config, drop temp files and history rows after `start_step`."""
    run_dir = run.path
    info = dict(run.info)
    info["train"] = cfg.to_dict()
    write_json_atomic(run_dir / "run.json", info)
    for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # temp files of a write cut short by a crash
        stale.unlink(missing_ok=True)
    # history rows after the checkpoint were written after it, before a crash: no loss, no duplicates
    for name in ("train.jsonl", "eval.jsonl"):
        path = run_dir / "history" / name
        if path.exists():
            write_jsonl_atomic(path, [r for r in read_jsonl(path) if r.get("step", 0) <= start_step])


def corpus_docs(
    corpus: list[str] | None, seed: int = 0, size: str = "default", val_fraction: float = 0.05
) -> tuple[list[Doc], list[Doc], dict]:
    """(train docs, val docs, corpus summary). No `corpus`: build the built-in corpus (in a temp folder).

    One folder holding train.jsonl/val.jsonl (from `moe-explorer corpus`) is used as split; anything else
    (files, folders of files; the file or folder name is the label) is split by document here.
    """
    if not corpus:
        with tempfile.TemporaryDirectory(prefix="moe-corpus-") as tmp:
            manifest = build_corpus(tmp, seed=seed, size=size)
            train, val = load_docs(tmp, "train"), load_docs(tmp, "val")
        return train, val, corpus_summary(train, val, manifest)
    if len(corpus) == 1 and (Path(corpus[0]) / "train.jsonl").is_file():
        folder = Path(corpus[0])
        train, val = load_docs(folder, "train"), load_docs(folder, "val")
        manifest = None
        if (folder / "manifest.json").is_file():
            manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        summary = corpus_summary(train, val, manifest)
        summary["path"] = str(folder)
        return train, val, summary
    docs = docs_from_paths(corpus)
    train, val = split_docs(docs, seed=seed, val_fraction=val_fraction)
    summary = corpus_summary(train, val)
    summary["paths"] = [str(p) for p in corpus]
    return train, val, summary
