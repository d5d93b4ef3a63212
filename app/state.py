"""Session-state keys, cache wrappers and input handling shared by every page (the only stateful module).

Caching (Streamlit):
- `st.cache_resource` for objects that are shared and never mutated: runs, models, tokenizers.
- `st.cache_data` for traces and derived tables, keyed by (run path, checkpoint step, layer, params);
  texts are keyed by their SHA-256 so a rerun on the same 2,000 tokens is a cache hit.
Run discovery: $MOE_EXPLORER_RUN, $MOE_EXPLORER_HF (paths), the shipped default run, the shipped
balancing-strategy study (history only), and every run under $MOE_EXPLORER_RUNS_DIR (or ./runs).
Uploads: .txt .md .py .json .csv, at most UPLOAD_MAX_BYTES per file; binary, undecodable
or empty files give a one-line message, never an exception.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from moe_core.paths import default_run_path, is_run_dir, study_runs_path

# --- session-state keys (one place, so pages never collide) ---------------------------------------------
KEY_RUN = "moe_run_path"  # selected run directory (str)
KEY_STEP = "moe_checkpoint_step"  # selected checkpoint step (int) of that run
KEY_TEXT = "moe_routing_text"  # text in the Token routing text area
KEY_LAYER = "moe_layer"  # MoE layer shown on Token routing
KEY_TRAIN_PROC = "moe_train_process"  # the background training run started from the Train page
RECORDED = "moe_recorded_eval"  # (run, step) pairs whose eval traces were recorded in this session

# --- input limits (stated in the UI) --------------------------------------------------------------------
UPLOAD_TYPES = ["txt", "md", "py", "json", "csv"]
UPLOAD_MAX_BYTES = 1_000_000  # per file
UPLOAD_MAX_MB = 1  # the upload widget's own limit (whole MB): the server refuses bigger files before reading them
UPLOAD_MAX_FILES = 10  # per request: at most 10 MB of uploads held at once
MAX_TEXT_CHARS = 1_000_000  # a pasted text is cut here before tokenizing (a 5 MB paste: no 8 s tokenization)
MAX_TOKENS = 20_000  # per routing request; longer input is cut with a message
LIMITS_TEXT = "Up to 10 files of 1 MB (.txt .md .py .json .csv) and 20,000 tokens per request."

SAMPLES = {
    "Prose": "The old lighthouse keeper climbed the stairs every evening. From the top he could see the fishing "
    "boats coming home, their lights bobbing on the dark water like fireflies.",
    "Python code": "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
    "    return a\n\nprint([fibonacci(i) for i in range(10)])\n",
    "Math": "Let f(x) = 3x^2 + 2x - 5. Then f'(x) = 6x + 2, so the minimum is at x = -1/3, "
    "where f(-1/3) = 1/3 - 2/3 - 5 = -16/3.",
    "JSON": '{"name": "moe-explorer", "experts": 16, "top_k": 2, "layers": [1, 2, 3], "shared": true}',
    "Escaping test": "<script>alert(1)</script> & <b>not bold</b>",
}


def samples(path: str, per_label: int = 2) -> dict[str, str]:
    """The built-in samples plus a few of the run's held-out eval documents per domain."""
    out = dict(SAMPLES)
    if not is_hf(path):
        seen: dict[str, int] = {}
        for doc in get_run(path).eval_docs():
            if seen.get(doc.label, 0) < per_label:
                seen[doc.label] = seen.get(doc.label, 0) + 1
                out[f"eval: {doc.label} #{doc.doc_id}"] = doc.text
    return out


# --- run discovery ----------------------------------------------------------------------------------------


def hf_paths() -> list[str]:
    return [p for p in os.environ.get("MOE_EXPLORER_HF", "").split(os.pathsep) if p]


def is_hf(path: str | None) -> bool:
    """A Hugging Face model folder (config.json, no run.json): no checkpoints, no training history."""
    return bool(path) and not is_run_dir(path) and (Path(path) / "config.json").is_file()


def runs_dir() -> Path:
    return Path(os.environ.get("MOE_EXPLORER_RUNS_DIR") or "runs")


def run_dir_for(name: str) -> Path:
    """The folder of a new run `name` in the runs folder; ValueError when it would be outside it
    (`..`, an absolute path, or a symlink out of the folder)."""
    from moe_core.run import resolve_run_dir

    return resolve_run_dir(runs_dir(), name)


def discover_runs() -> dict[str, str]:
    """{display name: absolute run path}: $MOE_EXPLORER_RUN, --hf folders, the shipped run, runs in the runs folder.

    Cached for 3 s only (keyed by the environment), so a run started on the Train page appears quickly.
    """
    return _discover(os.environ.get("MOE_EXPLORER_RUN"), tuple(hf_paths()), str(runs_dir().resolve()))


@st.cache_data(ttl=3, show_spinner=False)
def _discover(env: str | None, hf_folders: tuple[str, ...], root: str) -> dict[str, str]:
    found: dict[str, str] = {}

    def add(path: Path, name: str | None = None) -> None:
        path = path.resolve()
        if is_run_dir(path) and str(path) not in found.values():
            label = "default (shipped)" if path == shipped else name or path.name
            while label in found:
                label += "'"
            found[label] = str(path)

    from moe_core.run import list_runs, resolve_run_dir

    shipped = default_run_path().resolve()
    if env:  # `moe-explorer app` sets it (also to the shipped run)
        add(Path(env))
    for hf in hf_folders:  # local Hugging Face MoE folders given with `moe-explorer app --hf PATH`
        hf = Path(hf).resolve()
        if (hf / "config.json").is_file() and str(hf) not in found.values():
            found[f"HF: {hf.name}"] = str(hf)
    add(shipped)
    for child in study_runs():
        add(Path(child), f"study: {Path(child).name}")
    try:
        for child in list_runs(root):
            try:
                resolve_run_dir(root, str(child.relative_to(root)))
            except ValueError:  # a symlink out of the runs folder: not offered
                continue
            add(child)
    except OSError:  # an unreadable runs folder: nothing from it
        pass
    return found


def study_runs() -> list[str]:
    """The shipped balancing-strategy study's runs (history only, for the Training-dynamics overlay)."""
    from moe_core.run import list_runs

    return [str(p.resolve()) for p in list_runs(study_runs_path())]


# --- cached resources ---------------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False, max_entries=8)
def get_run(path: str):
    """The `moe_core.run.Run` of a run directory (never mutated by the app)."""
    from moe_core.run import load_run

    return load_run(path)


@st.cache_resource(show_spinner="Loading model…", max_entries=4)
def get_model(path: str, step: int | None):
    """The model of a run at a checkpoint step, in eval mode on the CPU."""
    import torch

    # one torch thread: routing 2,000 tokens is small work, and on a busy 2-core box a second (spinning) OpenMP
    # thread competes with the server and the browser (bench/app_timings.py, route 2k tokens: 2.87 vs 3.05 s
    # quiet, 3.4 vs 5.0 s at load ~2.6). MOE_EXPLORER_TORCH_THREADS overrides it (e.g. a big HF model).
    torch.set_num_threads(int(os.environ.get("MOE_EXPLORER_TORCH_THREADS", "1")))
    model = get_run(path).load_model(step=step, device="cpu")
    model.eval()
    return model


@st.cache_resource(show_spinner=False, max_entries=8)
def get_tokenizer(path: str):
    return get_run(path).tokenizer()


@st.cache_resource(show_spinner="Loading the Hugging Face model…", max_entries=2)
def get_hf(path: str):
    """A local Hugging Face MoE folder loaded through analysis.hf_adapter ($MOE_EXPLORER_HF_DEVICE/_DTYPE)."""
    from analysis.hf import load_hf_model

    device = os.environ.get("MOE_EXPLORER_HF_DEVICE", "auto")
    return load_hf_model(path, device=device, dtype=os.environ.get("MOE_EXPLORER_HF_DTYPE", "auto"))


def checkpoints(path: str) -> list[int]:
    """Checkpoint steps of a run, ascending (read fresh: a training run adds them); [] for HF models."""
    if is_hf(path):
        return []
    return sorted(int(s) for s in get_run(path).checkpoints())


@st.cache_data(show_spinner=False, max_entries=32)
def router_biases(path: str, step: int | None) -> np.ndarray:
    """(L, E) balancing biases of the model at that step (HF: e_score_correction_bias where the family has it)."""
    if is_hf(path):
        hf = get_hf(path)
        attr = hf.spec.bias_attr
        rows = [getattr(layer.router, attr, None) if attr else None for layer in hf.layers]
        return np.stack([np.zeros(hf.n_experts) if b is None else b.detach().float().cpu().numpy() for b in rows])
    return get_model(path, step).router_biases().detach().cpu().numpy()


# --- selection (sidebar) ---------------------------------------------------------------------------------


def current() -> tuple[str | None, int | None]:
    """(run path, checkpoint step) chosen in the sidebar; (None, None) when there is no run."""
    return st.session_state.get(KEY_RUN), st.session_state.get(KEY_STEP)


def require_run(need_model: bool = True) -> tuple[str, int | None]:
    """The selected run and step, or stop the page with a message when there is none (or, with `need_model`,
    when the run has no checkpoint yet)."""
    if KEY_RUN not in st.session_state:  # the entry always sets it; a page run some other way draws it here
        sidebar_selector()
    path, step = current()
    if not path:
        st.info(
            "No run found. Train one on the **Train** page, start the app with `moe-explorer app --run RUN`, "
            "or set MOE_EXPLORER_RUN / MOE_EXPLORER_RUNS_DIR."
        )
        st.stop()
    if not is_hf(path):
        try:
            get_run(path)
        except (ValueError, OSError) as exc:
            st.error(f"Cannot open this run: {exc}")
            st.stop()
    if need_model and step is None and not is_hf(path):
        st.info(
            "This run has no checkpoint: it is still training (the first one appears when training reaches it), "
            "or it ships as history only, like the balancing-strategy study. Its curves are on Training dynamics."
        )
        st.stop()
    return path, step


VIEWS_DIR = Path(__file__).resolve().parent / "views"


def page_path(name: str) -> str:
    """Absolute path of app/views/NAME.py, for st.page_link (works whatever the entry script is)."""
    return str(VIEWS_DIR / f"{name}.py")


def copy_key(src: str, dst: str) -> None:
    """Widget callback: session_state[dst] = session_state[src] (e.g. a page slider driving the sidebar)."""
    st.session_state[dst] = st.session_state[src]


def sidebar_selector() -> None:
    """Run + checkpoint selectors in the sidebar, shared by every page (state in KEY_RUN / KEY_STEP)."""
    runs = discover_runs()
    wanted = st.query_params.get("run")
    if wanted and wanted in runs and st.session_state.get("_moe_qp_run") != wanted:
        st.session_state[KEY_RUN] = runs[wanted]  # a Learn page linked to training?run=NAME
        st.session_state["_moe_qp_run"] = wanted
    if not runs:
        st.sidebar.warning("No run found.")
        st.session_state[KEY_RUN] = None
        return
    paths = list(runs.values())
    if st.session_state.get(KEY_RUN) not in paths:
        st.session_state[KEY_RUN] = paths[0]
    names = {p: n for n, p in runs.items()}
    st.sidebar.selectbox("Run", paths, key=KEY_RUN, format_func=lambda p: names.get(p, Path(p).name))
    if is_hf(st.session_state[KEY_RUN]):
        st.session_state[KEY_STEP] = None
        st.sidebar.caption("Hugging Face model: no checkpoints or training history.")
        return
    try:
        steps = checkpoints(st.session_state[KEY_RUN])
    except (OSError, ValueError) as exc:
        st.sidebar.error(f"Cannot read this run: {exc}")
        st.session_state[KEY_STEP] = None
        return
    if not steps:
        st.sidebar.warning("This run has no checkpoint (yet).")
        st.session_state[KEY_STEP] = None
        return
    if st.session_state.get(KEY_STEP) not in steps:
        st.session_state[KEY_STEP] = steps[-1]
    if len(steps) > 1:
        st.sidebar.select_slider("Checkpoint step", steps, key=KEY_STEP)
    else:
        st.sidebar.caption(f"Checkpoint step {steps[0]}")


# --- routing traces ----------------------------------------------------------------------------------------


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@st.cache_data(show_spinner=False, max_entries=8)  # a 20k-token trace is tens of MB: keep a few
def route_docs(path: str, step: int | None, key: str, _docs: tuple[tuple[str, str, str], ...]):
    """RoutingTrace of docs (doc_id, label, text) through the model at `step`; cached by `key` (their hash)."""
    from analysis.recording import record
    from moe_core.corpus import Doc

    docs = [Doc(text=t, label=lab, source="app", doc_id=d) for d, lab, t in _docs]
    labels = [d.label for d in docs]
    if is_hf(path):
        from analysis.recording import record_hf

        return record_hf(get_hf(path), docs, labels=labels, meta={"run": Path(path).name})
    meta = {"run": Path(path).name, "step": step}
    return record(get_model(path, step), get_tokenizer(path), docs, labels=labels, meta=meta)


def route_text(path: str, step: int | None, text: str, label: str = "input"):
    """Trace of one pasted text (cached by the text's hash)."""
    return route_docs(path, step, text_hash(f"{label}\0{text}"), (("input", label, text),))


def route_trace(path: str, step: int | None, docs: list[tuple[str, str, str]]):
    """Trace of (doc_id, label, text) docs, cached by their hash: a rerun on the same text is instant."""
    docs_t = tuple(tuple(d) for d in docs)
    return route_docs(path, step, docs_key(docs_t), docs_t)


def _spans(path: str, text: str) -> list[tuple[int, int]]:
    """Character spans of the tokens of `text` under the model's tokenizer."""
    if is_hf(path):
        from analysis.hf import tokenize

        return tokenize(get_hf(path).tokenizer, text)[1]
    from moe_core.tokenizer import encode_with_offsets

    return encode_with_offsets(get_tokenizer(path), text)[1]


def limit_docs(path: str, docs: list[tuple[str, str, str]]) -> tuple[list[tuple[str, str, str]], bool]:
    """Docs cut so that together they hold at most MAX_TOKENS tokens; (docs, True) when something was cut.
    Each text is first cut to MAX_TEXT_CHARS characters, so a huge paste is never tokenized whole."""
    if sum(len(t.encode("utf-8", "surrogatepass")) for _, _, t in docs) <= MAX_TOKENS:  # a token holds >= 1 byte
        return docs, False  # (not >= 1 character: an emoji can be 4 tokens)
    cut_chars = any(len(t) > MAX_TEXT_CHARS for _, _, t in docs)
    docs = [(d, lab, t[:MAX_TEXT_CHARS]) for d, lab, t in docs]
    out, budget = [], MAX_TOKENS
    for doc_id, label, text in docs:
        if budget <= 0:
            return out, True
        spans = _spans(path, text)
        if len(spans) > budget:
            out.append((doc_id, label, text[: spans[budget - 1][1]]))
            return out, True
        out.append((doc_id, label, text))
        budget -= len(spans)
    return out, cut_chars


def trace_downloads(trace) -> None:
    """Download buttons, made when clicked: CSV (one row per token, layer, rank) and the RoutingTrace parquet
    file (tidy tables + metadata; `analysis.trace.load` reads it back exactly)."""
    c1, c2 = st.columns(2)
    csv = lambda: trace.wide().to_csv(index=False).encode("utf-8")  # noqa: E731
    c1.download_button("Trace (CSV)", csv, "routing_trace.csv", "text/csv", on_click="ignore")
    c2.download_button("Trace (Parquet)", trace.to_parquet_bytes, "routing_trace.parquet", on_click="ignore")


def docs_key(docs: tuple[tuple[str, str, str], ...]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update("\0".join(d).encode("utf-8", "surrogatepass") + b"\1")
    return h.hexdigest()


@st.cache_data(show_spinner=False, max_entries=16)
def _stored_eval_trace(path: str, trace_file: str, mtime: float):
    from analysis.trace import load

    return load(trace_file)


def eval_trace(path: str, step: int | None):
    """The run's eval traces at `step`: eval/trace_step_*.parquet when present, else recorded now.
    HF models have no eval documents: the built-in labelled samples stand in."""
    if is_hf(path):
        docs = tuple((name, name, text) for name, text in SAMPLES.items() if name != "Escaping test")
    else:
        run = get_run(path)
        trace_file = Path(run.trace_path(step)) if step is not None else None
        if trace_file is not None and trace_file.is_file():
            return _stored_eval_trace(path, str(trace_file), trace_file.stat().st_mtime)
        docs = tuple((str(d.doc_id), str(d.label), str(d.text)) for d in run.eval_docs())
    if not docs:
        return None
    key = docs_key(docs)
    done = st.session_state.setdefault(RECORDED, set())
    if (path, step, key) in done:
        return route_docs(path, step, key, docs)
    with st.status(f"Recording the routing of {len(docs)} documents at step {step}…") as status:
        trace = route_docs(path, step, key, docs)
        status.update(label=f"Recorded {trace.n_tokens:,} tokens of {len(docs)} eval documents", state="complete")
    done.add((path, step, key))
    return trace


# --- derived tables ------------------------------------------------------------------------------------------


@st.cache_data(show_spinner="Computing specialization…", max_entries=32)
def specialization(key: str, _trace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] | None:
    """(cells, permutation baseline per layer, MI summary) of a trace cached by `key` (run|step|texts);
    None when the tokens carry no labels."""
    from analysis import specialization as spec

    experts = _trace.experts_array()
    if not (_trace.tokens["label"].astype(str) != "").any():
        return None
    cells = spec.domain_specialization(experts, _trace.tokens, _trace.n_experts)
    base = spec.specialization_permutation_baseline(experts, _trace.tokens, _trace.n_experts, n_permutations=100)
    mi = spec.mi_summary(experts, _trace.tokens, _trace.n_experts)
    return cells, base.max_ratio, mi


def trace_key(path: str, step: int | None, trace) -> str:
    """Cache key of derived tables: run, step and the traced documents."""
    return f"{path}|{step}|{docs_key(tuple((d, '', t) for d, t in sorted(trace.texts.items())))}|{trace.n_tokens}"


# --- projections ---------------------------------------------------------------------------------------------


@st.cache_data(show_spinner=False, max_entries=32)
def _project(path: str, step: int | None, layer: int, method: str, _trace):
    from analysis.projections import project

    # the run's projections/ folder is the on-disk cache (precomputed for the shipped run; ignored if read-only)
    return project(_trace, layer, method, cache_dir=Path(path) / "projections")


@st.cache_resource(show_spinner=False)
def warm_umap() -> threading.Thread | None:
    """Compile UMAP's numba code in a background thread, once per process, when Geometry is first opened:
    the first UMAP fit then does not wait for it. MOE_EXPLORER_WARM_UMAP=0 turns it off."""
    if os.environ.get("MOE_EXPLORER_WARM_UMAP", "1") == "0":
        return None
    from analysis.projections import warm_up_umap

    thread = threading.Thread(target=warm_up_umap, name="warm-umap", daemon=True)
    thread.start()
    return thread


def projection(path: str, step: int | None, layer: int, method: str):
    """PCA/UMAP of the eval trace's router inputs at `layer`; UMAP runs inside st.status. None on error."""
    trace = eval_trace(path, step)
    done = st.session_state.setdefault("moe_projected", set())
    try:
        if method == "pca" or (path, step, layer, method) in done:
            result = _project(path, step, layer, method, trace)
        else:
            with st.status(f"Computing UMAP of layer {layer}…", expanded=True) as status:
                st.write(f"{len(trace.hidden_rows):,} router inputs; PCA to 32 dims, then UMAP.")
                st.write("The first UMAP on this machine compiles numba code (about half a minute); then seconds.")
                result = _project(path, step, layer, method, trace)
                how = "read from the cache" if result.from_cache else f"computed in {result.seconds:.1f} s"
                status.update(label=f"UMAP of layer {layer} {how}", state="complete", expanded=False)
    except ValueError as exc:
        st.error(f"Cannot project: {exc}")
        return None
    done.add((path, step, layer, method))
    return result


# --- history -----------------------------------------------------------------------------------------------


def history(path: str) -> pd.DataFrame:
    """history/train.jsonl as a DataFrame (read fresh; cheap for the runs this app trains); empty for HF."""
    return pd.DataFrame() if is_hf(path) else _frame(get_run(path).history())


def eval_history(path: str) -> pd.DataFrame:
    return pd.DataFrame() if is_hf(path) else _frame(get_run(path).eval_history())


def _frame(rows: Any) -> pd.DataFrame:
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    return df.sort_values("step").reset_index(drop=True) if "step" in df else df


# --- uploads ---------------------------------------------------------------------------------------------------


@dataclass
class Upload:
    name: str
    text: str | None  # None when the file was refused
    error: str | None  # one-line reason shown to the user


def decode_upload(name: str, data: bytes, max_bytes: int = UPLOAD_MAX_BYTES) -> Upload:
    """Bytes of an uploaded file -> text, or a clear error (never raises).

    Tries UTF-8 (a UTF-8 BOM is dropped) and UTF-16 only when the file starts with a UTF-16 BOM.
    A NUL byte in a file without a UTF-16 BOM means binary.
    """
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext not in UPLOAD_TYPES:
        return Upload(name, None, f"{name}: unsupported file type; use {', '.join('.' + t for t in UPLOAD_TYPES)}.")
    if len(data) > max_bytes:
        return Upload(name, None, f"{name}: too large ({len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:g} MB).")
    if not data.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return Upload(name, None, f"{name}: starts like UTF-16 but does not decode as UTF-16 text.")
    elif b"\x00" in data:
        return Upload(name, None, f"{name}: looks like a binary file, not text.")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            return Upload(name, None, f"{name}: not UTF-8 text (bad byte at position {exc.start}); save it as UTF-8.")
    if not text.strip():
        return Upload(name, None, f"{name}: the file is empty.")
    return Upload(name, text, None)


def docs_from_uploads(uploads: list[Upload]) -> list[tuple[str, str, str]]:
    """(doc_id, label, text) per good upload; a .csv with `label` and `text` columns gives one doc per row,
    any other file is one doc labelled by its file name."""
    docs: list[tuple[str, str, str]] = []
    for up in uploads:
        if up.text is None:
            continue
        if up.name.lower().endswith(".csv"):
            try:
                df = pd.read_csv(io.StringIO(up.text), dtype=str).fillna("")
            except (ValueError, pd.errors.ParserError):
                df = None
            if df is not None and {"label", "text"} <= set(df.columns):
                for i, (label, text) in enumerate(zip(df["label"], df["text"])):
                    if text.strip():
                        docs.append((f"{up.name}#{i}", label, text))
                continue
        docs.append((up.name, Path(up.name).stem, up.text))
    seen: set[str] = set()
    for i, (doc_id, label, text) in enumerate(docs):  # the same file name twice: "a.txt", "a.txt (2)"
        unique, n = doc_id, 1
        while unique in seen:
            n += 1
            unique = f"{doc_id} ({n})"
        seen.add(unique)
        docs[i] = (unique, label, text)
    return docs


def read_uploads(files: list[Any] | None) -> tuple[list[Upload], list[str]]:
    """Decode Streamlit UploadedFile objects; returns (good uploads, error messages)."""
    good, errors = [], []
    files = list(files or [])
    if len(files) > UPLOAD_MAX_FILES:
        skipped = ", ".join(getattr(f, "name", "file") for f in files[UPLOAD_MAX_FILES:])
        errors.append(f"Only {UPLOAD_MAX_FILES} files per request; not read: {skipped}.")
        files = files[:UPLOAD_MAX_FILES]
    for f in files:
        try:
            data = f.getvalue()
        except Exception as exc:  # noqa: BLE001 - a broken upload must not break the page
            errors.append(f"{getattr(f, 'name', 'file')}: could not be read ({exc}).")
            continue
        up = decode_upload(f.name, data)
        (good if up.error is None else errors).append(up if up.error is None else up.error)
    return good, errors


# --- background training (Train page) -------------------------------------------------------------------------


def train_command(out: Path, preset: str, steps: int, balance: list[str], experts: int, top_k: int) -> list[str]:
    """The `moe-explorer train` command line the Train page runs (0 experts / top-k = the preset's)."""
    cmd = [sys.executable, "-m", "app.cli", "train", "--preset", preset, "--out", str(out), "--steps", str(steps)]
    cmd += ["--balance", *(balance or ["none"])]
    if experts:
        cmd += ["--experts", str(experts)]
    if top_k:
        cmd += ["--top-k", str(top_k)]
    from moe_core.config import preset as model_preset

    if model_preset(preset).vocab_size < 320:  # the tiny preset's 256 is below a byte-level tokenizer's 257
        cmd += ["--vocab-size", "320"]
    every = str(max(1, steps // 4))  # 4 checkpoints, so the checkpoint slider has something to show
    return cmd + ["--corpus-size", "small", "--ckpt-every", every, "--eval-every", every, "--quiet"]


def start_training(cmd: list[str], out: Path) -> dict:
    """Start training as a background process (its own session, so stopping it signals only it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"{out.name}.train.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    job = {"proc": proc, "pid": proc.pid, "out": str(out.resolve()), "log": str(log), "cmd": cmd}
    st.session_state[KEY_TRAIN_PROC] = job
    return job


def stop_training(job: dict) -> None:
    """SIGTERM: the trainer finishes its step, writes a checkpoint and exits."""
    if job["proc"].poll() is None:
        job["proc"].send_signal(signal.SIGTERM)


def log_tail(path: str, lines: int = 8) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- downloads -----------------------------------------------------------------------------------------------


def download_csv(
    df: pd.DataFrame | Callable[[], pd.DataFrame], file_name: str, label: str = "Download data (CSV)", key=None
) -> None:
    """A CSV download button; the CSV is made only when clicked (pass a callable to defer building the table too)."""
    st.download_button(
        label,
        data=lambda: (df() if callable(df) else df).to_csv(index=False).encode("utf-8"),
        file_name=file_name,
        mime="text/csv",
        key=key or f"dl-{file_name}",
        on_click="ignore",
    )


def follow_click(event, key: str, n: int) -> None:
    """Set the number widget `key` to the x of a newly clicked chart point (a token index); keep it in 0..n-1."""
    points = event.selection.points if event and event.selection else []
    clicked = points[0].get("x") if points else None
    if clicked is not None and st.session_state.get(f"_moe_click_{key}") != clicked:
        st.session_state[f"_moe_click_{key}"] = clicked
        st.session_state[key] = int(clicked)
    st.session_state[key] = min(max(int(st.session_state.get(key, 0)), 0), max(n - 1, 0))


def layer_param(n_layers: int, key: str) -> None:
    """Prepare the layer widget `key`: a new ?layer=N query parameter (the Learn pages link with it) sets it,
    and its value is clamped to this model's layers (another run may have fewer). Create the widget after
    this call without a default value."""
    last = max(n_layers - 1, 0)
    wanted = st.query_params.get("layer")
    if wanted is not None and st.session_state.get(f"_moe_qp_{key}") != wanted:
        st.session_state[f"_moe_qp_{key}"] = wanted
        try:
            st.session_state[key] = int(wanted)
        except (TypeError, ValueError):
            pass
    value = st.session_state.get(key, 0)
    st.session_state[key] = min(max(int(value) if isinstance(value, (int, float)) else 0, 0), last)
