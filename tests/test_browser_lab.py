"""JupyterLab as the whole workplace (issue 15), driven in headless Debian chromium as a user
would, with the managed scheduler the server starts: schedule a notebook from its toolbar and
see its first scheduled run succeed; the grid, Gantt and duration views of real runs; clear
downstream with its confirmation; mark success; debug a failed try in a live kernel; export
HTML; the dark theme's badges; the bugs of the walkthrough. Screenshots: ``test-artifacts/lab-*.png``."""

from __future__ import annotations

import shutil
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_notebook
from tests.jupyter_procs import (
    JupyterProc,
    nbflow_env,
    register_pipelines,
    start_jupyter,
    stop_nbflow_processes,
)
from tests.lab_browser import lab_page, require_browser, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = require_browser()
NOTEBOOKS = Path(__file__).parent / "notebooks"

CHAIN = """
from nbflow import Pipeline, task, notebook

with Pipeline("chain", params={"C": 1.0}) as pipeline:
    @task
    def up():
        return (2, "two")  # pickled: the notebook gets a reference to load

    @task
    def mid(x):
        raise ValueError(f"mid got {x}")

    @task
    def down(x):
        return x

    @task
    def side(params):
        return {"C": params["C"]}  # small JSON: shown inline

    @task
    def parse():
        import json

        return json.loads("{bad")  # fails inside the library: its frames are folded in the pane

    u = up()
    down(mid(u))
    side()
    parse()
    notebook("check.ipynb", name="check", inputs={"x": u})
"""
SLOWPOKE = """
from nbflow import Pipeline, shell, task

with Pipeline("slowpoke") as pipeline:
    wait = shell("sleep 8", name="wait")

    @task
    def after():
        return 1

    wait >> after()
"""
MAPPED = """
from nbflow import Pipeline, task

with Pipeline("mapped") as pipeline:
    @task
    def train(C):
        if C == 10:
            raise ValueError("C=10 diverges")
        return C / (1 + C)

    @task(trigger_rule="all_done")
    def best(scores):
        return max(scores)

    best(train.expand(C=[0.1, 1, 10]))
"""
FRAGILE = """
from nbflow import Pipeline, task

with Pipeline("fragile") as pipeline:
    @task
    def only():
        return 1
    only()
"""
CELLS = [
    "%load_ext nbflow",
    "%%nbflow task numbers --outputs numbers\nnumbers = list(range(5))",
    "%%nbflow task total --inputs numbers --outputs total\ntotal = sum(numbers)",
    "%nbflow run this --executor inline",
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """`jupyter lab` with the managed scheduler on, rooted at a folder with a DAG folder
    (chain, slowpoke, a broken fragile), a notebook to schedule and one of cell tasks."""
    root = tmp_path_factory.mktemp("lab15")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "chain.py").write_text(textwrap.dedent(CHAIN))
    (root / "pipelines" / "slowpoke.py").write_text(textwrap.dedent(SLOWPOKE))
    (root / "pipelines" / "fragile.py").write_text(textwrap.dedent(FRAGILE))
    (root / "pipelines" / "mapped.py").write_text(textwrap.dedent(MAPPED))
    make_notebook(
        root / "pipelines" / "check.ipynb",
        [("x = None", ["parameters"]), "import nbflow\nx = nbflow.load(x)", 'assert x[0] < 0, f"x is {x[0]}"'],
    )
    (root / "analysis").mkdir()
    shutil.copy(NOTEBOOKS / "params_ok.ipynb", root / "analysis" / "report.ipynb")
    make_notebook(root / "analysis" / "cells.ipynb", CELLS)
    env = {**nbflow_env(root, executor="local", managed=True), "NBFLOW_PARALLELISM": "2"}
    register_pipelines(root, env)
    time.sleep(1.1)
    (root / "pipelines" / "fragile.py").write_text(
        "from nbflow import Pipeline\nraise RuntimeError('broken on purpose')\n"
    )
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    yield proc
    proc.stop()
    stop_nbflow_processes(root)


@pytest.fixture(scope="module")
def page(lab: JupyterProc) -> Iterator[object]:
    with lab_page(lab.url, lab.token) as pg:
        yield pg


def _command(pg: object, command: str, args: dict | None = None) -> None:
    pg.evaluate("([c, a]) => window.jupyterapp.commands.execute(c, a).then(() => null)", [command, args or {}])


def _sidebar(pg: object) -> None:
    if not pg.locator(".nbflow-sidebar").is_visible():
        pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
    pg.wait_for_selector(".nbflow-pipeline", timeout=30_000)


def _finished(lab: JupyterProc, run_id: int, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        _, details = lab.request("GET", f"runs/{run_id}")
        if details["run"]["state"] in ("success", "failed", "cancelled") or time.monotonic() > deadline:
            return details
        time.sleep(0.5)


def _runs(lab: JupyterProc, name: str) -> list[dict]:
    return lab.request("GET", f"pipelines/{name}/runs?limit=100")[1]["runs"]


def test_schedule_a_notebook_from_its_toolbar_and_its_first_scheduled_run_succeeds(
    page: object, lab: JupyterProc
) -> None:
    pg = page
    _sidebar(pg)
    pg.wait_for_selector('.nbflow-scheduler[data-state="running"]', timeout=90_000)  # the managed scheduler
    assert "Scheduler running since" in pg.inner_text(".nbflow-scheduler")

    # the file browser's context menu offers it for a notebook
    pg.click('li[data-id="filebrowser"]')
    pg.dblclick('.jp-DirListing-item:has-text("analysis")')
    pg.click('.jp-DirListing-item[data-file-type="notebook"]:has-text("report.ipynb")', button="right")
    pg.click('.lm-Menu-item:has-text("Schedule this notebook")', timeout=15_000)
    pg.wait_for_selector(".nbflow-schedule-dialog", timeout=30_000)
    pg.click(".jp-Dialog-button.jp-mod-reject")
    _sidebar(pg)

    _command(pg, "docmanager:open", {"path": "analysis/report.ipynb"})
    button = pg.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .nbflow-notebook-schedule")
    button.wait_for(timeout=60_000)
    button.click()
    dialog = pg.locator(".nbflow-schedule-dialog")
    dialog.wait_for(timeout=30_000)
    assert dialog.locator('input[name="alpha"]').get_attribute("type") == "number"
    assert dialog.locator('input[name="flag"]').get_attribute("type") == "checkbox"
    pg.fill('.nbflow-schedule-dialog input[name="name"]', "report_hourly")
    pg.fill('.nbflow-schedule-dialog input[name="alpha"]', "2.0")
    pg.fill('.nbflow-schedule-dialog input[name="timezone"]', "Europe/Berlin")
    # a cron with a mistake first: the preview says so, and the server's 400 names the field
    pg.select_option('.nbflow-schedule-dialog select[name="preset"]', "custom")
    pg.fill('.nbflow-schedule-dialog input[name="cron"]', "61 * * * *")
    pg.wait_for_selector(".nbflow-schedule-preview .nbflow-error", timeout=15_000)
    pg.click(".jp-Dialog-button.jp-mod-accept")
    pg.wait_for_selector('.nbflow-schedule-errors [data-field="schedule"]', timeout=15_000)
    pg.select_option('.nbflow-schedule-dialog select[name="preset"]', "@hourly")
    pg.wait_for_function("document.querySelectorAll('.nbflow-schedule-next li').length === 5", timeout=15_000)
    assert "Every hour (Europe/Berlin)" in pg.inner_text(".nbflow-schedule-words")
    shot(pg, "lab-1-schedule-dialog")
    pg.click(".jp-Dialog-button.jp-mod-accept")

    pg.wait_for_selector(".lm-TabBar-tab:has-text('DAG: report_hourly')", timeout=30_000)
    assert (lab.root / "pipelines" / "report_hourly.py").is_file()
    # the scheduler picks the new file up and, catchup off, runs the newest ended hour at once
    deadline = time.monotonic() + 240
    while not (runs := [r for r in _runs(lab, "report_hourly") if r["trigger"] == "scheduled"]):
        assert time.monotonic() < deadline, "no scheduled run of report_hourly"
        time.sleep(1)
    run = _finished(lab, runs[0]["id"], timeout=240)
    assert run["run"]["state"] == "success", run
    assert run["run"]["params"]["alpha"] == 2.0 and isinstance(run["run"]["params"]["alpha"], float), run["run"]
    pg.wait_for_selector(
        '.jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view .nbflow-dag-svg[data-run-state="success"]',
        timeout=60_000,
    )
    item = pg.locator('.nbflow-pipeline[data-pipeline="report_hourly"]')
    item.wait_for(timeout=30_000)
    assert "Every hour · next " in item.inner_text()
    shot(pg, "lab-2-first-scheduled-run")


def test_trigger_form_typed_inputs_one_run_per_double_click_and_float_kept(page: object, lab: JupyterProc) -> None:
    pg = page
    _sidebar(pg)
    item = pg.locator('.nbflow-pipeline[data-pipeline="chain"]')
    item.locator(".nbflow-trigger").click()
    c = item.locator('.nbflow-params-form input[name="C"]')
    assert c.get_attribute("type") == "number" and c.get_attribute("step") == "any"  # no "true" for a float
    assert c.input_value() == "1.0"
    c.fill("2.0")
    box, panel = c.bounding_box(), pg.locator(".nbflow-sidebar").bounding_box()
    assert box["x"] + box["width"] <= panel["x"] + panel["width"], (box, panel)  # the input fits the sidebar
    before = len(_runs(lab, "chain"))
    item.locator(".nbflow-run").dblclick()
    pg.wait_for_selector(".lm-TabBar-tab:has-text('DAG: chain')", timeout=30_000)
    time.sleep(2)
    runs = _runs(lab, "chain")
    assert len(runs) == before + 1, runs  # a double click makes one run
    assert runs[0]["params"] == {"C": 2.0} and isinstance(runs[0]["params"]["C"], float), runs[0]
    assert _finished(lab, runs[0]["id"])["run"]["state"] == "failed"


def test_grid_gantt_and_duration_views_of_real_runs(page: object, lab: JupyterProc) -> None:
    pg = page
    for _ in range(2):
        status, answer = lab.request("POST", "pipelines/chain/trigger", {})
        assert status == 201
        _finished(lab, answer["run_id"])
    runs = _runs(lab, "chain")
    assert len(runs) >= 3
    _command(pg, "nbflow:open-dag", {"name": "chain"})
    view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
    view.locator('.nbflow-view-tab[data-view="grid"]').click()
    pg.wait_for_function(f"document.querySelectorAll('.nbflow-grid-cell').length === {6 * len(runs)}", timeout=30_000)
    assert view.locator('.nbflow-grid-cell[data-task="mid"][data-state="failed"]').count() == len(runs)
    assert view.locator('.nbflow-grid-cell[data-task="down"][data-state="upstream_failed"]').count() == len(runs)
    shot(pg, "lab-3-grid")
    view.locator(f'.nbflow-grid-cell[data-task="mid"][data-run="{runs[-1]["id"]}"]').click()  # open that try
    pg.wait_for_function(
        "(t) => document.querySelector('.nbflow-task-pane h3')?.innerText === t", arg="mid", timeout=30_000
    )
    assert "try 1 of 1" in view.locator(".nbflow-task-pane").inner_text()
    assert f"run {runs[-1]['id']}" in view.locator(".nbflow-dag-header").inner_text()

    view.locator('.nbflow-view-tab[data-view="gantt"]').click()
    pg.wait_for_function("document.querySelectorAll('.nbflow-gantt .nbflow-gantt-bar').length >= 4", timeout=30_000)
    labels = view.locator(".nbflow-gantt").text_content()
    assert "up · try 1" in labels and "check · try 1" in labels, labels
    shot(pg, "lab-4-gantt")

    view.locator('.nbflow-view-tab[data-view="durations"]').click()
    pg.wait_for_function("document.querySelectorAll('.nbflow-durations polyline').length >= 3", timeout=30_000)
    assert view.locator(".nbflow-durations circle").count() >= 3 * len(runs) - 2
    shot(pg, "lab-5-durations")

    c_cells = view.locator('.nbflow-runs td[data-column="param:C"]').all_inner_texts()
    assert "2.0" in c_cells, c_cells  # the run's parameters (a column each), the float kept
    assert view.locator(".nbflow-page-next").is_disabled()  # one page of runs


def test_task_actions_clear_mark_debug_export_output_and_log(page: object, lab: JupyterProc) -> None:
    pg = page
    first = _runs(lab, "chain")[-1]["id"]
    _command(pg, "nbflow:open-dag", {"name": "chain", "run": first})
    view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
    view.locator('.nbflow-view-tab[data-view="graph"]').click()
    view.locator("#task-mid").click()
    view.locator(".nbflow-task-pane .nbflow-retry").click()
    pg.wait_for_selector(".nbflow-clear-list li[data-task='down']", timeout=30_000)
    assert pg.locator(".nbflow-clear-list li").all_inner_texts() == ["mid", "down"]
    pg.check(".nbflow-clear-upstream")
    pg.wait_for_selector(".nbflow-clear-list li[data-task='up']", timeout=30_000)
    pg.uncheck(".nbflow-clear-upstream")
    pg.wait_for_function("document.querySelectorAll('.nbflow-clear-list li').length === 2", timeout=15_000)
    shot(pg, "lab-6-clear-confirmation")
    pg.click(".jp-Dialog-button.jp-mod-warn")
    pg.wait_for_function(
        "document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view .nbflow-task-pane')?.innerText.includes('try 2 of 2')",
        timeout=120_000,
    )
    details = _finished(lab, first)
    states = {t["task_id"]: (t["state"], t["try_number"]) for t in details["tasks"]}
    assert states["mid"] == ("failed", 2) and states["up"] == ("success", 1), states

    view.locator(".nbflow-task-pane .nbflow-mark-success").click()
    pg.click(".jp-Dialog-button.jp-mod-accept")
    pg.wait_for_selector(
        ".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view .nbflow-task-pane .nbflow-badge.nbflow-state-success",
        timeout=30_000,
    )
    _, details = lab.request("GET", f"runs/{first}")
    mid = next(t for t in details["tasks"] if t["task_id"] == "mid")
    assert mid["state"] == "success" and mid["reason"] == "marked", mid

    view.locator("#task-side").click()
    pg.wait_for_function(
        "document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view .nbflow-artifact-value')?.innerText.includes('2.0')",
        timeout=30_000,
    )  # small JSON shown inline, with its size
    assert " B " in view.locator(".nbflow-artifacts").inner_text()

    view.locator("#task-parse").click()
    folded = view.locator(".nbflow-task-pane .nbflow-traceback")
    folded.wait_for(timeout=30_000)  # the pane's traceback: the user's frame, library frames folded
    assert 'json.loads("{bad")' in folded.inner_text() and "frames in library code (decoder" in folded.inner_text()
    assert "raw_decode" not in folded.inner_text()

    view.locator("#task-check").click()
    pg.wait_for_selector(
        ".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view .nbflow-task-pane .nbflow-debug", timeout=30_000
    )
    with pg.expect_download(timeout=60_000) as download:
        view.locator(".nbflow-task-pane .nbflow-export-html").click()
    html = Path(download.value.path()).read_text()
    assert "<html" in html and "x is 2" in html
    assert download.value.suggested_filename == f"chain-run{first}-check-try1.html"

    view.locator(".nbflow-task-pane .nbflow-open-output").click()
    tab = pg.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text=f"check · run {first} · try 1")
    tab.first.wait_for(timeout=60_000)
    pg.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output", timeout=60_000)
    shot(pg, "lab-7-output-notebook")

    pg.click(".lm-TabBar-tab:has-text('DAG: chain')")
    view.locator("#task-check").click()
    view.locator(".nbflow-task-pane .nbflow-full-log").click()
    pg.wait_for_selector(".lm-TabBar-tab:has-text('log: check')", timeout=30_000)
    pg.wait_for_function(
        "document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-log-view .nbflow-log-full')?.innerText.includes('x is 2')",
        timeout=30_000,
    )

    pg.click(".lm-TabBar-tab:has-text('DAG: chain')")
    view.locator("#task-check").click()
    view.locator(".nbflow-task-pane .nbflow-debug").click()
    pg.locator(".lm-TabBar-tab .lm-TabBar-tabLabel", has_text=f"check-debug-run{first}-try1.ipynb").first.wait_for(
        timeout=60_000
    )
    pg.wait_for_selector(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-cell", timeout=60_000)
    assert (lab.root / "pipelines" / f"check-debug-run{first}-try1.ipynb").is_file()
    pg.wait_for_function(
        "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'", timeout=90_000
    )
    _command(pg, "notebook:run-all-cells")
    pg.wait_for_function(
        "[...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output')]"
        ".some(e => e.innerText.includes('x is 2'))",
        timeout=90_000,
    )  # its inputs loaded, it fails where the try did
    shot(pg, "lab-8-debug-this-try")


def test_a_pending_task_offers_no_output_and_the_dark_theme_badge_reads(page: object, lab: JupyterProc) -> None:
    pg = page
    status, answer = lab.request("POST", "pipelines/slowpoke/trigger", {})
    assert status == 201
    _command(pg, "nbflow:open-dag", {"name": "slowpoke"})
    view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
    view.locator('.nbflow-view-tab[data-view="graph"]').click()
    view.locator("#task-after").click()
    pane = view.locator(".nbflow-task-pane")
    pane.locator(".nbflow-badge.nbflow-state-pending").wait_for(timeout=60_000)
    assert pane.locator(".nbflow-open-output").count() == 0 and "not run yet" in pane.inner_text()
    _command(pg, "apputils:change-theme", {"theme": "JupyterLab Dark"})
    pg.wait_for_selector('body[data-jp-theme-light="false"]', state="attached", timeout=30_000)
    pg.wait_for_timeout(1000)
    badge = pane.locator(".nbflow-badge.nbflow-state-pending")
    ratio = badge.evaluate(CONTRAST)
    shot(pg, "lab-9-dark-theme")
    assert ratio >= 4.5, f"pending badge contrast {ratio:.2f} in the dark theme"
    assert view.locator(".nbflow-dag-svg svg > g > polygon").count() == 0  # no white page behind the DAG
    _command(pg, "apputils:change-theme", {"theme": "JupyterLab Light"})
    pg.wait_for_selector('body[data-jp-theme-light="true"]', state="attached", timeout=30_000)
    _finished(lab, answer["run_id"])


def test_import_error_said_once_and_a_broken_file_asks_before_running(page: object, lab: JupyterProc) -> None:
    pg = page
    _sidebar(pg)
    item = pg.locator('.nbflow-pipeline[data-pipeline="fragile"]')
    error = item.locator(".nbflow-import-error")
    text = error.inner_text()
    assert "broken on purpose" in text and text.count("fragile.py:") == 1, text
    assert error.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the import error is clipped"
    item.locator(".nbflow-trigger").click()
    item.locator(".nbflow-run").click()
    pg.wait_for_selector(".jp-Dialog:has-text('the pipeline file is broken')", timeout=30_000)
    shot(pg, "lab-10-broken-file-asks")
    pg.click(".jp-Dialog-button:has-text('Fix it first')")
    pg.wait_for_function(
        "document.querySelector('.nbflow-pipeline[data-pipeline=\"fragile\"] .nbflow-error')?.innerText.includes('Not triggered')",
        timeout=15_000,
    )
    assert not _runs(lab, "fragile")


def test_dag_button_finds_the_pipeline_of_cell_tasks_just_run(page: object, lab: JupyterProc) -> None:
    pg = page
    _command(pg, "docmanager:open", {"path": "analysis/cells.ipynb"})
    pg.wait_for_function(
        "window.jupyterapp.shell.currentWidget?.sessionContext?.session?.kernel?.status === 'idle'", timeout=90_000
    )
    _command(pg, "notebook:run-all-cells")
    deadline = time.monotonic() + 120
    while not [
        r
        for r in lab.request("GET", "pipelines")[1]["pipelines"]
        if r["name"] == "cells" and r["last_run"] and r["last_run"]["state"] == "success"
    ]:
        assert time.monotonic() < deadline, "the cell tasks did not run"
        time.sleep(1)
    pg.click(".jp-NotebookPanel:not(.lm-mod-hidden) .nbflow-notebook-dag")
    pg.wait_for_selector(".lm-TabBar-tab:has-text('DAG: cells')", timeout=30_000)
    status, answer = lab.request("POST", "pipelines/cells/trigger", {})  # only in the kernel: refused, not stuck
    assert status == 409 and "only in a notebook kernel" in answer["message"], answer


def test_tabs_and_sidebar_come_back_after_a_reload(page: object) -> None:
    pg = page
    _sidebar(pg)
    pg.wait_for_timeout(1500)  # the layout is saved after a change
    pg.reload()
    pg.wait_for_selector(".jp-LabShell", timeout=60_000)
    pg.wait_for_selector(".lm-TabBar-tab:has-text('DAG: chain')", timeout=60_000)
    pg.wait_for_selector(".lm-TabBar-tab:has-text('log: check')", timeout=60_000)
    pg.wait_for_selector(".nbflow-sidebar:not(.lm-mod-hidden) .nbflow-pipeline", timeout=60_000)
    shot(pg, "lab-11-restored")


CONTRAST = """e => {
  const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => {
    const f = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const style = getComputedStyle(e);
  const a = lum(rgb(style.color)), b = lum(rgb(style.backgroundColor));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}"""


def test_a_mapped_task_is_one_node_with_a_count_badge_that_expands_on_click(page: object, lab: JupyterProc) -> None:
    pg = page
    status, answer = lab.request("POST", "pipelines/mapped/trigger", {})
    assert status == 201
    details = _finished(lab, answer["run_id"])
    assert {t["task_id"]: t["state"] for t in details["tasks"]}["train[2]"] == "failed"
    _command(pg, "nbflow:open-dag", {"name": "mapped"})
    view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
    view.locator('.nbflow-view-tab[data-view="graph"]').click()
    pg.wait_for_selector(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-svg #task-train", timeout=30_000)
    assert "train [3/3]" in view.locator("#task-train").text_content()  # one node, a count badge
    assert view.locator(".nbflow-dag-svg g.node").count() == 2  # no node per instance
    view.locator("#task-train").click()
    pg.wait_for_selector(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-instances tr", timeout=30_000)
    rows = view.locator(".nbflow-instances tr").all_inner_texts()
    assert len(rows) == 3
    assert rows[0].split() == ["train[0]", "C=0.1", "success"] and rows[2].split() == ["train[2]", "C=10", "failed"]
    assert view.locator(".nbflow-instances-title").inner_text() == "3/3 instances finished"
    assert "mapped into 3 instances" in view.locator(".nbflow-task-pane").inner_text()
    shot(pg, "lab-10-mapped")
    view.locator('.nbflow-instance[data-task="train[2]"]').click()  # open one instance: its own try, error and log
    pg.wait_for_function(
        "(t) => document.querySelector('.nbflow-task-pane h3')?.innerText === t", arg="train[2]", timeout=30_000
    )
    pane = view.locator(".nbflow-task-pane")
    assert "instance 2 of train" in pane.inner_text() and "C=10 diverges" in pane.inner_text()
    assert "try 1 of 1" in pane.inner_text()
    assert view.locator("#task-train.nbflow-node-selected").count() == 1  # its mapped task's node stays selected
    pane.locator(".nbflow-map-parent").click()
    pg.wait_for_function(
        "(t) => document.querySelector('.nbflow-task-pane h3')?.innerText === t", arg="train", timeout=30_000
    )
