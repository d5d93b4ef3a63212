"""`moe-explorer train`: flags -> ModelConfig + TrainConfig -> moe_core.training.train.

Also what torchrun launches for DDP: `torchrun --nproc_per_node 2 -m app.cli train --preset tiny --out RUN`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

from moe_core.config import ModelConfig, preset
from moe_core.run import load_run
from moe_core.training import TrainConfig, corpus_docs, shutdown_distributed, train

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
    shutdown_distributed()
    return 0
