"""Training a model into a run directory (`moe-explorer train`, app/cli/train.py, is the command line).

    train(run_dir, model_cfg, TrainConfig(steps=200), docs_train, docs_val) -> Run

Modules: config (TrainConfig), data (schedule, token windows), router_stats (hooks), distributed (DDP ranks
and device), checkpoint, run_setup (corpus, a fresh run's files, resume checks), run_lock, loop (the loop).
"""

from moe_core.training.checkpoint import CKPT_PAUSE_ENV, load_checkpoint, save_checkpoint
from moe_core.training.config import RESUME_FIXED, TrainConfig
from moe_core.training.data import batch_starts, encode_docs, lr_at, val_starts, windows
from moe_core.training.distributed import Dist, init_distributed, setup_device, shutdown_distributed
from moe_core.training.loop import StepContext, evaluate, train, train_step
from moe_core.training.router_stats import RouterStats
from moe_core.training.run_lock import LOCK_NAME, RunLock
from moe_core.training.run_setup import corpus_docs, corpus_summary, select_eval_docs

__all__ = [
    "CKPT_PAUSE_ENV",
    "LOCK_NAME",
    "RESUME_FIXED",
    "Dist",
    "RouterStats",
    "RunLock",
    "StepContext",
    "TrainConfig",
    "batch_starts",
    "corpus_docs",
    "corpus_summary",
    "encode_docs",
    "evaluate",
    "init_distributed",
    "load_checkpoint",
    "lr_at",
    "save_checkpoint",
    "select_eval_docs",
    "setup_device",
    "shutdown_distributed",
    "train",
    "train_step",
    "val_starts",
    "windows",
]
