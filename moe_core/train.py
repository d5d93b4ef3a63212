"""The training loop: corpus -> tokenizer -> token stream -> AdamW steps -> a run directory.

One optimizer step ("step s", s = 1..steps):
    batch   = batch_size windows of seq_len+1 tokens at offsets drawn from (seed, s)   (same on resume)
    loss    = cross_entropy(logits, next tokens) + LMOutput.aux_loss                   (per micro-batch)
    AdamW step with lr(s) = warmup (linear) then cosine from lr down to min_lr, grad norm clipped
    loads   = model.pop_expert_loads()   (L_moe, E), all-reduced under DDP (global batch)
    model.update_router_biases(loads)    exactly once per optimizer step (aux-loss-free balancing)
    append one row to history/train.jsonl (rank 0 only)
Every `eval_every` steps: val loss, perplexity and MaxVio_global per layer -> history/eval.jsonl.
Every `ckpt_every` steps and at the end: state file, then weights file (both atomic; weights last, so a
weights file means the checkpoint is complete). SIGTERM/SIGINT: finish the step, checkpoint, return.

DDP: launched by torchrun (env RANK/WORLD_SIZE), gloo on CPU / nccl on CUDA; each rank takes rows
rank::world of the global batch; only rank 0 writes files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from moe_core.config import ModelConfig, preset
from moe_core.corpus import Doc, build_corpus, docs_from_paths, load_docs, split_docs
from moe_core.files import append_jsonl, read_jsonl, write_json_atomic, write_jsonl_atomic
from moe_core.model import MoETransformer, build_model
from moe_core.run import (
    RUN_FORMAT,
    Run,
    check_state_dict,
    load_run,
    load_weights,
    save_weights,
    state_path,
    weights_path,
)
from moe_core.tokenizer import eot_id, save_tokenizer, train_tokenizer


@dataclass
class TrainConfig:
    steps: int = 2000  # optimizer steps in the whole run
    batch_size: int = 32  # sequences per optimizer step, over all ranks and micro-batches (global batch)
    seq_len: int = 0  # tokens per sequence; 0 = the model's block_size (must be <= block_size)
    grad_accum: int = 1  # micro-batches per optimizer step (the bias still updates once per step)
    lr: float = 3e-3  # peak learning rate after warmup
    min_lr: float = 3e-4  # learning rate at the end of the cosine decay
    warmup_steps: int = 100  # linear warmup from lr/warmup_steps to lr
    weight_decay: float = 0.1  # AdamW decay on matrices (not on norms)
    beta1: float = 0.9  # AdamW betas
    beta2: float = 0.95
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    eval_every: int = 200  # validate every N steps (and at the last step); 0 = only at the end
    eval_batches: int = 8  # validation batches of batch_size sequences (fixed windows of the val stream)
    ckpt_every: int = 500  # checkpoint every N steps (and at the last step); 0 = only at the end
    keep_states: int = 1  # optimizer-state files kept for resume (older ones deleted); 0 keeps all
    seed: int = 0  # seeds the init, the data order (batch offsets from (seed, step)) and the tokenizer split
    compile: bool = False  # torch.compile the model
    val_fraction: float = 0.05  # share of docs held out when the corpus is given as plain files
    vocab_size: int = 0  # tokenizer vocabulary; 0 = the model's vocab_size (must be <= it)
    eval_docs_per_label: int = 40  # held-out docs per label written to eval/docs.jsonl for routing traces
    eval_doc_chars: int = 1500  # each eval doc is cut to about this many characters

    def validate(self, model_cfg: ModelConfig | None = None) -> None:
        for name in ("steps", "batch_size", "grad_accum", "eval_batches"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        for name in ("seq_len", "warmup_steps", "eval_every", "ckpt_every", "keep_states", "vocab_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"train.{name} must be an integer >= 0, got {value!r}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or value != value:
                raise ValueError(f"train.{name} must be a number >= 0, got {value!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"train.min_lr ({self.min_lr}) must be <= train.lr ({self.lr})")
        if not 0 <= self.val_fraction < 1:
            raise ValueError(f"train.val_fraction must be in [0, 1), got {self.val_fraction}")
        if model_cfg is not None:
            if self.seq_len > model_cfg.block_size:
                raise ValueError(f"train.seq_len ({self.seq_len}) must be <= block_size ({model_cfg.block_size})")
            if (self.vocab_size or model_cfg.vocab_size) < 257:
                raise ValueError(
                    f"vocab_size {self.vocab_size or model_cfg.vocab_size} is too small for the byte-level "
                    "tokenizer (needs >= 257); pass --vocab-size 320 or more"
                )
            if self.vocab_size > model_cfg.vocab_size:
                raise ValueError(
                    f"train.vocab_size ({self.vocab_size}) must be <= the model's vocab_size ({model_cfg.vocab_size})"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown field(s) in train config: {', '.join(unknown)}")
        return cls(**data)


CKPT_PAUSE_ENV = "MOE_EXPLORER_TEST_CKPT_PAUSE"  # seconds to sleep between a checkpoint's two files (tests)

# Fields that must not change on resume (they change the data or the optimisation, not just logging).
RESUME_FIXED = (
    "batch_size",
    "seq_len",
    "grad_accum",
    "lr",
    "min_lr",
    "warmup_steps",
    "weight_decay",
    "beta1",
    "beta2",
    "grad_clip",
    "seed",
    "vocab_size",
    "eval_batches",
)


# ---------------------------------------------------------------------------------------------------------
# schedule and data


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (1-based): linear warmup, then cosine from lr to min_lr."""
    if cfg.warmup_steps and step <= cfg.warmup_steps:
        return cfg.lr * step / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def encode_docs(tok, docs: list[Doc]) -> torch.Tensor:
    """One int32 stream: <eot> doc0 <eot> doc1 ... (the EOT token separates documents)."""
    eot = eot_id(tok)
    ids: list[int] = []
    for enc in tok.encode_batch([d.text for d in docs]):
        ids.append(eot)
        ids.extend(enc.ids)
    return torch.tensor(ids, dtype=torch.int32)


def batch_starts(seed: int, step: int, n_tokens: int, batch_size: int, seq_len: int) -> torch.Tensor:
    """(batch_size,) window offsets of step `step`, a pure function of (seed, step): resume = same order."""
    if n_tokens < seq_len + 2:
        raise ValueError(f"token stream too short ({n_tokens} tokens) for seq_len {seq_len}; use a bigger corpus")
    g = torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + 12_345) % (2**63))
    return torch.randint(0, n_tokens - seq_len, (batch_size,), generator=g)


def val_starts(n_tokens: int, n_windows: int, seq_len: int) -> torch.Tensor:
    """Fixed, evenly spaced validation windows over the val stream (the same at every validation)."""
    if n_tokens < seq_len + 2:
        raise ValueError(f"validation stream too short ({n_tokens} tokens) for seq_len {seq_len}")
    return torch.linspace(0, n_tokens - seq_len - 1, n_windows).long()


def windows(tokens: torch.Tensor, starts: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-token targets, each (B, seq_len) long."""
    idx_BS = starts[:, None] + torch.arange(seq_len + 1)
    chunk = tokens[idx_BS].long()
    return chunk[:, :-1], chunk[:, 1:]


def max_violation(load_E: torch.Tensor) -> float:
    """MaxVio = (max_i load_i - mean load) / mean load (0 when nothing was routed)."""
    mean = load_E.float().mean()
    return float((load_E.max() - mean) / mean) if mean > 0 else 0.0


# ---------------------------------------------------------------------------------------------------------
# router statistics (forward hooks, no host syncs)


class RouterStats:
    """Forward hooks on every `layer.router`: mean router entropy (training) and loads (validation).

    entropy = mean over tokens of -sum_i p_i log p_i with p = s / sum_i s_i (router scores normalised).
    """

    def __init__(self, model: MoETransformer):
        self.n_layers = len(model.moe_layers)
        self.n_experts = model.config.moe.n_experts
        self.reset()
        self.handles = [layer.router.register_forward_hook(self._hook(i)) for i, layer in enumerate(model.moe_layers)]

    def reset(self) -> None:
        self.entropy_sum: list[torch.Tensor | float] = [0.0] * self.n_layers
        self.forwards = 0
        self.loads: list[torch.Tensor | float] = [0.0] * self.n_layers

    def _hook(self, i: int):
        def hook(module, inputs, out) -> None:
            with torch.no_grad():
                scores_TE = out.scores_TE.detach().float()
                p_TE = scores_TE / scores_TE.sum(dim=-1, keepdim=True).clamp_min(1e-20)
                self.entropy_sum[i] = self.entropy_sum[i] + -(p_TE * p_TE.clamp_min(1e-20).log()).sum(-1).mean()
                if not module.training:  # validation: count loads here (the layer only counts in training)
                    flat = out.topk_idx_TK.reshape(-1)
                    counts = torch.zeros(self.n_experts, device=flat.device).scatter_add_(
                        0, flat, torch.ones_like(flat, dtype=torch.float32)
                    )
                    self.loads[i] = self.loads[i] + counts
            if i == 0:
                self.forwards += 1

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


# ---------------------------------------------------------------------------------------------------------
# distributed


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> Dist:
    """Init the process group when launched under torchrun (env RANK/WORLD_SIZE); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)  # nccl needs each rank on its own GPU before init
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local_rank)


def resolve_device(device: str, d: Dist) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu or cuda")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("device 'cuda' requested but CUDA is not available")
        if device == "cuda":
            device = f"cuda:{d.local_rank}"
    return torch.device(device)


# ---------------------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(
    run_dir: Path,
    step: int,
    model: MoETransformer,
    optimizer: torch.optim.Optimizer,
    train_cfg: TrainConfig,
    keep_states: int,
) -> None:
    """State file (optimizer, schedule position, RNG, data position) first, then the weights file."""
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    meta = {
        "step": str(step),
        "param_groups": sd["param_groups"],
        "optim_scalars": scalars,
        "scheduler": {"step": step, "kind": "warmup_cosine"},
        "data": {"seed": train_cfg.seed, "next_step": step + 1},  # batches are a function of (seed, step)
        "train": train_cfg.to_dict(),
    }
    save_weights(state_path(run_dir, step), tensors, meta)
    if os.environ.get(CKPT_PAUSE_ENV):  # crash tests: a window to SIGKILL between the two files
        time.sleep(float(os.environ[CKPT_PAUSE_ENV]))
    save_weights(weights_path(run_dir, step), model.state_dict(), {"config": model.config.to_dict(), "step": str(step)})
    if keep_states > 0:  # old optimizer states are only needed for resume, and resume takes the latest
        states = sorted((run_dir / "checkpoints").glob("step_*.state.safetensors"))
        for old in states[:-keep_states]:
            old.unlink(missing_ok=True)


def load_checkpoint(run: Run, step: int, model: MoETransformer, optimizer: torch.optim.Optimizer) -> None:
    tensors, _ = load_weights(run.weights_path(step))
    expected = model.state_dict()
    check_state_dict(expected, tensors, str(run.weights_path(step)))
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()})
    state, meta = load_weights(run.state_path(step))
    opt_state: dict[int, dict[str, Any]] = {}
    for name, value in state.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            opt_state.setdefault(int(pid), {})[key] = value
    for name, value in json.loads(meta.get("optim_scalars", "{}")).items():
        pid, key = name.split(".", 1)
        opt_state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": json.loads(meta["param_groups"])})
    if "rng.torch" in state:
        torch.set_rng_state(state["rng.torch"])
    if "rng.cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["rng.cuda"])


# ---------------------------------------------------------------------------------------------------------
# run setup


def corpus_summary(docs_train: list[Doc], docs_val: list[Doc], manifest: dict | None = None) -> dict:
    """Sizes per label of each split (+ the corpus manifest's seed/size/sources when built-in)."""

    def sizes(docs: list[Doc]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for d in docs:
            entry = out.setdefault(d.label, {"docs": 0, "chars": 0})
            entry["docs"] += 1
            entry["chars"] += len(d.text)
        return dict(sorted(out.items()))

    summary = {"train": sizes(docs_train), "val": sizes(docs_val), "labels": sorted({d.label for d in docs_train})}
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


def _prepare_new_run(
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


def _check_resume_config(run: Run, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    if run.config.to_dict() != model_cfg.to_dict():
        raise ValueError(f"model config differs from the one in {run.path / 'run.json'}; cannot resume")
    stored = run.info.get("train", {})
    for name in RESUME_FIXED:
        if name in stored and stored[name] != getattr(cfg, name):
            raise ValueError(f"train.{name} is {getattr(cfg, name)!r} but the run used {stored[name]!r}; cannot resume")


# ---------------------------------------------------------------------------------------------------------
# one trainer per run directory


LOCK_NAME = ".lock"  # RUN/.lock: flock-ed by the process training the run (the kernel drops it if that dies)


class RunLock:
    """An exclusive, non-blocking `fcntl.flock` on RUN/.lock, so two trainers never write one run directory.

    The file holds the owner's PID (for the message only): the lock itself is the flock, which the kernel
    releases when the process exits or is killed, so a stale file never blocks a later resume.
    """

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # Windows: no flock; training still works, without the guard
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OSError(f"cannot write to run directory {self.path.parent}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ValueError(
                f"run {self.path.parent.name} is already being trained by process {owner} ({self.path.parent})"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None


# ---------------------------------------------------------------------------------------------------------
# the loop


class _StopFlag:
    """Set by SIGTERM/SIGINT: finish the current step, checkpoint, and return."""

    def __init__(self) -> None:
        self.stop = False
        self.old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self.old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling
                pass

    def _handle(self, signum, frame) -> None:
        if self.stop and signum == signal.SIGINT:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.stop = True

    def restore(self) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)


def _setup_run_dir(
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
    _prepare_new_run(run_dir, model_cfg, train_cfg, docs_train, docs_val, info)


def train(
    run_dir: str | os.PathLike,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    docs_train: list[Doc] | None,
    docs_val: list[Doc] | None,
    resume: bool = False,
    device: str = "auto",
    progress: bool = True,
    *,
    corpus_info: dict | None = None,
    stop_at_step: int | None = None,
) -> Run:
    """Train into `run_dir` and return the run. On resume the docs may be None (tokens are cached in the run).

    `stop_at_step` stops after that step with a checkpoint, as if interrupted (for tests and schedules).
    Rank 0 holds RUN/.lock while it trains: a second trainer on the same run gets a ValueError.
    """
    lock = RunLock(Path(run_dir))
    try:
        return _train(
            Path(run_dir), model_cfg, train_cfg, docs_train, docs_val, resume, device, progress,
            corpus_info=corpus_info, stop_at_step=stop_at_step, lock=lock,
        )  # fmt: skip
    finally:
        lock.release()


def _train(
    run_dir: Path,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    docs_train: list[Doc] | None,
    docs_val: list[Doc] | None,
    resume: bool,
    device: str,
    progress: bool,
    *,
    corpus_info: dict | None,
    stop_at_step: int | None,
    lock: RunLock,
) -> Run:
    train_cfg.validate(model_cfg)
    d = init_distributed(
        "cuda" if str(device).startswith("cuda") or (device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    dev = resolve_device(device, d)
    seq_len = train_cfg.seq_len or model_cfg.block_size
    if train_cfg.batch_size % (d.world * train_cfg.grad_accum):
        raise ValueError(
            f"batch_size ({train_cfg.batch_size}) must be divisible by world size x grad_accum "
            f"({d.world} x {train_cfg.grad_accum})"
        )

    # ---- the run directory (rank 0 writes; others wait) ----
    start_step = 0
    failure: Exception | None = None
    if d.main:  # rank 0 checks and prepares the run directory; the others learn the outcome from a broadcast
        try:
            if not resume or (run_dir / "run.json").exists():  # (resuming nothing: _setup_run_dir says so)
                lock.acquire()  # before any other check: two trainers racing on a fresh directory
            _setup_run_dir(run_dir, model_cfg, train_cfg, docs_train, docs_val, corpus_info, resume)
        except (ValueError, OSError) as exc:
            failure = exc
    if d.on:
        status = torch.tensor([0 if failure is None else 1], device=dev if dev.type == "cuda" else "cpu")
        dist.broadcast(status, src=0)
        if status.item() and failure is None:
            raise ValueError("rank 0 could not prepare the run directory (see its error)")
    if failure is not None:
        raise failure
    run = load_run(run_dir)
    if resume:
        _check_resume_config(run, model_cfg, train_cfg)
        start_step = run.latest_step() or 0
        if start_step and not run.state_path(start_step).is_file():
            raise ValueError(f"checkpoint {start_step} of {run_dir} has no optimizer state file; cannot resume")
        if d.main:
            info = dict(run.info)
            info["train"] = train_cfg.to_dict()
            write_json_atomic(run_dir / "run.json", info)
            for stale in (run_dir / "checkpoints").glob(".*.tmp"):  # temp files of a write cut short by a crash
                stale.unlink(missing_ok=True)
            # drop history rows after the checkpoint (written after it, before a crash): no loss, no duplicates
            for name in ("train.jsonl", "eval.jsonl"):
                path = run_dir / "history" / name
                if path.exists():
                    write_jsonl_atomic(path, [r for r in read_jsonl(path) if r.get("step", 0) <= start_step])
        if d.on:
            dist.barrier()

    tokens, _ = load_weights(run_dir / "data" / "tokens.safetensors")
    train_ids, val_ids = tokens["train"], tokens["val"]

    # ---- model and optimizer (same init on every rank; DDP also broadcasts it) ----
    torch.manual_seed(train_cfg.seed)
    model = build_model(model_cfg).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    fused_ok = dev.type == "cuda"
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": train_cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=train_cfg.lr,
        betas=(train_cfg.beta1, train_cfg.beta2),
        **({"fused": True} if fused_ok else {}),
    )
    if start_step:
        load_checkpoint(run, start_step, model, optimizer)
    if d.on:  # per-rank dropout stream, derived from (seed, step, rank) so it is reproducible on resume
        torch.manual_seed(train_cfg.seed * 10_007 + start_step * 101 + d.rank)
    stats = RouterStats(model)
    fwd: torch.nn.Module = model
    if d.on:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # biases stay in sync through the all-reduced loads; broadcasting buffers would also clobber load_accum
        fwd = DDP(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            broadcast_buffers=False,
            find_unused_parameters=model_cfg.moe.dispatch == "loop",
        )
    if train_cfg.compile:
        fwd = torch.compile(fwd)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if dev.type == "cuda" else nullcontext

    stopper = _StopFlag()
    stopper.install()
    bar = None
    if progress and d.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=train_cfg.steps, initial=start_step, unit="step", dynamic_ncols=True, desc=run_dir.name)
    hist_path = run_dir / "history" / "train.jsonl"
    tokens_per_step = train_cfg.batch_size * seq_len
    micro = train_cfg.batch_size // (d.world * train_cfg.grad_accum)
    step = start_step
    try:
        while step < train_cfg.steps:
            step += 1
            t0 = time.perf_counter()
            row = _train_step(
                fwd, model, optimizer, stats, train_ids, step, train_cfg, seq_len, micro, d, dev, autocast
            )
            row["time"] = time.time()
            dt = time.perf_counter() - t0
            row["tokens"] = step * tokens_per_step
            row["tokens_per_s"] = tokens_per_step / dt if dt > 0 else 0.0
            if d.main:
                append_jsonl(hist_path, row)
            last = step == train_cfg.steps
            stop = stopper.stop or (stop_at_step is not None and step >= stop_at_step)
            if d.on:  # every rank must stop at the same step
                flag = torch.tensor([1.0 if stop else 0.0], device=dev)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop = bool(flag.item())
            if last or stop or (train_cfg.eval_every and step % train_cfg.eval_every == 0):
                ev = evaluate(model, stats, val_ids, train_cfg, seq_len, d, dev, autocast)
                if d.main:
                    append_jsonl(run_dir / "history" / "eval.jsonl", {"step": step, **ev})
            if last or stop or (train_cfg.ckpt_every and step % train_cfg.ckpt_every == 0):
                if d.main:
                    save_checkpoint(run_dir, step, model, optimizer, train_cfg, train_cfg.keep_states)
                if d.on:
                    dist.barrier()
            if bar is not None:
                bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}", refresh=False)
                bar.update(1)
            if stop:
                if bar is not None:
                    bar.write(f"stopped after step {step}; checkpoint written, continue with --resume")
                break
    finally:
        stopper.restore()
        stats.remove()
        if bar is not None:
            bar.close()
    return load_run(run_dir)


def _train_step(
    fwd,
    model: MoETransformer,
    optimizer,
    stats: RouterStats,
    train_ids: torch.Tensor,
    step: int,
    cfg: TrainConfig,
    seq_len: int,
    micro: int,
    d: Dist,
    dev: torch.device,
    autocast,
) -> dict:
    """One optimizer step over the global batch; returns its history row (without time/tokens)."""
    model.train()
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    starts = batch_starts(cfg.seed, step, train_ids.numel(), cfg.batch_size, seq_len)
    local = starts[d.rank :: d.world]  # this rank's rows of the global batch
    stats.reset()
    lm_sum = torch.zeros((), device=dev)
    aux_sums: dict[str, torch.Tensor] = {}
    dropped = torch.zeros((), device=dev)
    for m in range(cfg.grad_accum):
        x, y = windows(train_ids, local[m * micro : (m + 1) * micro], seq_len)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        sync = nullcontext() if (not d.on or m == cfg.grad_accum - 1) else fwd.no_sync()
        with sync:
            with autocast():
                out = fwd(x)
                lm = F.cross_entropy(out.logits.float().view(-1, out.logits.size(-1)), y.reshape(-1))
            ((lm + out.aux_loss) / cfg.grad_accum).backward()
        lm_sum += lm.detach()
        for layer in model.moe_layers:
            for name, value in layer.aux_losses.items():
                aux_sums[name] = aux_sums.get(name, 0.0) + value.detach().float()
            dropped += layer.dropped.to(dev)
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loads_LE = model.pop_expert_loads()  # (L_moe, E), this rank's micro-batches
    names = sorted(aux_sums)
    # one all-reduce for the step's scalars: [lm, aux..., entropy per layer..., dropped] and the loads
    scalars = torch.stack(
        [lm_sum / cfg.grad_accum]
        + [aux_sums[n] / cfg.grad_accum for n in names]
        + [e / max(1, stats.forwards) if torch.is_tensor(e) else torch.zeros((), device=dev) for e in stats.entropy_sum]
        + [dropped]
    ).float()
    if d.on:
        dist.all_reduce(loads_LE)
        dist.all_reduce(scalars)
        scalars[:-1] /= d.world  # means over ranks; dropped stays a sum
    model.update_router_biases(loads_LE)  # exactly once per optimizer step, from the global loads
    # one device -> host copy for the whole row (a single sync per step)
    L, E = loads_LE.shape
    mean_L = loads_LE.mean(dim=1)
    maxvio_L = torch.where(mean_L > 0, (loads_LE.max(dim=1).values - mean_L) / mean_L.clamp_min(1e-20), 0.0)
    flat = torch.cat([scalars, loads_LE.flatten(), model.router_biases().flatten().float(), maxvio_L]).tolist()
    n_aux = len(names)
    values, rest = flat[: scalars.numel()], flat[scalars.numel() :]
    return {
        "step": step,
        "loss": values[0],
        "lr": lr,
        "aux": dict(zip(names, values[1 : 1 + n_aux])),
        "load": [[int(round(c)) for c in rest[i * E : (i + 1) * E]] for i in range(L)],
        "bias": [rest[L * E + i * E : L * E + (i + 1) * E] for i in range(L)],  # after this step's update
        "maxvio_batch": rest[2 * L * E :],
        "router_entropy": values[1 + n_aux : 1 + n_aux + L],
        "dropped": int(round(values[-1])),
    }


@torch.no_grad()
def evaluate(
    model: MoETransformer,
    stats: RouterStats,
    val_ids: torch.Tensor,
    cfg: TrainConfig,
    seq_len: int,
    d: Dist,
    dev: torch.device,
    autocast,
) -> dict:
    """val_loss (mean token cross-entropy), val_ppl = exp(val_loss), MaxVio_global per layer (all val batches)."""
    model.eval()
    stats.reset()
    starts = val_starts(val_ids.numel(), cfg.eval_batches * cfg.batch_size, seq_len)
    local = starts[d.rank :: d.world]
    loss_sum = torch.zeros((), device=dev)
    count = torch.zeros((), device=dev)
    for b in range(0, local.numel(), cfg.batch_size):
        x, y = windows(val_ids, local[b : b + cfg.batch_size], seq_len)
        x, y = x.to(dev), y.to(dev)
        with autocast():
            logits = model(x).logits
        loss_sum += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1), reduction="sum")
        count += y.numel()
    E = model.config.moe.n_experts
    loads_LE = torch.stack([ld if torch.is_tensor(ld) else torch.zeros(E, device=dev) for ld in stats.loads])
    totals = torch.cat([loss_sum.view(1), count.view(1), loads_LE.view(-1)])
    if d.on:
        dist.all_reduce(totals)
    model.train()
    val_loss = float(totals[0] / totals[1])
    loads_LE = totals[2:].view(-1, E)
    return {
        "val_loss": val_loss,
        "val_ppl": math.exp(min(val_loss, 50.0)),
        "maxvio_global": [max_violation(load_E) for load_E in loads_LE],
        "load": loads_LE.long().tolist(),
    }


# ---------------------------------------------------------------------------------------------------------
# convenience: corpus from the CLI's --corpus (or the built-in one)


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


# ---------------------------------------------------------------------------------------------------------
# CLI: moe-explorer train

BALANCE_CHOICES = ("aux_free", "switch", "seq", "comp", "zloss", "none")
DEFAULT_ALPHAS = {"switch": 1e-2, "seq": 1e-4, "comp": 1e-2, "zloss": 1e-3}  # used when --alpha is not given


def add_train_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="default", help="model preset: seed, default, small, tiny")
    parser.add_argument("--out", required=True, help="run directory to create (or continue with --resume)")
    parser.add_argument("--steps", type=int, help=f"optimizer steps (default {TrainConfig.steps})")
    parser.add_argument(
        "--balance",
        nargs="+",
        choices=BALANCE_CHOICES,
        help="balancing strategies to enable (all others off); default: the preset's",
    )
    parser.add_argument("--bias-rate", type=float, help="aux-loss-free bias update rate u (default 1e-3)")
    parser.add_argument(
        "--alpha",
        type=float,
        help="weight of the chosen aux losses (defaults: "
        + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_ALPHAS.items())
        + ")",
    )
    parser.add_argument("--experts", type=int, help="routed experts per MoE layer")
    parser.add_argument("--top-k", type=int, help="experts per token")
    parser.add_argument("--vocab-size", type=int, help="model and tokenizer vocabulary size")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--corpus", nargs="+", help="corpus folder (from `moe-explorer corpus`) or text files/folders")
    parser.add_argument(
        "--corpus-size",
        choices=("small", "default"),
        default="default",
        help="size of the built-in corpus when --corpus is not given",
    )
    parser.add_argument("--batch-size", type=int, help=f"sequences per step (default {TrainConfig.batch_size})")
    parser.add_argument("--seq-len", type=int, help="tokens per sequence (default: block_size)")
    parser.add_argument("--lr", type=float, help=f"peak learning rate (default {TrainConfig.lr})")
    parser.add_argument("--seed", type=int, help="random seed (default 0)")
    parser.add_argument("--eval-every", type=int, help=f"validate every N steps (default {TrainConfig.eval_every})")
    parser.add_argument("--ckpt-every", type=int, help=f"checkpoint every N steps (default {TrainConfig.ckpt_every})")
    parser.add_argument("--warmup", type=int, help=f"warmup steps (default {TrainConfig.warmup_steps})")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    data = preset(args.preset).to_dict()
    moe = data["moe"]
    if args.experts is not None:
        moe["n_experts"] = args.experts
    if args.top_k is not None:
        moe["top_k"] = args.top_k
    if args.vocab_size is not None:
        data["vocab_size"] = args.vocab_size
    bal = moe["balance"]
    if args.balance:
        chosen = set(args.balance)
        if "none" in chosen and len(chosen) > 1:
            raise ValueError("--balance none cannot be combined with other strategies")
        bal["bias_rate"] = (args.bias_rate if args.bias_rate is not None else 1e-3) if "aux_free" in chosen else 0.0
        for name, key in (
            ("switch", "switch_alpha"),
            ("seq", "seq_alpha"),
            ("comp", "comp_alpha"),
            ("zloss", "z_alpha"),
        ):
            bal[key] = (args.alpha if args.alpha is not None else DEFAULT_ALPHAS[name]) if name in chosen else 0.0
    elif args.bias_rate is not None:
        bal["bias_rate"] = args.bias_rate
    return ModelConfig.from_dict(data)


def train_config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    cfg = dataclasses.replace(base) if base else TrainConfig()
    for arg, field in (
        ("steps", "steps"),
        ("batch_size", "batch_size"),
        ("seq_len", "seq_len"),
        ("lr", "lr"),
        ("seed", "seed"),
        ("eval_every", "eval_every"),
        ("ckpt_every", "ckpt_every"),
        ("warmup", "warmup_steps"),
    ):
        value = getattr(args, arg, None)
        if value is not None:
            setattr(cfg, field, value)
    if getattr(args, "compile", False):
        cfg.compile = True
    if cfg.warmup_steps >= cfg.steps and base is None:
        cfg.warmup_steps = max(0, cfg.steps // 10)  # short runs: keep a cosine phase
    return cfg


def run_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    progress = not getattr(args, "quiet", False)
    if args.resume:
        run = load_run(out) if (out / "run.json").exists() else None
        if run is None:
            raise ValueError(f"nothing to resume: {out} has no run.json")
        base = TrainConfig.from_dict(run.info.get("train", {}))
        # only the length and the logging/checkpoint cadence may change on resume
        for arg, field in (
            ("batch_size", "batch_size"),
            ("seq_len", "seq_len"),
            ("lr", "lr"),
            ("seed", "seed"),
            ("warmup", "warmup_steps"),
        ):
            value = getattr(args, arg, None)
            if value is not None and value != getattr(base, field):
                raise ValueError(
                    f"--{arg.replace('_', '-')} cannot change on --resume (the run used {getattr(base, field)})"
                )
        cfg = train_config_from_args(args, base)
        if run.latest_step() is not None and run.latest_step() >= cfg.steps:
            print(f"{out}: already trained to step {run.latest_step()} (pass a larger --steps to continue)")
            return 0
        run = train(out, run.config, cfg, None, None, resume=True, device=args.device, progress=progress)
    else:
        model_cfg = model_config_from_args(args)
        cfg = train_config_from_args(args)
        cfg.validate(model_cfg)
        if (out / "run.json").exists():
            raise ValueError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        train_docs, val_docs, summary = corpus_docs(
            args.corpus, seed=cfg.seed, size=args.corpus_size, val_fraction=cfg.val_fraction
        )
        run = train(
            out, model_cfg, cfg, train_docs, val_docs, device=args.device, progress=progress, corpus_info=summary
        )
    if int(os.environ.get("RANK", "0")) == 0:
        hist = run.history()
        last = hist[-1] if hist else {}
        evals = run.eval_history()
        val = f", val loss {evals[-1]['val_loss']:.3f}" if evals else ""
        print(
            f"{out}: step {last.get('step', 0)}, loss {last.get('loss', float('nan')):.3f}{val}; "
            f"checkpoints {run.checkpoints()}"
        )
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m moe_core.train ...` (what torchrun launches): the same options as `moe-explorer train`."""
    parser = argparse.ArgumentParser(prog="moe_core.train")
    add_train_args(parser)
    try:
        return run_train(parser.parse_args(argv))
    except (ValueError, OSError) as exc:
        print(f"moe_core.train: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # torchrun --nproc_per_node 2 -m moe_core.train --preset tiny --out RUN
    sys.exit(main())
