"""Issue 16, items 4 and 5: Jinja2 templates in task fields and typed, described parameters
(``Param``), with real parts: pipelines run on the inline executor or through the real ``nbflow``
command, a real notebook kernel, a real ``jupyter server`` for REST, a real IPython shell for the
magics, and JupyterLab in Debian chromium for the trigger form. Airflow's example DAGs
``example_bash_operator`` and ``example_params_trigger_ui`` (``tests/airflow_examples/``) run
through the CLI with the task states Airflow documents."""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from nbflow import api
from nbflow.exceptions import ParameterError
from nbflow.loader import load_pipeline
from nbflow.templating import TemplateError
from tests.conftest import make_notebook
from tests.jupyter_procs import JupyterProc, nbflow_env, register_pipelines, start_jupyter, stop_nbflow_processes
from tests.test_cli import nbflow

EXAMPLES = Path(__file__).parent / "airflow_examples"

TEMPLATED = """
from nbflow import Param, Pipeline, shell, task

with Pipeline("templated", params={
    "msg": "hello",
    "cmd": "echo default",
    "C": Param(1.0, type="number", minimum=0, description="inverse regularisation"),
    "region": Param("eu", enum=["eu", "us"], title="Region"),
}) as pipeline:
    shell(
        'printf "[%s]\\\\n" {{ params.msg }} "quoted {{ params.msg }}" \\'single {{ params.msg }}\\' > args.txt',
        name="quoted",
    )
    shell("{{ params.cmd | raw }} > raw.txt", name="raw")
    shell(
        'env | grep -E "^(NBFLOW_LOGICAL_DATE|NBFLOW_DS|NBFLOW_DATA_INTERVAL_START|NBFLOW_DATA_INTERVAL_END|DAY)=" | sort > env.txt',
        name="env",
        env={"DAY": "{{ ds_nodash }}"},
    )

    @task
    def echo(day, who, C, region):
        return {"day": day, "who": who, "C": C, "region": region}

    echo("{{ ds }}", who="{{ task.name }}@{{ run_id }}", C=pipeline.params.C, region=pipeline.params.region)
"""


def _run(path: Path, **params: object) -> tuple[dict, dict]:
    """Run the pipeline file on the inline executor: (the run's row, its tasks by id)."""
    result = api.run_pipeline(load_pipeline(path), params=params, executor="inline")
    details = api.run_details(result.run_id)
    return details["run"], {t["task_id"]: t for t in details["tasks"]}


# --- templates in shell commands ------------------------------------------------------------------


def test_a_parameter_rendered_into_a_shell_command_is_one_inert_argument_in_every_quoting(
    nbflow_home: Path, write_pipeline, tmp_path: Path
) -> None:
    path = write_pipeline(TEMPLATED)
    pwned = tmp_path / "pwned"
    attack = f"\"; touch {pwned}; echo \"$(touch {pwned})`touch {pwned}`'; touch {pwned}; '"
    run, tasks = _run(path, msg=attack)
    assert run["state"] == "success", tasks
    assert not pwned.exists()  # nothing of the value ran, whatever the quoting it stood in
    lines = (path.parent / "args.txt").read_text().splitlines()
    # printf printed one line per argument: the value stayed one argument, byte for byte
    assert lines == [f"[{attack}]", f"[quoted {attack}]", f"[single {attack}]"], lines


def test_raw_opts_out_of_quoting_and_pastes_shell_code(nbflow_home: Path, write_pipeline, tmp_path: Path) -> None:
    path = write_pipeline(TEMPLATED)
    marker = tmp_path / "ran"
    run, tasks = _run(path, cmd=f"touch {marker}; echo pasted")
    assert run["state"] == "success", tasks
    assert marker.exists()  # `| raw`: the value was shell code, as documented
    assert (path.parent / "raw.txt").read_text() == "pasted\n"
    assert f"nbflow: $ touch {marker}; echo pasted > raw.txt" in api.read_log(run["id"], "raw")


def test_a_shell_task_has_the_run_dates_in_its_environment_and_templated_env(nbflow_home: Path, write_pipeline) -> None:
    path = write_pipeline(TEMPLATED)
    run, tasks = _run(path)
    assert tasks["env"]["state"] == "success", tasks
    logical = datetime.fromisoformat(str(run["logical_date"]))
    env = dict(line.split("=", 1) for line in (path.parent / "env.txt").read_text().splitlines())
    assert env["NBFLOW_DS"] == f"{logical:%Y-%m-%d}"
    assert env["DAY"] == f"{logical:%Y%m%d}"
    assert datetime.fromisoformat(env["NBFLOW_LOGICAL_DATE"]) == logical
    assert env["NBFLOW_DATA_INTERVAL_START"] == env["NBFLOW_LOGICAL_DATE"]  # a manual run: [L, L]
    assert env["NBFLOW_DATA_INTERVAL_END"] == env["NBFLOW_LOGICAL_DATE"]


def test_string_arguments_of_a_task_are_rendered_and_typed_params_pass_through(
    nbflow_home: Path, write_pipeline
) -> None:
    path = write_pipeline(TEMPLATED)
    run, _ = _run(path, C="0.5", region="us")
    logical = datetime.fromisoformat(str(run["logical_date"]))
    assert api.load_output(run["id"], "echo") == {
        "day": f"{logical:%Y-%m-%d}",
        "who": f"echo@{run['id']}",
        "C": 0.5,
        "region": "us",
    }


def test_names_and_date_filters_render_as_airflow_does() -> None:
    from datetime import UTC

    from nbflow.templating import render, run_values

    start, end = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC), datetime(2026, 3, 5, 5, 6, 7, tzinfo=UTC)
    context = {"run_id": 42, "logical_date": start, "data_interval_start": start, "data_interval_end": end}
    values = run_values({"items": "a parameter, not dict.items"}, context, task_id="t", pipeline="p")
    text = (
        "{{ ds }} {{ ds_nodash }} {{ ts }} {{ ts_nodash }} {{ ts_nodash_with_tz }} {{ logical_date }} "
        "{{ data_interval_end | ds }} {{ data_interval_end | ts_nodash }} {{ run_id }} {{ task.name }} "
        "{{ task.pipeline }} {{ params.items }}"
    )
    assert render(text, values, task="t", field="f").split(" ", 11) == [
        "2026-03-04",
        "20260304",
        "2026-03-04T05:06:07+00:00",
        "20260304T050607",
        "20260304T050607+0000",
        "2026-03-04T05:06:07+00:00",
        "2026-03-05",
        "20260305T050607",
        "42",
        "t",
        "p",
        "a parameter, not dict.items",
    ]


# --- a notebook gets scheduling values under its own parameter names ------------------------------


def test_a_notebook_gets_ds_under_its_own_parameter_name_and_a_templated_output_path(
    nbflow_home: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "nb"
    make_notebook(
        folder / "report.ipynb",
        [
            ('run_date = "1970-01-01"\nlabel = ""', ["parameters"]),
            "import nbflow\nnbflow.save('seen', [run_date, label])",
        ],
    )
    (folder / "pipeline.py").write_text(
        textwrap.dedent(
            """
            from nbflow import Pipeline, notebook

            with Pipeline("nb_dates", params={"region": "eu"}) as pipeline:
                notebook(
                    "report.ipynb",
                    parameters={"run_date": "{{ ds }}", "label": "{{ params.region }}-{{ ds_nodash }}"},
                    output_path="reports/{{ params.region }}/report_{{ ds_nodash }}.ipynb",
                )
            """
        )
    )
    run, tasks = _run(folder / "pipeline.py", region="us")
    assert tasks["report"]["state"] == "success", tasks
    logical = datetime.fromisoformat(str(run["logical_date"]))
    assert api.load_output(run["id"], "report")["seen"] == [f"{logical:%Y-%m-%d}", f"us-{logical:%Y%m%d}"]
    # papermill's output path, templated: a copy of the executed notebook
    copy = json.loads((folder / "reports" / "us" / f"report_{logical:%Y%m%d}.ipynb").read_text())
    assert any(
        "us-" in "".join(c["source"]) for c in copy["cells"] if "injected-parameters" in c["metadata"].get("tags", [])
    )


# --- unknown names: refused at definition time and at trigger time -------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ('shell("echo {{ params.mgs }}", name="t")', "params.mgs, which the pipeline does not declare"),
        ('shell("echo {{ yesterday_ds }}", name="t")', "unknown name 'yesterday_ds'"),
        ('shell("echo hi", name="t", env={"X": "{{ dss }}"})', "in env.X of task 't' uses unknown name 'dss'"),
        ('shell("echo {{ task.owner }}", name="t")', "task.owner; a task has name, task_id, pipeline"),
        ('shell("echo hi", name="t", reads=["data/{{ dz }}.csv"])', "in reads[0] of task 't' uses unknown name 'dz'"),
        ('task(lambda d: d, name="t")("{{ ds_no_dash }}")', "in args[0] of task 't' uses unknown name 'ds_no_dash'"),
        ('shell("echo {{ ds ", name="t")', "is not valid Jinja2"),
    ],
)
def test_an_unknown_template_name_is_refused_at_definition_with_the_task_field_and_known_names(
    write_pipeline, field: str, expected: str
) -> None:
    path = write_pipeline(
        f"""
        from nbflow import Pipeline, shell, task

        with Pipeline("unknown_names", params={{"msg": "hi"}}) as pipeline:
            {field}
        """
    )
    with pytest.raises(TemplateError) as caught:
        load_pipeline(path)
    text = str(caught.value)
    assert expected in text and f"{path}:" in text, text
    if "Jinja2" not in expected:
        assert "known names: ds, ds_nodash" in text and "parameters: params.msg" in text, text


def test_a_template_that_only_values_break_is_refused_at_trigger_time_before_a_run_exists(
    nbflow_home: Path, write_pipeline
) -> None:
    path = write_pipeline(
        """
        from nbflow import Pipeline, shell

        with Pipeline("by_value", params={"cfg": {"bucket": "raw"}}) as pipeline:
            shell("echo s3://{{ params.cfg.bucket }}/{{ ds }}", name="list")
        """
    )
    pipeline = load_pipeline(path)
    with pytest.raises(TemplateError) as caught:
        api.create_run(pipeline, params={"cfg": {"buckett": "raw"}})
    text = str(caught.value)
    assert "in command of task 'list' cannot render: 'dict object' has no attribute 'bucket'" in text, text
    assert "known names: ds" in text and "parameters: params.cfg" in text, text
    assert api.list_runs("by_value") == []
    # the stored definition keeps the templates: a trigger by name (REST, CLI, magics) checks them too
    assert api.run_pipeline(pipeline, executor="inline").ok
    with pytest.raises(TemplateError, match="task 'list' cannot render"):
        api.trigger("by_value", params={"cfg": {}}, start=False)
    assert len(api.list_runs("by_value")) == 1


# --- typed parameters: every path validates with JSON Schema -------------------------------------


def test_param_validation_on_the_cli_names_the_field_and_the_schema_reason(tmp_path: Path, write_pipeline) -> None:
    path = write_pipeline(TEMPLATED)
    home = tmp_path / "home"
    res = nbflow("run", str(path), "-e", "inline", "-p", "C=-1", home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "parameter 'C' is not valid: -1.0 is less than the minimum of 0 (schema keyword 'minimum')" in res.stderr
    res = nbflow("run", str(path), "-e", "inline", "--sweep", "region=eu,fr", home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "sweep point 2 of 2 (region=fr)" in res.stderr and "'fr' is not one of ['eu', 'us']" in res.stderr
    assert "no run was created" in res.stderr
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_param_definitions_are_checked_and_plain_defaults_keep_working(write_pipeline) -> None:
    bad_default = write_pipeline(
        """
        from nbflow import Param, Pipeline
        with Pipeline("p", params={"n": Param(-1, type="integer", minimum=0)}) as pipeline:
            pass
        """,
        name="bad_default.py",
    )
    with pytest.raises(Exception, match="the default of Param 'n' of pipeline 'p' does not fit its schema"):
        load_pipeline(bad_default)
    bad_schema = write_pipeline(
        """
        from nbflow import Param, Pipeline
        with Pipeline("p", params={"n": Param(1, type="integr")}) as pipeline:
            pass
        """,
        name="bad_schema.py",
    )
    with pytest.raises(Exception, match="Param 'n' of pipeline 'p' has an invalid JSON Schema"):
        load_pipeline(bad_schema)
    required = write_pipeline(
        """
        from nbflow import Param, Pipeline
        with Pipeline("p", params={"n": Param(None, type="integer"), "plain": 2.0}) as pipeline:
            pass
        """,
        name="required.py",
    )
    pipeline = load_pipeline(required)
    from nbflow.params import resolve_for

    with pytest.raises(ParameterError, match="no value was given and the default does not fit") as caught:
        resolve_for(pipeline, {})
    assert caught.value.invalid == ["n"]
    assert resolve_for(pipeline, {"n": "3", "plain": "4"}) == {"n": 3, "plain": 4.0}


@pytest.fixture
def ipython(nbflow_home: Path) -> Iterator[object]:
    from IPython.core.interactiveshell import InteractiveShell

    ip = InteractiveShell.instance()
    assert ip.run_cell("%load_ext nbflow").success
    yield ip
    ip.run_cell("%unload_ext nbflow")
    InteractiveShell.clear_instance()


def test_param_validation_in_the_magics_names_the_field_and_the_schema_reason(ipython, write_pipeline) -> None:
    path = write_pipeline(TEMPLATED)
    bad = ipython.run_cell(f"%nbflow run {path} -p region=fr --executor inline")  # type: ignore[attr-defined]
    assert not bad.success
    assert "parameter 'region' is not valid: 'fr' is not one of ['eu', 'us'] (schema keyword 'enum')" in str(
        bad.error_in_exec
    )
    assert api.list_runs("templated") == []
    assert ipython.run_cell(f"%nbflow run {path} -p region=us --executor inline").success  # type: ignore[attr-defined]
    assert api.list_runs("templated")[0]["params"]["region"] == "us"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    root = tmp_path_factory.mktemp("templates_server")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "templated.py").write_text(textwrap.dedent(TEMPLATED))
    shutil.copy(EXAMPLES / "example_params_trigger_ui.py", root / "pipelines")
    env = nbflow_env(root, executor="inline")
    register_pipelines(root, env)
    proc = start_jupyter(root, env, "server")
    yield proc
    proc.stop()
    stop_nbflow_processes(root)


def test_param_validation_on_rest_names_the_field_and_the_schema_reason(server: JupyterProc) -> None:
    status, body = server.request("POST", "pipelines/templated/trigger", {"params": {"C": -1}})
    assert status == 400, body
    assert (
        "parameter 'C' is not valid: -1.0 is less than the minimum of 0 (schema keyword 'minimum')"
        in body["fields"]["params.C"]
    ), body
    status, body = server.request("POST", "pipelines/templated/trigger", {"sweep": {"region": ["eu", "fr"]}})
    assert status == 400, body
    assert "sweep point 2 of 2 (region=fr)" in body["message"] and "params.region" in body["fields"], body
    status, body = server.request("GET", "pipelines")
    assert status == 200
    (listed,) = [p for p in body["pipelines"] if p["name"] == "templated"]
    assert listed["param_schemas"]["C"] == {"type": "number", "minimum": 0, "description": "inverse regularisation"}
    assert listed["param_schemas"]["region"] == {"enum": ["eu", "us"], "title": "Region"}
    assert "msg" not in listed["param_schemas"] and listed["params"]["msg"] == "hello"  # a plain default
    status, runs = server.request("GET", "pipelines/templated/runs")
    assert status == 200 and runs["runs"] == [], runs  # nothing refused made a run


# --- Airflow's example DAGs through the real command line --------------------------------------


def _states(run_id: int = 1) -> dict[str, str]:
    """Each task instance's state in run ``run_id`` of this test's home (``nbflow_home``)."""
    return {t["task_id"]: t["state"] for t in api.run_details(run_id)["tasks"]}


def test_example_bash_operator_all_tasks_succeed_with_templated_keys(nbflow_home: Path) -> None:
    res = nbflow("run", str(EXAMPLES / "example_bash_operator.py"), "-e", "inline", home=nbflow_home)
    assert res.returncode == 0, res.stdout + res.stderr
    # Airflow's documented states: exit 99 skips this_will_skip, whose all_success downstream is skipped
    assert _states() == {
        **dict.fromkeys(["runme_0", "runme_1", "runme_2", "also_run_this", "run_after_loop"], "success"),
        "this_will_skip": "skipped",
        "run_this_last": "skipped",
    }
    ds_nodash = datetime.fromisoformat(str(api.list_runs(limit=1)[0]["logical_date"])).strftime("%Y%m%d")
    assert f"example_bash_operator__runme_1__{ds_nodash}" in api.read_log(1, "runme_1")
    assert f"ti_key=example_bash_operator__also_run_this__{ds_nodash}" in api.read_log(1, "also_run_this")


def test_example_params_trigger_ui_greets_the_given_names_and_refuses_a_bad_form(nbflow_home: Path) -> None:
    path = str(EXAMPLES / "example_params_trigger_ui.py")
    bad = nbflow("run", path, "-e", "inline", "-p", 'names="Ada"', home=nbflow_home)
    assert bad.returncode == 2 and "parameter 'names' expects list" in bad.stderr, bad.stderr
    res = nbflow("run", path, "-e", "inline", "-p", 'names=["Ada", "Bob"]', "-p", "german=false", home=nbflow_home)
    assert res.returncode == 0, res.stdout + res.stderr
    mapped = [f"generate_{lang}_greeting" for lang in ("english", "french")]
    # Airflow's states: the branch skips the language switched off (never expanded), the rest succeed
    assert _states() == {
        **dict.fromkeys(
            [
                "get_names",
                "select_languages",
                *mapped,
                *(f"{m}[{i}]" for m in mapped for i in (0, 1)),
                "print_greetings",
            ],
            "success",
        ),
        "generate_german_greeting": "skipped",
    }
    assert api.list_runs(limit=1)[0]["params"]["names"] == ["Ada", "Bob"]
    log = api.read_log(1, "print_greetings")
    assert "Hello Ada!" in log and "Bonjour Bob!" in log and "Sehr geehrter" not in log, log


# --- the JupyterLab trigger form ---------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.slow
def test_the_trigger_form_shows_a_params_title_description_and_choices(tmp_path: Path) -> None:
    from tests.lab_browser import lab_page, shot

    root = tmp_path / "lab"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "templated.py").write_text(textwrap.dedent(TEMPLATED))
    env = nbflow_env(root, executor="inline")
    register_pipelines(root, env)
    lab = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    try:
        with lab_page(lab.url, lab.token) as pg:
            pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
            item = pg.locator('.nbflow-pipeline[data-pipeline="templated"]')
            item.wait_for(timeout=30_000)
            item.locator(".nbflow-trigger").click()
            form = item.locator(".nbflow-params-form")
            form.wait_for(timeout=10_000)
            assert "inverse regularisation" in form.locator(".nbflow-param-description").all_inner_texts()
            assert "Region (region)" in form.inner_text()
            region = form.locator('select[name="region"]')
            assert region.locator("option").all_inner_texts() == ["eu", "us"]
            assert region.locator("option:checked").inner_text() == "eu"  # the default is chosen
            c = form.locator('input[name="C"]')
            assert c.get_attribute("type") == "number" and "float ≥ 0" in form.inner_text()
            shot(pg, "templates-0-trigger-form")
            # the server's JSON Schema check names the field: the input is marked
            c.fill("-2")
            region.select_option("us")
            item.locator(".nbflow-run").click()
            error = form.locator(".nbflow-error")
            pg.wait_for_function(
                "(e) => e.innerText.includes('minimum of 0')", arg=error.element_handle(), timeout=30_000
            )
            assert "nbflow-param-bad" in (c.get_attribute("class") or "")
            shot(pg, "templates-1-schema-error")
            c.fill("0.5")
            item.locator(".nbflow-run").click()
            deadline = time.monotonic() + 60
            while not (runs := lab.request("GET", "pipelines/templated/runs")[1]["runs"]):
                assert time.monotonic() < deadline
                time.sleep(0.5)
            assert runs[0]["params"]["C"] == 0.5 and runs[0]["params"]["region"] == "us", runs
    finally:
        lab.stop()
        stop_nbflow_processes(root)


def test_param_is_exported_from_nbflow() -> None:
    import nbflow
    from nbflow.typedparams import Param

    assert nbflow.Param is Param
    assert json.dumps(Param(1.0, type="number", description="d").schema) == '{"type": "number", "description": "d"}'
