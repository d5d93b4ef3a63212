"""A live class under load: 30 students answer at once from real browser contexts, the teacher watches.

    python bench/class_load.py --students 30

Starts the app (`python -m streamlit run app/main.py`, this tree, the shipped run) with the class store in a
fresh temporary SQLite file, then in one headless chromium (Playwright, async):
1. a teacher context (1280x720) opens Live class and starts a class (the question of lesson 1 opens);
2. `--students` phone contexts (400x800) open the join link at the same time, join, and each sends
   `--answers` answers (changing its mind; the last one counts), all concurrently;
3. the teacher's page is timed while that happens: Live class opened afresh (`class_teacher?class=CODE`, what a
   reload shows) until its tally is drawn, again and again, and how long after the last student's last answer
   the teacher's own live tally (never reloaded) shows every answer;
4. checks: the store's tally equals the students' last choices (0 lost, none counted twice) and the teacher's
   page shows "N answered".
First, the store alone (no browsers): 30 threads each send 1,000 answers at once (`--store-only` stops there).
The server's memory is its resident set (VmRSS) before the class and its peak (VmHWM) after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from app.classroom.content import QUESTIONS  # noqa: E402
from app.classroom.store import ClassStore, StoreConfig  # noqa: E402
from app.launch import app_command  # noqa: E402
from moe_core.paths import default_run_path  # noqa: E402
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS, IDLE  # noqa: E402

TIMEOUT = 600_000  # ms: 30 phones on 2 shared cores are slow, which is not what this measures


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


def expected_answers(results) -> list[int]:
    return [1 for option, _ in results if option is not None]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def student(browser, link: str, i: int, answers: int, lag: dict) -> tuple[int | None, float]:
    """Join from a phone and send `answers` answers; returns (last option the page confirmed, seconds from open
    to the last one sent). A client that times out keeps its last confirmed answer (None if none)."""
    try:
        return await _student(browser, link, i, answers, lag)
    except Exception as err:  # noqa: BLE001 - a browser that gave up: reported, not hidden
        print(f"student {i}: {type(err).__name__}: {str(err).splitlines()[0]}", file=sys.stderr)
        return lag.get(("confirmed", i)), float("nan")


async def _student(browser, link: str, i: int, answers: int, lag: dict) -> tuple[int, float]:
    options = QUESTIONS["l1"].options
    ctx = await browser.new_context(viewport={"width": 400, "height": 800})
    page = await ctx.new_page()
    start = time.perf_counter()
    await page.goto(link, timeout=TIMEOUT)
    await page.wait_for_selector(IDLE, timeout=TIMEOUT)
    await page.get_by_role("button", name="Join").click(timeout=TIMEOUT)
    await page.get_by_text(QUESTIONS["l1"].text).wait_for(timeout=TIMEOUT)
    option = i % len(options)
    for j in range(answers):
        option = (i + j) % len(options)
        await page.get_by_text(options[option], exact=True).click(timeout=TIMEOUT)
        await page.get_by_role("button", name="Send my answer").click(timeout=TIMEOUT)
        await page.get_by_text("Sent: " + options[option]).wait_for(timeout=TIMEOUT)
        lag[("confirmed", i)] = option
    lag["last_sent"] = max(lag.get("last_sent", 0.0), time.perf_counter())
    return option, time.perf_counter() - start


async def run(args) -> dict:
    from playwright.async_api import async_playwright

    tmp = Path(tempfile.mkdtemp(prefix="class_load_"))
    db = tmp / "classes.sqlite3"
    port = free_port()
    env = dict(os.environ, MOE_EXPLORER_RUN=str(default_run_path()), MOE_EXPLORER_CLASS_DB=str(db))
    env.update(MOE_EXPLORER_WARM_UMAP="0", MOE_EXPLORER_RUNS_DIR=str(tmp / "runs"), PYTHONPATH=str(ROOT))
    log = open(tmp / "streamlit.log", "wb")
    server = subprocess.Popen(app_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                break
            except OSError:
                await asyncio.sleep(0.3)
        out = {"rss_idle_mb": memory_kb(server.pid)["VmRSS"] / 1024}
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
            teacher = await (await browser.new_context(viewport={"width": 1280, "height": 720})).new_page()
            await teacher.goto(url + "/class_teacher", timeout=TIMEOUT)
            await teacher.wait_for_selector(IDLE, timeout=TIMEOUT)
            await teacher.get_by_role("button", name="Start a class").click()
            heading = teacher.get_by_role("heading", name="Code:")
            await heading.wait_for(timeout=TIMEOUT)
            code = (await heading.inner_text()).split(":")[1].strip()
            link = f"{url}/class_join?class={code}"

            watcher_ctx = await browser.new_context(viewport={"width": 1280, "height": 720})

            async def reload_teacher() -> list[float]:
                times = []  # the teacher's page opened afresh while the class answers: until its tally is drawn
                while not done.is_set():
                    await asyncio.sleep(20)  # a teacher who reloads now and then, not a load generator
                    page = await watcher_ctx.new_page()
                    t0 = time.perf_counter()
                    await page.goto(f"{url}/class_teacher?class={code}", timeout=TIMEOUT)
                    await page.get_by_text(" answered").wait_for(timeout=TIMEOUT)
                    await page.locator(".js-plotly-plot").first.wait_for(timeout=TIMEOUT)
                    times.append(time.perf_counter() - t0)
                    await page.close()
                return times

            done, lag = asyncio.Event(), {}
            t0 = time.perf_counter()
            watcher = asyncio.create_task(reload_teacher())
            results = await asyncio.gather(
                *(student(browser, link, i, args.answers, lag) for i in range(args.students))
            )
            done.set()
            reload_times = await watcher
            out["class_s"] = time.perf_counter() - t0
            want = f" · {sum(expected_answers(results))} answered"  # what the confirmed answers should show
            await teacher.get_by_text(want).wait_for(timeout=TIMEOUT)
            out["tally_lag_s"] = time.perf_counter() - lag["last_sent"]
            expected = [0] * len(QUESTIONS["l1"].options)
            for option, _ in results:
                if option is not None:
                    expected[option] += 1
            finished = [s for _, s in results if s == s]  # NaN: a client that timed out
            tally = ClassStore(StoreConfig(db)).tally(code)
            out.update(
                tally=tally,
                expected=expected,
                lost=sum(expected) - sum(tally),
                correct=tally == expected,
                student_s=statistics.median(finished),
                student_max_s=max(finished),
                clients_failed=len(results) - len(finished),
                teacher_reload_s=statistics.median(reload_times) if reload_times else float("nan"),
                teacher_reload_max_s=max(reload_times, default=float("nan")),
                teacher_reloads=len(reload_times),
            )
            mem = memory_kb(server.pid)
            out["rss_after_mb"], out["rss_peak_mb"] = mem["VmRSS"] / 1024, mem["VmHWM"] / 1024
            await browser.close()
        return out
    finally:
        server.terminate()
        server.wait(20)
        log.close()


def store_load(students: int, answers: int) -> tuple[float, bool]:
    """The store alone, without browsers: `students` threads each join and send `answers` answers at once.
    Returns (answers written per second, whether the tally equals the students' last choices)."""
    from concurrent.futures import ThreadPoolExecutor

    store = ClassStore(StoreConfig(Path(tempfile.mkdtemp(prefix="class_store_")) / "classes.sqlite3"))
    code, teacher = store.start_class()
    store.set_question(code, teacher, "l1", 3)

    def one(i: int) -> int:
        token = f"bench-student-{i:04d}"
        store.join(code, token)
        for j in range(answers):
            store.answer(code, token, "l1", (i + j) % 3)
        return (i + answers - 1) % 3

    t0 = time.perf_counter()
    with ThreadPoolExecutor(students) as pool:
        last = list(pool.map(one, range(students)))
    seconds = time.perf_counter() - t0
    return students * answers / seconds, store.tally(code) == [last.count(o) for o in range(3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--answers", type=int, default=3, help="answers each student sends (the last one counts)")
    ap.add_argument("--store-only", action="store_true", help="only the store, 30 threads x 1,000 answers")
    args = ap.parse_args()
    rate, ok = store_load(30, 1000)
    print(f"store alone: 30 threads x 1,000 answers: {rate:,.0f} answers/s, tally correct: {'yes' if ok else 'NO'}")
    if args.store_only:
        sys.exit(0 if ok else 1)
    load_before = os.getloadavg()[0]
    r = asyncio.run(run(args))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"load average (1 min) before / after: {load_before:.1f} / {os.getloadavg()[0]:.1f}")
    print(f"{args.students} students x {args.answers} answers, all at once, in {r['class_s']:.1f} s")
    print("| quantity | value |\n|---|---|")
    print(f"| answers in the store (expected) | {sum(r['tally'])} ({sum(r['expected'])}), per option {r['tally']} |")
    print(f"| lost answers | {r['lost']} |")
    print(f"| clients that timed out (their confirmed answers still counted) | {r['clients_failed']} |")
    print(f"| tally equals the students' last choices | {'yes' if r['correct'] else 'NO'} |")
    print(
        f"| student: open link → last answer sent, median (max) | {r['student_s']:.1f} s ({r['student_max_s']:.1f} s) |"
    )
    print(
        f"| teacher's page opened afresh until the tally is drawn, median (max) of {r['teacher_reloads']} | "
        f"{r['teacher_reload_s']:.1f} s ({r['teacher_reload_max_s']:.1f} s) |"
    )
    print(f"| live tally shows every answer, after the last one is sent | {r['tally_lag_s']:.1f} s |")
    memory = f"{r['rss_idle_mb']:.0f}, {r['rss_after_mb']:.0f}, {r['rss_peak_mb']:.0f} MB"
    print(f"| server memory: idle, after, peak (VmRSS, VmHWM) | {memory} |")
    if not r["correct"] or r["lost"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
