"""JupyterLab with the nbflow extension, driven in headless Debian chromium by Playwright:
open the panel, see the example pipeline, trigger it, watch the nodes turn green, open an
output notebook. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter
from tests.lab_browser import ARTIFACTS, lab_page, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
EXAMPLE = Path(__file__).parent.parent / "notebooks" / "ml_pipeline"

sync_api = require_browser()
pytest.importorskip("sklearn", reason="the example pipeline needs scikit-learn (pip install -e '.[examples]')")

# a run that is still running when the test clicks "Cancel run": its shell command sleeps for
# 120.<this pid> s, a duration no other test or earlier session uses
NAP = f"120.{os.getpid()}"
SLOW = f"""
from nbflow import Pipeline, shell

with Pipeline("slow") as pipeline:
    shell("echo started; sleep {NAP}", name="nap")
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """`jupyter lab` rooted at a folder holding the example pipeline as its DAG folder."""
    root = tmp_path_factory.mktemp("labroot")
    shutil.copytree(EXAMPLE, root / "pipelines", ignore=shutil.ignore_patterns("pipeline_tasks.py", ".*"))
    (root / "pipelines" / "slow.py").write_text(SLOW)
    env = nbflow_env(root)
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "lab")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def page(lab: JupyterProc) -> Iterator[object]:
    """A chromium page logged in to JupyterLab with the token."""
    with lab_page(lab.url, lab.token) as pg:
        yield pg


def test_panel_trigger_live_dag_and_output_notebook(page: object, lab: JupyterProc) -> None:
    pg = page
    pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)  # the sidebar tab
    item = pg.locator('.nbflow-pipeline[data-pipeline="ml_notebooks"]')
    item.wait_for(timeout=30_000)
    assert "At 03:00 · next " in item.inner_text()  # the schedule in words, with the next run
    assert item.locator(".nbflow-pipeline-meta").get_attribute("title") == "0 3 * * *"

    item.locator(".nbflow-trigger").click()
    pg.fill('.nbflow-params-form input[name="C"]', "0.5")
    pg.screenshot(path=str(ARTIFACTS / "browser-1-params-form.png"))
    pg.click(".nbflow-params-form .nbflow-run")

    # the DAG view opens and follows the run; nodes start uncoloured or queued/running
    pg.wait_for_selector(".nbflow-dag-svg #task-prepare", timeout=30_000)
    pg.wait_for_selector(".nbflow-dag-svg g.node:is(.nbflow-queued, .nbflow-running, .nbflow-success)", timeout=30_000)
    pg.screenshot(path=str(ARTIFACTS / "browser-2-running.png"))
    pg.wait_for_function(
        "document.querySelectorAll('.nbflow-dag-svg g.node.nbflow-success').length === 4",
        timeout=150_000,
    )
    pg.wait_for_selector('.nbflow-dag-svg[data-run-state="success"]', timeout=30_000)
    fill = pg.eval_on_selector("#task-train path, #task-train polygon", "e => getComputedStyle(e).fill")
    assert fill.replace(" ", "") == "rgb(143,219,143)", fill  # the success green

    pg.click("#task-train")
    pg.wait_for_selector(".nbflow-task-pane .nbflow-open-output", timeout=30_000)
    assert "try 1 of 1" in pg.inner_text(".nbflow-task-pane")
    pg.screenshot(path=str(ARTIFACTS / "browser-3-success.png"))
    pg.click(".nbflow-task-pane .nbflow-open-output")
    tab = pg.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text="train · run 1 · try 1")
    tab.first.wait_for(timeout=60_000)
    pg.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-OutputArea-output", timeout=60_000)
    pg.wait_for_timeout(1000)
    pg.screenshot(path=str(ARTIFACTS / "browser-4-output-notebook.png"))
    assert pg.locator(".nbflow-dag-view .nbflow-table tr[data-run]").count() >= 1

    # "Retry task" on the finished run: train and what is downstream of it run again
    pg.click(".lm-TabBar-tab:has-text('DAG: ml_notebooks')")
    pg.click("#task-train")
    pg.click(".nbflow-task-pane .nbflow-retry", timeout=30_000)
    pg.wait_for_selector(".nbflow-clear-list li[data-task='report']", timeout=30_000)  # what it will clear
    pg.click(".jp-Dialog-button.jp-mod-warn")
    pg.wait_for_function(
        "document.querySelector('.nbflow-task-pane') && document.querySelector('.nbflow-task-pane').innerText.includes('try 2 of 2')",
        timeout=150_000,
    )
    pg.wait_for_selector('.nbflow-dag-svg[data-run-state="success"]', timeout=150_000)
    status, run = lab.request("GET", "runs/1")
    assert status == 200, run
    tries = {t["task_id"]: t["try_number"] for t in run["tasks"]}
    assert tries == {"prepare": 1, "train": 2, "evaluate": 2, "report": 2}, tries
    pg.screenshot(path=str(ARTIFACTS / "browser-5-retried.png"))


def _run_to_end(lab: JupyterProc, body: dict) -> dict:
    status, answer = lab.request("POST", "pipelines/ml_notebooks/trigger", body)
    assert status == 201, answer
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        status, details = lab.request("GET", f"runs/{answer['run_id']}")
        if details["run"]["state"] in ("success", "failed", "cancelled"):
            return details
        time.sleep(1)
    raise AssertionError(f"run {answer['run_id']} did not end: {details['run']}")


def test_node_panel_says_which_attempt_a_cached_task_reuses(page: object, lab: JupyterProc) -> None:
    first = _run_to_end(lab, {"params": {"C": 0.25}})
    assert first["run"]["state"] == "success", first
    second = _run_to_end(lab, {"params": {"C": 0.25}, "incremental": True})
    assert {t["state"] for t in second["tasks"]} == {"cached"}, second["tasks"]
    pg = page
    name = pg.locator('.nbflow-pipeline[data-pipeline="ml_notebooks"] .nbflow-pipeline-name')
    if not name.is_visible():  # the sidebar tab toggles: open it unless an earlier test did
        pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
    name.click(timeout=30_000)
    row = pg.locator(f'.nbflow-dag-view .nbflow-table tr[data-run="{second["run"]["id"]}"]')
    row.first.click(timeout=30_000)
    pg.wait_for_selector(".nbflow-dag-svg #task-train.nbflow-cached", timeout=30_000)
    fill = pg.eval_on_selector("#task-train path, #task-train polygon", "e => getComputedStyle(e).fill")
    assert fill.replace(" ", "") == "rgb(128,203,196)", fill  # cached teal, not the success green
    pg.click("#task-train")
    pane = pg.locator(".nbflow-task-pane .nbflow-why")
    pane.wait_for(timeout=30_000)
    assert pane.inner_text() == f"reused from run {first['run']['id']}, try 1"
    assert "state: cached" in pg.inner_text(".nbflow-task-pane")
    pg.screenshot(path=str(ARTIFACTS / "browser-6-cached.png"))


def test_command_palette_opens_the_panel(page: object) -> None:
    pg = page
    pg.keyboard.press("Control+Shift+C")
    pg.wait_for_selector(".lm-CommandPalette-input", timeout=15_000)
    pg.fill(".lm-CommandPalette-input", "nbflow: Open pipelines")
    pg.wait_for_selector('.lm-CommandPalette-item[data-command="nbflow:open-panel"]', timeout=15_000)
    pg.keyboard.press("Escape")


def test_cancel_run_button_kills_the_running_task(page: object, lab: JupyterProc) -> None:
    pg = page
    item = pg.locator('.nbflow-pipeline[data-pipeline="slow"]')
    if not item.is_visible():  # the sidebar tab toggles: open it unless an earlier test did
        pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
    item.wait_for(timeout=30_000)
    item.locator(".nbflow-trigger").click()
    pg.click(".nbflow-params-form .nbflow-run")
    pg.wait_for_selector(".nbflow-dag-svg #task-nap.nbflow-running", timeout=60_000)
    pg.click(".nbflow-dag-header .nbflow-cancel", timeout=30_000)
    pg.wait_for_selector('.nbflow-dag-svg[data-run-state="cancelled"]', timeout=60_000)
    pg.screenshot(path=str(ARTIFACTS / "browser-6-cancelled.png"))
    status, runs = lab.request("GET", "pipelines/slow/runs")
    assert status == 200, runs
    run_id = runs["runs"][0]["id"]
    status, run = lab.request("GET", f"runs/{run_id}")
    nap = next(t for t in run["tasks"] if t["task_id"] == "nap")
    assert run["run"]["state"] == "cancelled" and nap["state"] == "cancelled", run
    # the command was killed, not waited out: no `sleep 120.<pid>` is left (NBFLOW_KILL_GRACE is 2 s here)
    deadline = time.monotonic() + 15
    while _sleepers() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _sleepers(), _diagnosis(lab, run_id)


def _diagnosis(lab: JupyterProc, run_id: int) -> str:
    """What to look at when the command outlived its cancelled run: who started it, the driver's log."""
    lines = []
    for pid in _sleepers():
        proc = psutil.Process(pid)
        parent = proc.parent()
        lines.append(
            f"sleep {pid} started {time.time() - proc.create_time():.1f} s ago, parent "
            f"{parent.pid if parent else None} {parent.cmdline() if parent else ''}"
        )
    for log in sorted((lab.root / "home" / "drivers").glob("*.log")):
        lines.append(f"--- {log.name}\n{log.read_text()[-3000:]}")
    status, run = lab.request("GET", f"runs/{run_id}")
    lines.append(f"run {run_id}: {run}")
    return "\n".join(lines)


def _sleepers() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == ["sleep", NAP]]
