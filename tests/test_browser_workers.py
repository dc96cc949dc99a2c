"""The sidebar's Workers section in headless chromium: a real Dask cluster with two `nbflow
worker`s, one running a task, and a queue no worker serves, highlighted with its command.
Screenshot: ``test-artifacts/workers-section.png``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.jupyter_procs import JupyterProc, nbflow_env, start_jupyter
from tests.lab_browser import lab_page, require_browser, shot
from tests.test_dask_executor import Cluster
from tests.test_workers_view import BUSY

pytestmark = [pytest.mark.browser, pytest.mark.slow]

sync_api = require_browser()


@pytest.fixture(scope="module")
def busy_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[JupyterProc, Cluster]]:
    """JupyterLab whose NBFLOW_DASK_ADDRESS is a cluster where run 1 of `busy` is under way."""
    root = tmp_path_factory.mktemp("workerslab")
    (root / "pipelines").mkdir()
    path = root / "pipelines" / "busy.py"
    path.write_text(BUSY)
    cluster = Cluster(root)
    driver = None
    try:
        cluster.worker("cpu1", "default")
        cluster.worker("gpu1", "gpu", "default")
        cluster.wait_for(2)
        env = {**nbflow_env(root, "dask"), "NBFLOW_DASK_ADDRESS": cluster.address}
        driver = subprocess.Popen(
            [sys.executable, "-m", "nbflow", "run", str(path), "-e", "dask"],
            env=env,
            cwd=root,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        lab = start_jupyter(root, env, "lab")
        try:
            yield lab, cluster
        finally:
            lab.stop()
    finally:
        if driver is not None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()
        cluster.close()


def test_workers_section_shows_who_runs_what_and_the_unserved_queue(busy_lab) -> None:
    lab, cluster = busy_lab
    with lab_page(lab.url, lab.token) as page:
        page.click('li[data-id="nbflow-sidebar"]', timeout=30_000)  # the sidebar tab
        section = page.locator(".nbflow-workers")
        section.locator("summary").click()
        gpu = section.locator(".nbflow-worker[data-worker='gpu1'] .nbflow-worker-running")
        sync_api.expect(gpu).to_have_text("busy/1/train#1", timeout=60_000)
        sync_api.expect(section.locator(".nbflow-worker[data-worker='cpu1'] .nbflow-worker-running")).to_have_text(
            "idle"
        )
        unserved = section.locator(".nbflow-unserved[data-queue='bigmem']")
        sync_api.expect(unserved).to_contain_text("1 task(s) waiting; no worker serves queue 'bigmem'")
        sync_api.expect(unserved.locator("code")).to_have_text(
            f"nbflow worker --scheduler {cluster.address} --queue bigmem"
        )
        sync_api.expect(section.locator("summary")).to_have_text("Workers: 2 (1 busy) ⚠")
        sync_api.expect(section.locator(".nbflow-workers-cluster")).to_contain_text(f"dask cluster {cluster.address}")
        shot(page, "workers-section")
