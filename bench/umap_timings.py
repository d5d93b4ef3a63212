"""UMAP of router inputs as the user feels it: cold (fresh process, numba compiles), warm, behind the app's
warm-up thread, with numba's disk cache, and read from the projection cache. One run, each case in its own
fresh process where it must be.

    python bench/umap_timings.py                      # 20k router inputs of the shipped run (else a tiny run)
    python bench/umap_timings.py --points 20000 --arrive 8

Router inputs: the run's eval documents recorded through its final checkpoint with `max_hidden` = points
(layer 0), projected with `analysis.projections.project(method="umap", max_points=points)` (PCA to 32 dims,
then UMAP, then two silhouettes), no projection cache unless said. Cases:

- cold: a fresh process: `import umap` + the first fit (numba JIT) + the same fit again (warm);
- warm-up thread: a fresh process starts `warm_up_umap()` in a thread at t = 0 (as the app does when it
  starts), the user asks for the UMAP `--arrive` s later; user-visible time = request → result;
- numba disk cache: `project()` calls `enable_numba_cache()` (every umap/pynndescent numba function caches
  its machine code, here under a NUMBA_CACHE_DIR of the bench's own): cold = an empty cache; a first process
  fills it, fresh processes after it are timed (cold and behind the warm-up thread);
- projection cache: the shipped run's precomputed projection (default 5,000 points), read by `project()`.
Target: fresh 20k ≤ 15 s including compilation; cached ≤ 1 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "sample_data" / "default_run"


def router_trace(run: Path, points: int):
    """The run's eval documents recorded with `points` router inputs kept (final checkpoint)."""
    from analysis.recording import record
    from moe_core.run import load_run

    r = load_run(run)
    model = r.load_model(device="cpu").eval()
    docs = list(r.eval_docs())
    return record(model, r.tokenizer(), docs, labels=[d.label for d in docs], max_hidden=points, meta={"run": "b"})


def child(args) -> None:
    """One case in this (fresh) process; prints one JSON line."""
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(1)
    from analysis import projections as P

    trace = router_trace(args.run, args.points)
    params = P.ProjectionParams(method="umap", max_points=args.points)
    out: dict[str, float] = {"record": time.perf_counter() - t0}
    if args.case == "thread":
        import threading

        threading.Thread(target=P.warm_up_umap, daemon=True).start()  # the app starts it at startup
        time.sleep(max(0.0, args.arrive - (time.perf_counter() - t0)))
    t1 = time.perf_counter()
    res = P.project(trace, 0, params=params)
    out["first"] = time.perf_counter() - t1
    out["points"] = len(res.coords)
    if args.case == "cold":
        t2 = time.perf_counter()
        P.project(trace, 0, params=P.ProjectionParams(method="umap", max_points=args.points, seed=1))
        out["warm"] = time.perf_counter() - t2
    print(json.dumps(out), flush=True)


def run_child(run: Path, case: str, points: int, arrive: float, env: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", case, "--run", str(run), "--points", str(points),
           "--arrive", str(arrive)]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if res.returncode:
        raise RuntimeError(res.stderr[-2000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=SHIPPED)
    p.add_argument("--points", type=int, default=20_000)
    p.add_argument("--arrive", type=float, default=8.0, help="seconds from app start to the user's UMAP request")
    p.add_argument("--child", choices=["cold", "thread"], help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.case = args.child
        child(args)
        return
    print(f"# run {args.run}, {args.points:,} router inputs (layer 0), load average {os.getloadavg()[0]:.2f}")
    env = dict(os.environ)

    # projections enable numba's disk cache before every fit: an empty NUMBA_CACHE_DIR is a cold process
    def fresh() -> dict:
        return dict(env, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="moe_numba_cache_"))

    filled = fresh()
    rows = {
        "cold, empty numba cache": run_child(args.run, "cold", args.points, 0, fresh()),
        f"warm-up thread at 0 s, request at {args.arrive:g} s, empty cache": run_child(
            args.run, "thread", args.points, args.arrive, fresh()
        ),
        "numba cache filling (first process ever)": run_child(args.run, "cold", args.points, 0, filled),
        "cold, filled numba cache (fresh process)": run_child(args.run, "cold", args.points, 0, filled),
        f"warm-up thread, request at {args.arrive:g} s, filled cache": run_child(
            args.run, "thread", args.points, args.arrive, filled
        ),
    }
    for name, r in rows.items():
        warm = f", then warm {r['warm']:.2f} s" if "warm" in r else ""
        print(f"{name:45s} first UMAP {r['first']:6.2f} s ({r['points']:,} points){warm}")

    from analysis.projections import project
    from analysis.trace import load
    from moe_core.run import load_run

    if (args.run / "projections").is_dir():
        r = load_run(args.run)
        step = r.latest_step()
        trace = load(r.trace_path(step))
        t = time.perf_counter()
        res = project(trace, 0, "umap", cache_dir=args.run / "projections")
        dt = time.perf_counter() - t
        ok = dt <= 1 and res.from_cache
        print(f"{'projection cache (shipped, layer 0)':45s} {dt:6.2f} s ({len(res.coords):,} points, "
              f"from_cache={res.from_cache}) | target ≤ 1 s: {'met' if ok else 'MISSED'}")  # fmt: skip
    best = min(r["first"] for name, r in rows.items() if "filling" not in name)
    print(
        f"# fresh {args.points:,}-point UMAP, best user-visible first call {best:.2f} s | target ≤ 15 s: "
        f"{'met' if best <= 15 else 'MISSED'}; load average after {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
