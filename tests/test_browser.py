"""JupyterLab with the nbflow extension, driven in headless Debian chromium by Playwright:
open the panel, see the example pipeline, trigger it, watch the nodes turn green, open an
output notebook. Screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = Path("/usr/bin/chromium")
EXAMPLE = Path(__file__).parent.parent / "notebooks" / "ml_pipeline"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]

sync_api = pytest.importorskip("playwright.sync_api", reason="Python playwright is not installed (pip install -e '.[dev]')")
if not CHROMIUM.exists():
    pytest.skip("Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)", allow_module_level=True)
pytest.importorskip("sklearn", reason="the example pipeline needs scikit-learn (pip install -e '.[examples]')")


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """`jupyter lab` rooted at a folder holding the example pipeline as its DAG folder."""
    root = tmp_path_factory.mktemp("labroot")
    shutil.copytree(EXAMPLE, root / "pipelines", ignore=shutil.ignore_patterns("pipeline_tasks.py", ".*"))
    env = nbflow_env(root)
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "lab")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def page(lab: JupyterProc) -> Iterator[object]:
    """A chromium page logged in to JupyterLab with the token."""
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        pg = context.new_page()
        pg.goto(f"{lab.url}lab?token={lab.token}", timeout=60_000)
        pg.wait_for_selector(".jp-LabShell", timeout=60_000)
        try:  # JupyterLab's "get notified about news?" toast would cover the screenshots
            pg.locator(".jp-Notification-Toast-Close, .Toastify__close-button").first.click(timeout=5_000)
        except sync_api.TimeoutError:
            pass
        yield pg
        context.close()
        browser.close()


def test_panel_trigger_live_dag_and_output_notebook(page: object, lab: JupyterProc) -> None:
    pg = page
    pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)  # the sidebar tab
    item = pg.locator('.nbflow-pipeline[data-pipeline="ml_notebooks"]')
    item.wait_for(timeout=30_000)
    assert "0 3 * * *" in item.inner_text()

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
    assert "tries: 1" in pg.inner_text(".nbflow-task-pane")
    pg.screenshot(path=str(ARTIFACTS / "browser-3-success.png"))
    pg.click(".nbflow-task-pane .nbflow-open-output")
    tab = pg.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text="output.ipynb")
    tab.first.wait_for(timeout=60_000)
    pg.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Cell .jp-OutputArea-output", timeout=60_000)
    pg.wait_for_timeout(1000)
    pg.screenshot(path=str(ARTIFACTS / "browser-4-output-notebook.png"))
    assert pg.locator(".nbflow-dag-view .nbflow-table tr[data-run]").count() >= 1


def test_command_palette_opens_the_panel(page: object) -> None:
    pg = page
    pg.keyboard.press("Control+Shift+C")
    pg.wait_for_selector(".lm-CommandPalette-input", timeout=15_000)
    pg.fill(".lm-CommandPalette-input", "nbflow: Open pipelines")
    pg.wait_for_selector('.lm-CommandPalette-item[data-command="nbflow:open-panel"]', timeout=15_000)
    pg.keyboard.press("Escape")
