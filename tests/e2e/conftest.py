"""Browser-test plumbing: the app served headless on a run, Debian chromium, and waiting for Streamlit."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

from app.launch import app_command
from moe_core.paths import default_run_path
from tests.app.conftest import ROOT, make_tiny_run

CHROMIUM = Path("/usr/bin/chromium")
# headless chromium in a container: no sandbox, no GPU, no update or sync traffic
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError("the app did not become healthy")


@contextmanager
def serve(run: Path, tmp_path: Path):
    """The app on `run` (MOE_EXPLORER_RUN), served headless on a free port; yields its URL, stops it after."""
    port = free_port()
    env = dict(os.environ, MOE_EXPLORER_RUN=str(run), MOE_EXPLORER_RUNS_DIR=str(tmp_path / "runs"))
    env["MOE_EXPLORER_WARM_UMAP"] = "0"
    log = open(tmp_path / "streamlit.log", "wb")
    proc = subprocess.Popen(app_command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def settle(page, timeout: float = 60_000) -> None:
    page.wait_for_timeout(300)  # let a rerun start before waiting for it to finish
    page.wait_for_selector(IDLE, timeout=timeout)


@pytest.fixture
def server(tmp_path):
    """The app on a tiny run (or on $MOE_EXPLORER_E2E_RUN, e.g. the shipped one for a nicer screenshot)."""
    run = Path(os.environ.get("MOE_EXPLORER_E2E_RUN") or make_tiny_run(tmp_path / "runs" / "tiny"))
    with serve(run, tmp_path) as url:
        yield url


@pytest.fixture
def shipped_server(tmp_path):
    """The app on the shipped run (weights at its last step, eval traces at every checkpoint)."""
    with serve(default_run_path(), tmp_path) as url:
        yield url


@pytest.fixture
def browser():
    """A headless Debian chromium, closed afterwards."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install playwright)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
