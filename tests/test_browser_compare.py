"""Parameter sweeps and comparing runs in JupyterLab (issue 14), in headless Debian chromium as a
user would: a 3-point sweep from the trigger form's "sweep" toggle (a bad value named with its
point first), the runs table's parameters, metric column, sorting and sweep link, the Compare
view's table and chart (log x), two runs picked to compare, and nbdime's diff of two runs'
output notebooks. Screenshots: ``test-artifacts/compare-*.png``.

JupyterLab loads this tree's build of the extension (``nbflow/labextension``, ``jlpm build`` in
``extension/``; :func:`tests.jupyter_procs.with_tree_labextension`), not the copy an install
left in the environment: the sweep toggle the first test finds exists only in this build."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Iterator

import pytest

from tests.jupyter_procs import (
    TREE_LABEXTENSION,
    JupyterProc,
    nbflow_env,
    register_pipelines,
    start_jupyter,
    stop_nbflow_processes,
)
from tests.lab_browser import lab_page, require_browser, shot
from tests.test_server_diff import SCORED, score_notebook

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = require_browser()
pytest.importorskip("nbdime", reason="nbdime is a dependency of nbflow (pip install -e .)")
if not (TREE_LABEXTENSION / "package.json").exists():
    pytest.skip("the extension is not built in this tree: cd extension && jlpm build", allow_module_level=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    """`jupyter lab` (no managed scheduler: a background driver runs what the UI queues) with the
    `scored` pipeline: a gate task, then a notebook saving metric `accuracy` from C."""
    root = tmp_path_factory.mktemp("labcompare")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "scored.py").write_text(textwrap.dedent(SCORED))
    score_notebook(root / "pipelines" / "score.ipynb")
    env = {**nbflow_env(root, executor="local"), "NBFLOW_PARALLELISM": "2"}
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    yield proc
    proc.stop()
    stop_nbflow_processes(root)


@pytest.fixture(scope="module")
def page(lab: JupyterProc) -> Iterator[object]:
    with lab_page(lab.url, lab.token) as pg:
        yield pg


def _runs(lab: JupyterProc) -> list[dict]:
    status, page = lab.request("GET", "pipelines/scored/runs?limit=50")
    assert status == 200, page
    return page["runs"]


def _wait_finished(lab: JupyterProc, count: int, timeout: float = 180) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        runs = _runs(lab)
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        assert time.monotonic() < deadline, runs
        time.sleep(1)


def test_a_sweep_from_the_form_then_its_compare_view_table_chart_and_nbdime_diff(
    page: object, lab: JupyterProc
) -> None:
    pg = page
    pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
    item = pg.locator('.nbflow-pipeline[data-pipeline="scored"]')
    item.wait_for(timeout=30_000)
    item.locator(".nbflow-trigger").click()
    toggle = item.locator('.nbflow-sweep-toggle[data-param="C"]')  # only this tree's build has it
    toggle.check()
    c = item.locator('.nbflow-params-form input[name="C"]')
    assert c.get_attribute("type") == "text" and c.get_attribute("data-sweep") == "true"

    # a bad value: the server's typed error names the point, no run is made
    c.fill("0.5, x")
    item.locator(".nbflow-run").click()
    error = item.locator(".nbflow-params-form .nbflow-error")
    pg.wait_for_function(
        "(e) => e.innerText.includes('sweep point 2 of 2')", arg=error.element_handle(), timeout=30_000
    )
    assert "C=x" in error.inner_text() and "no run was created" in error.inner_text(), error.inner_text()
    assert "nbflow-param-bad" in (c.get_attribute("class") or "")
    shot(pg, "compare-0-sweep-error")
    assert _runs(lab) == []

    c.fill("0.01, 1, 100")
    item.locator(".nbflow-run").click()
    # the DAG view and the sweep's Compare view open; one run per point
    compare = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-compare-view")
    compare.wait_for(timeout=30_000)
    runs = _wait_finished(lab, 3)
    assert len(runs) == 3 and len({r["sweep_id"] for r in runs}) == 1, runs
    assert sorted(r["params"]["C"] for r in runs) == [0.01, 1.0, 100.0]
    assert all(r["state"] == "success" for r in runs), runs
    sweep = runs[0]["sweep_id"]

    # the table: a row per run, the swept parameter and the metric side by side
    pg.wait_for_function(
        "document.querySelectorAll('.nbflow-compare-table td.nbflow-metric-cell:not(:empty)').length === 3",
        timeout=60_000,
    )
    assert f"Sweep {sweep} of scored" in compare.locator(".nbflow-dag-header").inner_text()
    rows = compare.locator(".nbflow-compare-table tbody tr")
    table = [
        (
            row.locator('td[data-column="C"]').inner_text(),
            row.locator('td[data-column="score.accuracy"]').inner_text(),
        )
        for row in rows.all()
    ]
    assert table == [("0.01", "0.0099"), ("1.0", "0.5"), ("100.0", "0.9901")], table  # a float keeps its point
    # the chart: accuracy against C, a log x axis (C spans four decades), a point per run
    chart = compare.locator("svg.nbflow-metric-chart")
    assert chart.get_attribute("data-log-x") == "true"
    assert chart.locator("circle.nbflow-point").count() == 3
    assert compare.locator(".nbflow-chart-x").input_value() == "C"
    assert compare.locator(".nbflow-chart-y").input_value() == "score.accuracy"
    ticks = chart.locator(".nbflow-x-tick").all_text_contents()
    assert ticks == ["1e-2", "1e-1", "1e0", "1e1", "1e2"], ticks
    heights = [float(chart.locator(f'circle[data-run="{r["id"]}"]').get_attribute("cy")) for r in runs]
    by_c = [h for _, h in sorted(zip((r["params"]["C"] for r in runs), heights))]
    assert by_c[0] > by_c[1] > by_c[2], by_c  # higher accuracy is drawn higher (smaller y)
    marks = [float(t) for t in chart.locator(".nbflow-axis-label:not(.nbflow-x-tick)").all_text_contents()]
    assert min(marks) <= 0.0099 and max(marks) >= 0.9901, marks  # the y axis spans every point
    assert all(30 <= y <= 290 for y in heights), heights  # inside the plot area
    pg.wait_for_timeout(500)
    shot(pg, "compare-1-sweep")

    # nbdime's diff of the notebook task's output notebooks in the first two runs
    first, second = sorted(r["id"] for r in runs)[:2]
    assert compare.locator(".nbflow-diff-task").input_value() == "score"
    assert compare.locator(".nbflow-diff-base").input_value() == str(first)
    assert compare.locator(".nbflow-diff-other").input_value() == str(second)
    compare.locator(".nbflow-diff-show").click()
    pg.wait_for_selector(".nbflow-compare-view .nbdime-root .jp-Cell-diff", timeout=60_000)
    pg.wait_for_function("document.querySelector('.nbflow-diff-status')?.innerText.includes('differ')", timeout=30_000)
    changed = compare.locator(".nbdime-root .jp-Cell-diff.jp-Diff-twoway")
    unchanged = compare.locator(".nbdime-root .jp-Cell-diff.jp-Diff-unchanged")
    texts = changed.all_inner_texts()
    assert any("accuracy is 0.0099" in t and "accuracy is 0.5" in t for t in texts), texts
    assert unchanged.count() >= 1  # the metric cell: same source, no output (papermill's timings left out)
    assert "nbflow.metric" in " ".join(unchanged.all_inner_texts())
    changed.filter(has_text="accuracy is").first.scroll_into_view_if_needed()
    pg.wait_for_timeout(500)
    shot(pg, "compare-2-nbdime-diff")


def test_runs_table_params_metric_sorting_sweep_link_and_compare_picked_runs(page: object, lab: JupyterProc) -> None:
    pg = page
    runs = _wait_finished(lab, 3)
    pg.evaluate("() => window.jupyterapp.commands.execute('nbflow:open-dag', {name: 'scored'}).then(() => null)")
    view = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-dag-view")
    view.locator('.nbflow-runs td[data-column="metric:score.accuracy"]').first.wait_for(timeout=30_000)
    ids = view.locator(".nbflow-runs tbody tr").evaluate_all("rows => rows.map(r => Number(r.dataset.run))")
    assert ids == sorted(ids, reverse=True)  # newest first
    header = view.locator('.nbflow-runs th[data-column="metric:score.accuracy"]')
    header.click()
    pg.wait_for_function(
        "document.querySelector('.nbflow-runs th[data-column=\"metric:score.accuracy\"]').innerText.endsWith('▲')",
        timeout=10_000,
    )
    values = view.locator('.nbflow-runs td[data-column="metric:score.accuracy"]').all_inner_texts()
    assert values == ["0.0099", "0.5", "0.9901"], values
    header.click()
    pg.wait_for_function(
        "document.querySelector('.nbflow-runs th[data-column=\"metric:score.accuracy\"]').innerText.endsWith('▼')",
        timeout=10_000,
    )
    assert view.locator('.nbflow-runs td[data-column="metric:score.accuracy"]').all_inner_texts() == values[::-1]
    assert sorted(view.locator('.nbflow-runs td[data-column="param:C"]').all_inner_texts()) == ["0.01", "1.0", "100.0"]
    # the metric picker hides and shows metric columns
    view.locator(".nbflow-metric-picker summary").click()
    view.locator('.nbflow-metric-picker input[data-metric="score.accuracy"]').uncheck()
    view.locator('.nbflow-runs th[data-column="metric:score.accuracy"]').wait_for(state="detached", timeout=10_000)
    view.locator('.nbflow-metric-picker input[data-metric="score.accuracy"]').check()
    view.locator('.nbflow-runs th[data-column="metric:score.accuracy"]').wait_for(timeout=10_000)
    shot(pg, "compare-3-runs-table")

    # pick two runs, compare them
    picked = sorted(r["id"] for r in runs)[1:]
    button = view.locator(".nbflow-compare-selected")
    assert button.is_disabled()
    for run_id in picked:
        view.locator(f'.nbflow-runs tr[data-run="{run_id}"] .nbflow-run-select').check()
    assert button.is_enabled() and button.inner_text() == "Compare 2 selected"
    button.click()
    compare = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-compare-view")
    compare.locator(".nbflow-compare-table tbody tr").first.wait_for(timeout=30_000)
    shown = compare.locator(".nbflow-compare-table tbody tr").evaluate_all(
        "rows => rows.map(r => Number(r.dataset.run))"
    )
    assert shown == picked, shown
    assert compare.locator("svg.nbflow-metric-chart").get_attribute("data-log-x") == "true"  # 1 to 100: two decades

    # the sweep link of a run opens the whole sweep
    pg.evaluate("() => window.jupyterapp.commands.execute('nbflow:open-dag', {name: 'scored'}).then(() => null)")
    view.locator(".nbflow-sweep-link").first.click()
    compare = pg.locator(".jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-compare-view")
    pg.wait_for_function(
        "document.querySelector('.jp-MainAreaWidget:not(.lm-mod-hidden) .nbflow-compare-view .nbflow-dag-header')"
        "?.innerText.startsWith('Sweep')",
        timeout=30_000,
    )
    assert compare.locator(".nbflow-compare-table tbody tr").count() == 3
