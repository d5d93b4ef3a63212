"""A run directory: one training run's config, tokenizer, checkpoints and history (layout in docs/ARCHITECTURE.md).

```
RUN/run.json                                  {"format": "moe-explorer-run/1", "name", "model", "train", ...}
RUN/tokenizer.json
RUN/checkpoints/step_000500.safetensors       weights; metadata {"config": model JSON, "step": "500"}
RUN/checkpoints/step_000500.state.safetensors optimizer/scheduler/RNG/data position (for resume)
RUN/history/train.jsonl, RUN/history/eval.jsonl   append-only JSON lines; a torn last line is ignored
RUN/eval/docs.jsonl, RUN/eval/trace_step_000500.parquet
```
Files are written atomically (temp file in the same folder, fsync, `os.replace`), so a reader never sees
half a checkpoint: a weights file that exists is complete. Weights are safetensors only, never pickle.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from moe_core.config import ModelConfig
from moe_core.files import atomic_write, read_jsonl

if TYPE_CHECKING:  # only for annotations: keep `import moe_core.run` light
    from tokenizers import Tokenizer

    from moe_core.corpus import Doc
    from moe_core.model import MoETransformer

RUN_FORMAT = "moe-explorer-run/1"
RUN_FIELDS = ("format", "name", "model", "train", "corpus", "tokenizer", "versions", "balance", "created")
_WEIGHTS_RE = re.compile(r"^step_(\d+)\.safetensors$")


# ---------------------------------------------------------------------------------------------------------
# paths


def weights_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.safetensors"


def state_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.state.safetensors"


def resolve_run_dir(root: str | os.PathLike, name: str) -> Path:
    """The folder of run `name` inside `root`, resolved; ValueError when the name could leave `root`.

    `name` comes from a user (the app's Train page, a query parameter): it must be a plain relative path
    (no absolute path, no `..`, no NUL) whose resolved location, symlinks followed, stays inside `root`.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError("the run name is empty")
    if "\0" in name:
        raise ValueError("the run name contains a NUL character")
    rel = Path(name)
    if rel.is_absolute() or name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise ValueError(f"run name {name!r} is an absolute path; give a name inside the runs folder")
    if ".." in rel.parts or ".." in name.replace("\\", "/").split("/"):
        raise ValueError(f"run name {name!r} contains '..'; give a name inside the runs folder")
    base = Path(root).resolve()
    path = (base / rel).resolve()  # follows symlinks, also dangling ones
    if path == base or not path.is_relative_to(base):
        raise ValueError(f"run name {name!r} points outside the runs folder {base} (through a symlink?)")
    return path


def list_runs(root: str | os.PathLike) -> list[Path]:
    """Run directories at `root` itself and one or two folder levels below it, sorted by path."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = {p.parent for pattern in ("run.json", "*/run.json", "*/*/run.json") for p in root.glob(pattern)}
    return sorted(p for p in found if p.is_dir())


# ---------------------------------------------------------------------------------------------------------
# safetensors weights


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict) -> None:
    """Save tensors as safetensors, atomically. Metadata values that are not str are stored as JSON text."""
    tensors = {name: t.detach().to("cpu").contiguous() for name, t in state_dict.items()}
    meta = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on CPU, metadata str -> str). ValueError if missing, not safetensors, or truncated."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises its own error type (header, size, bounds problems)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not a valid safetensors file (corrupt, truncated or pickle?): {detail}") from None
    return tensors, metadata


def check_state_dict(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor], where: str) -> None:
    """ValueError naming missing/unexpected keys or the first shape mismatch between two state dicts."""
    missing = sorted(set(expected) - set(got))
    unexpected = sorted(set(got) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {', '.join(missing[:5])}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {', '.join(unexpected[:5])}")
        raise ValueError(f"{where} does not match the model config: {'; '.join(parts)}")
    for name, ref in expected.items():
        if tuple(got[name].shape) != tuple(ref.shape):
            raise ValueError(
                f"{where} does not match the model config: {name} has shape {tuple(got[name].shape)}, "
                f"the config needs {tuple(ref.shape)}"
            )


# ---------------------------------------------------------------------------------------------------------
# the run


class Run:
    """A run directory opened read-only. Build it with `load_run(path)`."""

    def __init__(self, path: Path, info: dict, config: ModelConfig):
        self.path = path
        self.info = info  # the parsed run.json
        self.config = config
        self.name: str = str(info.get("name") or path.name)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, checkpoints={self.checkpoints()})"

    def weights_path(self, step: int) -> Path:
        return weights_path(self.path, step)

    def state_path(self, step: int) -> Path:
        return state_path(self.path, step)

    def checkpoints(self) -> list[int]:
        """Sorted steps that have a weights file (written last, atomically, so its presence = complete)."""
        folder = self.path / "checkpoints"
        if not folder.is_dir():
            return []
        steps = [int(m.group(1)) for p in folder.iterdir() if (m := _WEIGHTS_RE.match(p.name)) and p.is_file()]
        return sorted(steps)

    def latest_step(self) -> int | None:
        steps = self.checkpoints()
        return steps[-1] if steps else None

    def load_model(self, step: int | None = None, device: str | torch.device = "cpu") -> MoETransformer:
        """The model at checkpoint `step` (latest if None), in eval mode on `device`."""
        from moe_core.model import build_model

        steps = self.checkpoints()
        if not steps:
            raise ValueError(f"run {self.path} has no checkpoints yet")
        if step is None:
            step = steps[-1]
        if step not in steps:
            raise ValueError(f"run {self.path} has no checkpoint at step {step}; available: {steps}")
        path = self.weights_path(step)
        tensors, _ = load_weights(path)
        model = build_model(self.config)
        expected = model.state_dict()
        check_state_dict(expected, tensors, str(path))
        model.load_state_dict({name: t.to(expected[name].dtype) for name, t in tensors.items()}, strict=True)
        return model.to(device).eval()

    def tokenizer(self) -> Tokenizer:
        from moe_core.tokenizer import load_tokenizer

        return load_tokenizer(self.path / "tokenizer.json")

    def history(self) -> list[dict]:
        """history/train.jsonl: one row per optimizer step (see docs/ARCHITECTURE.md)."""
        return read_jsonl(self.path / "history" / "train.jsonl")

    def eval_history(self) -> list[dict]:
        """history/eval.jsonl: one row per validation."""
        return read_jsonl(self.path / "history" / "eval.jsonl")

    def eval_docs(self) -> list[Doc]:
        """eval/docs.jsonl: held-out labelled docs for routing traces."""
        from moe_core.corpus import Doc

        docs = []
        for row in read_jsonl(self.path / "eval" / "docs.jsonl"):
            docs.append(Doc(str(row["text"]), str(row["label"]), str(row.get("source", "")), int(row["doc_id"])))
        return docs

    def trace_path(self, step: int) -> Path:
        return self.path / "eval" / f"trace_step_{step:06d}.parquet"


def load_run(path: str | os.PathLike) -> Run:
    """Open a run directory; ValueError naming the problem if it is not a valid run."""
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"not a run directory (no such folder): {path}")
    info_path = path / "run.json"
    if not info_path.is_file():
        raise ValueError(f"not a run directory (no run.json): {path}")
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"invalid run.json in {path}: {exc}") from None
    if not isinstance(info, dict):
        raise ValueError(f"invalid run.json in {path}: expected a JSON object")
    if info.get("format") != RUN_FORMAT:
        raise ValueError(f"unknown run format {info.get('format')!r} in {info_path} (expected {RUN_FORMAT!r})")
    unknown = sorted(set(info) - set(RUN_FIELDS))
    if unknown:
        raise ValueError(f"unknown field(s) in {info_path}: {', '.join(unknown)}")
    if "model" not in info:
        raise ValueError(f"invalid run.json in {path}: no 'model' config")
    try:
        config = ModelConfig.from_dict(info["model"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid model config in {info_path}: {exc}") from None
    return Run(path, info, config)
