"""App timings in a real browser (Playwright + Debian chromium), measured in one run against the targets.

    python bench/app_timings.py                  # shipped run if present, else a tiny run trained into /tmp
    python bench/app_timings.py --rounds 3 --variants threads1 threads2

Each round starts a fresh `python -m streamlit run app/main.py --server.headless true
--server.fileWatcherType none --server.port P` (MOE_EXPLORER_RUN = the run) per variant, with the browser
already open, and measures what a user waits for:

- cold start: from starting the server process to the first page (Overview) rendered and idle
  (`[data-testid='stApp'][data-test-script-state='notRunning']` and its title drawn);
- route 2,000 tokens: paste a 2,000-token text on Token routing, Ctrl+Enter, until the coloured tokens,
  the grid and the idle state are there (tokenize + forward + record + all figures, nothing cached);
- rerun on 2,000 tokens: move the MoE-layer slider one step, until the page shows the new layer and is
  idle (the trace comes from st.cache_data; the figures are rebuilt).

Variants (interleaved within each round, so machine load hits them alike): `threads1` (the app's default:
one torch thread), `threads2` (MOE_EXPLORER_TORCH_THREADS=2, torch's own choice on this 2-core box) and
`cli` (as threads1, but started through `moe-explorer app --run RUN`, the launcher the README's `make app` runs).
Prints per-variant medians and the target checks (cold ≤ 8 s, rerun ≤ 1.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "sample_data" / "default_run"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync"]  # fmt: skip
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
VARIANTS = {  # name -> extra environment; "cli" starts the server the README's way (`moe-explorer app`)
    "threads1": {"MOE_EXPLORER_TORCH_THREADS": "1"},
    "threads2": {"MOE_EXPLORER_TORCH_THREADS": "2"},
    "cli": {"MOE_EXPLORER_TORCH_THREADS": "1"},
}
# true once the script finished and the page shows `needle` in a caption (so a rerun that has not
# started yet, or one still running, does not count)
READY_JS = """needle => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  return [...document.querySelectorAll("[data-testid='stCaptionContainer']")].some(e => e.innerText.includes(needle))
      && document.querySelectorAll("[data-testid='stPlotlyChart'] .main-svg").length > 0;
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_run() -> Path:
    """Train a tiny run into /tmp when the shipped run is missing (a few seconds)."""
    out = Path(tempfile.mkdtemp(prefix="moe_bench_")) / "tiny"
    cmd = [sys.executable, "-m", "app.cli", "train", "--preset", "tiny", "--out", str(out), "--device", "cpu",
           "--steps", "30", "--quiet"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=ROOT)
    return out


def text_of_tokens(run: Path, n: int) -> tuple[str, int]:
    """A text of exactly `n` tokens (or all there is), cut from the run's eval documents."""
    from moe_core.run import load_run
    from moe_core.tokenizer import encode_with_offsets

    docs = [json.loads(line)["text"] for line in (run / "eval" / "docs.jsonl").read_text().splitlines() if line]
    text = "\n\n".join(docs)
    while len(text) < 40 * n:
        text += "\n\n" + text
    ids, offsets = encode_with_offsets(load_run(run).tokenizer(), text[: 20 * n])
    cut = text[: offsets[min(n, len(ids)) - 1][1]]
    return cut, len(encode_with_offsets(load_run(run).tokenizer(), cut)[0])


def one_round(browser, run: Path, env_extra: dict, text: str, log: Path, via_cli: bool) -> dict[str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, MOE_EXPLORER_RUN=str(run), **env_extra)
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app" / "main.py"), "--server.headless", "true",
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
           "--server.port", str(port)]  # fmt: skip
    if via_cli:  # the launcher process in front (what `make app` runs once set up)
        cmd = [sys.executable, "-m", "app.cli", "app", "--run", str(run), "--port", str(port)]
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        while True:  # the health endpoint answers once the server listens
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"streamlit did not start (see {log})") from None
                time.sleep(0.05)
        t_health = time.perf_counter() - t0
        page.goto(url)
        page.wait_for_selector(IDLE + " h1", timeout=120_000)
        t_cold = time.perf_counter() - t0

        page.goto(url + "/token_routing")
        page.wait_for_selector(IDLE + " textarea", timeout=60_000)
        box = page.locator("textarea").first
        box.fill(text)
        t1 = time.perf_counter()
        box.press("Control+Enter")
        page.wait_for_function(READY_JS, arg="tokens · layer 0", polling=20, timeout=120_000)
        t_route = time.perf_counter() - t1

        slider = page.locator("input[type='range'][aria-label='MoE layer']").first
        slider.focus()
        t2 = time.perf_counter()
        slider.press("ArrowRight")
        page.wait_for_function(READY_JS, arg="tokens · layer 1", polling=20, timeout=120_000)
        t_rerun = time.perf_counter() - t2
        return {"server up": t_health, "cold start": t_cold, "route 2k": t_route, "rerun 2k": t_rerun}
    finally:
        page.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run directory (default: sample_data/default_run, else a tiny run)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    run = args.run or (SHIPPED if SHIPPED.is_dir() else tiny_run())
    text, n = text_of_tokens(run, args.tokens)
    log = Path(tempfile.mkdtemp(prefix="moe_bench_")) / "streamlit.log"
    print(f"# run {run}, {n:,} tokens pasted, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in args.variants}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for r in range(args.rounds):
            for v in args.variants:  # interleaved: each round runs every variant once
                results[v].append(one_round(browser, run, VARIANTS[v], text, log, via_cli=v == "cli"))
                print(f"round {r} {v:8s} " + "  ".join(f"{k} {s:6.2f} s" for k, s in results[v][-1].items()),
                      flush=True)  # fmt: skip
        browser.close()
    print(f"# load average after: {os.getloadavg()[0]:.2f}; medians (Playwright + chromium, wall clock):")
    targets = {"cold start": 8.0, "rerun 2k": 1.5}
    for v, rows in results.items():
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        checks = "  ".join(f"{k} {'met' if med[k] <= t else 'MISSED'} (≤ {t} s)" for k, t in targets.items())
        print(f"{v:8s} " + "  ".join(f"{k} {s:6.2f} s" for k, s in med.items()) + "  | " + checks)
    if len(results) == 2:
        for k in ("cold start", "route 2k"):
            a, b = (statistics.median(row[k] for row in rows) for rows in results.values())
            print(f"{k}, {args.variants[0]} / {args.variants[1]}: {a / b:.2f}x")


if __name__ == "__main__":
    main()
