"""Explore-page warm switches and the first route of a new 2,000-token text, in chromium, against a baseline tree.

    git worktree add /tmp/baseline 1d389ec        # the code before issue 15, beside this checkout
    python bench/page_timings.py --baseline /tmp/baseline --rounds 3

Each round starts, for the baseline tree and for this tree (interleaved, alternating which goes first), a fresh
server the way that tree's launcher starts it (`app.launch.app_command`, what `moe-explorer app` execs: `python -m
streamlit run app/main.py` and its flags) on that tree's shipped run (`sample_data/default_run`, MOE_EXPLORER_RUN;
cwd and PYTHONPATH = the tree), opens it in one chromium (Playwright, the machinery of bench/app_timings.py) and:

1. visits every explore page once through the sidebar (not timed: the server's caches and the browser's
   scripts are warm after this, as they are for a user who has looked around);
2. **warm switch**: for every page, clicks its sidebar link and waits until the script is idle
   (`[data-testid='stApp'][data-test-script-state='notRunning']`), the page's title is drawn and its content is:
   every plotly chart on the page rendered (`.main-svg`), at least `min_charts` of them, or the page's own
   element (Overview: the settings table; Train: the form; Token routing without text: the text box);
3. **first route of a new text**: on Token routing, pastes a 2,000-token text (a different cut of the eval
   documents each round, so never cached), presses Ctrl+Enter and waits for the idle state, the coloured tokens
   and every plotly chart the page then shows drawn: the token × layer grid (and, in the baseline, the first
   token's router-steps chart, which this tree draws once a token is picked). This tree starts loading the
   model when Token routing opens (`cache.warm_model`); the baseline has no such warm-up. The clock starts at
   Ctrl+Enter, one second after the text is filled in; the route's CPU seconds (psutil: the server process, and
   every chromium process) are printed too, a cost that a busy machine stretches less than the wall time.

`--route-only` skips the timed warm switches (the pages are still visited once).

Prints each round and the medians per row with the ratio current / baseline and the target checks
(warm switch ≤ 1.5 s, first route ≤ 1.0 s). Pages the baseline lacks (Expert profile, Compare runs) have no
baseline value. `--trees current` measures this tree only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_timings import ARGS, CHROMIUM, IDLE, free_port, text_of_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SWITCH_TARGET, ROUTE_TARGET = 1.5, 1.0
# (sidebar label, h1 needle or None = any h1, CSS of the page's own content or None, min plotly charts)
PAGES = [
    ("Overview", None, "[data-testid='stTable']", 0),
    ("Token routing", "Token routing", "textarea", 0),
    ("Expert heatmaps", "Expert heatmaps", None, 3),
    ("Training dynamics", "Training dynamics", None, 5),
    ("Compare runs", "Compare runs", "[data-testid='stMultiSelect']", 0),
    ("Router geometry", "Router geometry", None, 1),
    ("Expert profile", "Expert profile", None, 1),
    ("Train", "Train a model", "[data-testid='stForm']", 0),
]
# true once the script is idle, the page's title is drawn and its content is there (every plotly chart drawn)
PAGE_READY_JS = """([title, sel, minCharts]) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  const h1 = [...document.querySelectorAll("[data-testid='stMain'] h1")];
  if (!h1.length || (title && !h1.some(e => e.innerText.includes(title)))) return false;
  if (sel && !document.querySelector("[data-testid='stMain'] " + sel)) return false;
  const charts = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stPlotlyChart']")];
  return charts.length >= minCharts && charts.every(c => c.querySelector('.main-svg'));
}"""
# the routed text: idle, the caption of the coloured tokens, the coloured tokens themselves and every plotly chart of
# the page drawn (the baseline draws the grid and the selected token's router steps; this tree the grid)
ROUTED_JS = """needle => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (!document.querySelector("[data-testid='stMain'] span[data-expert]")) return false;  // a coloured token
  const charts = [...document.querySelectorAll("[data-testid='stMain'] [data-testid='stPlotlyChart']")];
  return [...document.querySelectorAll("[data-testid='stCaptionContainer']")].some(e => e.innerText.includes(needle))
      && charts.length > 0 && charts.every(c => c.querySelector('.main-svg'));
}"""


def launch_command(tree: Path, port: int) -> list[str]:
    """The command the tree's own launcher runs (`app.launch.app_command`: what `moe-explorer app` execs)."""
    code = "import json, sys; from app.launch import app_command; print(json.dumps(app_command(int(sys.argv[1]))))"
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", code, str(port)], cwd=tree, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"no app_command in {tree}: {out.stderr.strip()[-300:]}")
    return json.loads(out.stdout)


def start_server(tree: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(tree), MOE_EXPLORER_RUN=str(tree / "sample_data" / "default_run"))
    cmd = launch_command(tree, port)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while True:
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            if proc.poll() is not None or time.perf_counter() - t0 > 120:
                raise RuntimeError(f"streamlit did not start (see {log})") from None
            time.sleep(0.05)


def go(page, label: str, title: str | None, sel: str | None, min_charts: int) -> float:
    """Click the sidebar link `label`; seconds until the page is idle with its content drawn."""
    link = page.locator("[data-testid='stSidebarNav']").get_by_text(label, exact=True).first
    t = time.perf_counter()
    link.click()
    try:
        page.wait_for_function(PAGE_READY_JS, arg=[title, sel, min_charts], polling=20, timeout=60_000)
    except Exception as exc:
        shot = Path(tempfile.gettempdir()) / "page_timings_timeout.png"
        page.screenshot(path=str(shot), full_page=True)
        raise RuntimeError(f"{label} never became ready (screenshot {shot})") from exc
    return time.perf_counter() - t


ROUTE = "first route of a new 2,000-token text"
CPU_ROWS = ("route CPU: server", "route CPU: chromium")  # CPU seconds the route cost, load-independent-ish


def cpu_seconds(server: int) -> tuple[float, float]:
    """(user + system CPU seconds so far of the server process, of every chromium process under this one)."""
    import psutil

    def used(p) -> float:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:  # a helper process that just ended
            return 0.0

    me = psutil.Process()
    chromium = sum(used(c) for c in me.children(recursive=True) if "chrom" in c.name())
    return used(psutil.Process(server)), chromium


def one_round(browser, tree: Path, text: str, log: Path, switches: bool = True) -> dict[str, float]:
    proc, url = start_server(tree, log)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(url)
        page.wait_for_selector(IDLE + " h1", timeout=120_000)
        menu = " | ".join(a.inner_text() for a in page.locator("[data-testid='stSidebarNav'] a").all())
        pages = [p for p in PAGES if p[0] in menu]
        for p in pages[1:] + pages[:1]:  # visit each page once (warm-up), ending on Overview
            go(page, *p)
        out = {}
        for p in (pages[1:] + pages[:1]) if switches else []:  # each switch comes from the page before it
            out[f"warm switch: {p[0]}"] = go(page, *p)
        go(page, *PAGES[1])
        box = page.locator("textarea").first
        box.fill(text)
        page.wait_for_timeout(1000)  # let the page settle (and the model warm-up finish) before the clock starts
        cpu0 = cpu_seconds(proc.pid)
        t = time.perf_counter()
        box.press("Control+Enter")
        page.wait_for_function(ROUTED_JS, arg="tokens · layer 0", polling=20, timeout=120_000)
        out[ROUTE] = time.perf_counter() - t
        out.update(zip(CPU_ROWS, (b - a for a, b in zip(cpu0, cpu_seconds(proc.pid)))))
        return out
    finally:
        page.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", type=Path, required=True, help="the baseline tree (a checkout, e.g. git worktree)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--tokens", type=int, default=2000)
    p.add_argument("--trees", nargs="+", default=["baseline", "current"], choices=["baseline", "current"])
    p.add_argument("--route-only", action="store_true", help="time the first route only (pages still visited once)")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    trees = {"baseline": args.baseline.resolve(), "current": ROOT}
    trees = {k: v for k, v in trees.items() if k in args.trees}
    run = ROOT / "sample_data" / "default_run"
    long_text, n = text_of_tokens(run, args.tokens * (args.rounds + 1))
    log = Path(tempfile.mkdtemp(prefix="moe_bench_")) / "streamlit.log"
    print(f"# {n:,}-token pool, {args.rounds} rounds, load average {os.getloadavg()[0]:.2f}, log {log}")
    results: dict[str, list[dict[str, float]]] = {k: [] for k in trees}
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        for r in range(args.rounds):
            start = len(long_text) * r // (args.rounds + 1)  # a new text each round (never cached)
            text, _ = text_of_tokens_from(long_text[start:], run, args.tokens)
            order = list(trees) if r % 2 == 0 else list(trees)[::-1]
            for name in order:
                results[name].append(one_round(browser, trees[name], text, log, not args.route_only))
                print(f"round {r} {name:8s} " + "  ".join(f"{v:5.2f}" for v in results[name][-1].values()), flush=True)
        browser.close()
    print(f"# load average after: {os.getloadavg()[0]:.2f}; medians of {args.rounds} (Playwright + chromium)")
    found = {k for rs in results.values() for row in rs for k in row}
    order = [f"warm switch: {p[0]}" for p in PAGES] + [ROUTE, *CPU_ROWS]
    rows = [k for k in order if k in found]
    med = {t: {k: statistics.median(row[k] for row in rs) for k in rows if k in rs[0]} for t, rs in results.items()}
    print(f"| | {' | '.join(trees)} | current / baseline | target |")
    print("|---|" + "---:|" * len(trees) + "---:|---|")
    for k in rows:
        target = ROUTE_TARGET if k == ROUTE else SWITCH_TARGET
        vals = [med[t].get(k) for t in trees]
        cells = " | ".join("–" if v is None else f"{v:.2f} s" for v in vals)
        b, c = med.get("baseline", {}).get(k), med.get("current", {}).get(k)
        ratio = f"{c / b:.2f}×" if b and c else "–"
        check = "" if c is None or k in CPU_ROWS else f"≤ {target} s: {'met' if c <= target else 'NOT met'}"
        print(f"| {k} | {cells} | {ratio} | {check} |")


def text_of_tokens_from(text: str, run: Path, n: int) -> tuple[str, int]:
    """The first `n` tokens of `text` under the run's tokenizer."""
    from moe_core.run import load_run
    from moe_core.tokenizer import encode_with_offsets

    tok = load_run(run).tokenizer()
    ids, offsets = encode_with_offsets(tok, text[: 20 * n])
    cut = text[: offsets[min(n, len(ids)) - 1][1]]
    return cut, len(encode_with_offsets(tok, cut)[0])


if __name__ == "__main__":
    main()
