"""The JupyterLab sidebar's Assets section in headless Debian chromium: an asset with its
producers and consumers, its lineage on a click, and a run link opening that run's DAG, whose
header names the updates that triggered it. Screenshots: ``test-artifacts/lab-assets*.png``."""

from __future__ import annotations

import os
import textwrap

import pytest

from nbflow import api
from nbflow.scheduler import Scheduler
from tests.jupyter_procs import nbflow_env, start_jupyter
from tests.lab_browser import lab_page, require_browser, shot
from tests.test_assets import CONSUMERS, PRODUCERS, produce, runs_of

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = require_browser()


def test_sidebar_shows_assets_and_their_lineage(tmp_path, monkeypatch):
    root = tmp_path / "jroot"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "producers.py").write_text(textwrap.dedent(PRODUCERS))
    (root / "pipelines" / "consumers.py").write_text(textwrap.dedent(CONSUMERS))
    env = nbflow_env(root)
    for key in [k for k in os.environ if k.startswith("NBFLOW_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("NBFLOW_"):
            monkeypatch.setenv(key, value)
    api.reset()
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()
        producer = produce(sched, "train")
    finally:
        sched.close()
    report = runs_of("report")[0]["id"]
    lab = start_jupyter(root, env, "lab")
    try:
        with lab_page(lab.url, lab.token) as pg:
            pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
            item = pg.locator('.nbflow-asset[data-asset="model"]')
            item.wait_for(timeout=30_000)
            flow = item.locator(".nbflow-asset-flow").inner_text()
            assert flow == "train.fit → model → both, report", flow
            assert "pending: both" in item.inner_text()
            item.locator(".nbflow-asset-name").click()
            event = item.locator(".nbflow-asset-event").first
            event.wait_for(timeout=30_000)
            text = event.inner_text()
            assert f"train run {producer}" in text and f"report run {report}" in text, text
            shot(pg, "lab-assets")
            event.locator(f"a:has-text('report run {report}')").click()
            pg.wait_for_selector(".lm-TabBar-tab:has-text('DAG: report')", timeout=30_000)
            lineage = pg.wait_for_selector(".nbflow-run-lineage", timeout=30_000).inner_text()
            assert lineage == f"Triggered by asset updates: model (train run {producer})", lineage
            shot(pg, "lab-assets-dag")
            both = pg.locator('.nbflow-pipeline[data-pipeline="both"] .nbflow-pipeline-meta').inner_text()
            assert "when updated: features, model" in both, both
    finally:
        lab.stop()
        api.reset()
