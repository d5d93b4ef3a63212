"""The training loop: corpus -> tokenizer -> token stream -> AdamW steps -> a run directory.

One optimizer step ("step s", s = 1..steps):
    batch   = batch_size windows of seq_len+1 tokens at offsets drawn from (seed, s)   (same on resume)
    loss    = cross_entropy(logits, next tokens) + LMOutput.aux_loss                   (per micro-batch)
    AdamW step with lr(s) = warmup (linear) then cosine from lr down to min_lr, grad norm clipped
    loads   = model.pop_expert_loads()   (L_moe, E), all-reduced under DDP (global batch)
    model.update_router_biases(loads)    exactly once per optimizer step (aux-loss-free balancing)
    append one row to history/train.jsonl (rank 0 only)
Every `eval_every` steps: val loss, perplexity and MaxVio_global per layer -> history/eval.jsonl.
Every `ckpt_every` steps and at the end: a checkpoint (training/checkpoint.py).
SIGTERM/SIGINT: finish the step, checkpoint, return.

DDP: launched by torchrun (`torchrun --nproc_per_node 2 -m app.cli train ...`); each rank takes rows
rank::world of the global batch; only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from moe_core.config import ModelConfig
from moe_core.corpus import Doc
from moe_core.files import append_jsonl
from moe_core.model import MoETransformer, build_model
from moe_core.routing_stats import max_violation
from moe_core.run import Run, load_run, load_weights
from moe_core.training.checkpoint import load_checkpoint, save_checkpoint
from moe_core.training.config import TrainConfig
from moe_core.training.data import batch_starts, lr_at, val_starts, windows
from moe_core.training.distributed import Dist, setup_device
from moe_core.training.router_stats import RouterStats
from moe_core.training.run_lock import RunLock
from moe_core.training.run_setup import check_resume, cut_back_to_checkpoint, setup_run_dir


@dataclass
class StepContext:
    """Everything a training step or a validation needs, built once per run."""

    fwd: Callable  # the model as called in training: model, or its DDP / torch.compile wrapper
    model: MoETransformer  # the bare model (loads, biases, aux losses)
    optimizer: torch.optim.Optimizer
    stats: RouterStats  # router hooks on `model`
    train_ids: torch.Tensor  # (N,) int32 training token stream
    cfg: TrainConfig
    seq_len: int  # tokens per sequence
    micro: int  # sequences per micro-batch on this rank
    dist: Dist
    device: torch.device
    autocast: Callable[[], AbstractContextManager]  # bf16 autocast on CUDA, a no-op on CPU


class StopFlag:
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
    d, dev = setup_device(device)
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
            if not resume or (run_dir / "run.json").exists():  # (resuming nothing: setup_run_dir says so)
                lock.acquire()  # before any other check: two trainers racing on a fresh directory
            setup_run_dir(run_dir, model_cfg, train_cfg, docs_train, docs_val, corpus_info, resume)
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
        start_step = check_resume(run, model_cfg, train_cfg)
        if d.main:
            cut_back_to_checkpoint(run, train_cfg, start_step)
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
    micro = train_cfg.batch_size // (d.world * train_cfg.grad_accum)
    ctx = StepContext(fwd, model, optimizer, stats, train_ids, train_cfg, seq_len, micro, d, dev, autocast)

    stopper = StopFlag()
    stopper.install()
    bar = None
    if progress and d.main:
        from tqdm.auto import tqdm

        bar = tqdm(total=train_cfg.steps, initial=start_step, unit="step", dynamic_ncols=True, desc=run_dir.name)
    hist_path = run_dir / "history" / "train.jsonl"
    tokens_per_step = train_cfg.batch_size * seq_len
    step = start_step
    try:
        while step < train_cfg.steps:
            step += 1
            t0 = time.perf_counter()
            row = train_step(ctx, step)
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
                ev = evaluate(ctx, val_ids)
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


def train_step(ctx: StepContext, step: int) -> dict:
    """One optimizer step over the global batch; returns its history row (without time/tokens)."""
    model, optimizer, stats, cfg, d, dev = ctx.model, ctx.optimizer, ctx.stats, ctx.cfg, ctx.dist, ctx.device
    model.train()
    lr = lr_at(step, cfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    starts = batch_starts(cfg.seed, step, ctx.train_ids.numel(), cfg.batch_size, ctx.seq_len)
    local = starts[d.rank :: d.world]  # this rank's rows of the global batch
    stats.reset()
    lm_sum = torch.zeros((), device=dev)
    aux_sums: dict[str, torch.Tensor] = {}
    dropped = torch.zeros((), device=dev)
    for m in range(cfg.grad_accum):
        x, y = windows(ctx.train_ids, local[m * ctx.micro : (m + 1) * ctx.micro], ctx.seq_len)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        sync = nullcontext() if (not d.on or m == cfg.grad_accum - 1) else ctx.fwd.no_sync()
        with sync:
            with ctx.autocast():
                out = ctx.fwd(x)
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
    maxvio_L = max_violation(loads_LE)
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
def evaluate(ctx: StepContext, val_ids: torch.Tensor) -> dict:
    """val_loss (mean token cross-entropy), val_ppl = exp(val_loss), MaxVio_global per layer (all val batches)."""
    model, stats, cfg, d, dev = ctx.model, ctx.stats, ctx.cfg, ctx.dist, ctx.device
    model.eval()
    stats.reset()
    starts = val_starts(val_ids.numel(), cfg.eval_batches * cfg.batch_size, ctx.seq_len)
    local = starts[d.rank :: d.world]
    loss_sum = torch.zeros((), device=dev)
    count = torch.zeros((), device=dev)
    for b in range(0, local.numel(), cfg.batch_size):
        x, y = windows(val_ids, local[b : b + cfg.batch_size], ctx.seq_len)
        x, y = x.to(dev), y.to(dev)
        with ctx.autocast():
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
        "maxvio_global": max_violation(loads_LE).tolist(),
        "load": loads_LE.long().tolist(),
    }
