"""Chromium's cost of drawing Token routing's coloured text of 2,000 tokens: Streamlit Markdown vs the component.

    python bench/text_render.py [--renders 6] [--series 2]

Serves a small Streamlit app (written to a temporary folder) that routes a 2,000-token cut of the shipped run's eval
documents once, and then, on every second click of its button, draws the coloured text (`figures.routing.
colored_text_html`, 2,000 spans with their tooltips) in one of three ways, chosen by ?v=: `md` (st.markdown with
unsafe_allow_html, the way before), `comp` (the `moe_token_text` component: `figures.routing.TEXT_JS` sets it as
innerHTML, the way now) or `none` (nothing: the cost of a rerun alone). Each timed click draws the text afresh (the
click before removed it). Prints, per variant, the medians of the wall time until the script is idle and the text
is there, of chromium's main-thread CPU (CDP Performance.getMetrics ThreadTime) and of the CPU seconds of every
chromium process (psutil).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from app_timings import ARGS, CHROMIUM, free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = """
import sys
sys.path.insert(0, {root!r}); sys.path.insert(0, {bench!r})
from pathlib import Path
import streamlit as st
from analysis import figures, tables
from analysis.sources import open_source
from app_timings import text_of_tokens

@st.cache_resource
def html():
    run = Path({root!r}) / "sample_data" / "default_run"
    text, _ = text_of_tokens(run, 2000)
    trace = open_source(str(run)).record((("d", "", text),), None)
    top1 = tables.top1_table(trace.routing, 0)
    summary = tables.routing_summary(trace.routing[trace.routing["layer"] == 0]).droplevel(1)
    tips = {{row: f"token {{i}} · layer 0: {{summary.get(row, '')}}" for i, row in enumerate(trace.tokens.index)}}
    return figures.routing.colored_text_html(text, trace.tokens, top1, trace.n_experts, tips, 0)

page = html()
n = st.session_state.setdefault("n", 0)
if st.button("draw"):
    st.session_state["n"] = n = n + 1
if n % 2:
    way = st.query_params.get("v", "md")
    if way == "md":
        st.markdown(page, unsafe_allow_html=True)
    elif way == "comp":
        draw = st.components.v2.component("moe_token_text", js=figures.routing.TEXT_JS, isolate_styles=False)
        draw(key="text", data={{"html": page}})
st.caption(f"done {{n}}")
"""
READY_JS = """([n, way]) => {
  const app = document.querySelector("[data-testid='stApp']");
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  if (![...document.querySelectorAll("[data-testid='stCaptionContainer']")].some(e => e.innerText === 'done ' + n))
    return false;
  return way === 'none' || n % 2 === 0 || !!document.querySelector('.moe-tokens [data-token]');
}"""


def main_thread(cdp) -> float:
    """CPU seconds of the page's main thread so far (CDP Performance.getMetrics ThreadTime)."""
    return next(m["value"] for m in cdp.send("Performance.getMetrics")["metrics"] if m["name"] == "ThreadTime")


def chromium_cpu() -> float:
    import psutil

    total = 0.0
    for child in psutil.Process().children(recursive=True):
        try:
            if "chrom" in child.name():
                t = child.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--renders", type=int, default=6, help="fresh renders per variant and series")
    p.add_argument("--series", type=int, default=2, help="times the variants are run, one after the other")
    args = p.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="moe_text_render_"))
    (folder / "app.py").write_text(APP.format(root=str(ROOT), bench=str(ROOT / "bench")))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "streamlit", "run", str(folder / "app.py"), "--server.headless", "true",
           "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false",
           "--runner.postScriptGC", "false", "--server.port", str(port)]  # fmt: skip
    with open(folder / "streamlit.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        print(f"# load average {os.getloadavg()[0]:.2f}; medians of {args.renders} fresh renders")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            for _ in range(args.series):
                for way in ("none", "md", "comp"):
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    page.goto(f"{url}/?v={way}")
                    button = page.locator("[data-testid='stMain'] button").first
                    button.wait_for(timeout=120_000)
                    page.wait_for_timeout(1000)
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                    wall, main_cpu, all_cpu = [], [], []
                    for n in range(1, 2 * args.renders + 1):
                        t0, m0, c0 = time.perf_counter(), main_thread(cdp), chromium_cpu()
                        button.click()
                        page.wait_for_function(READY_JS, arg=[n, way], polling=20, timeout=60_000)
                        if n % 2:  # drawn afresh (the click before removed it)
                            wall.append(time.perf_counter() - t0)
                            main_cpu.append(main_thread(cdp) - m0)
                            all_cpu.append(chromium_cpu() - c0)
                        page.wait_for_timeout(300)
                    page.close()
                    med = statistics.median
                    print(f"{way:5s} wall {med(wall):.2f} s · chromium main thread {med(main_cpu):.3f} s · "
                          f"all chromium {med(all_cpu):.2f} s · load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
