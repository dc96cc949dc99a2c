"""Runs triggered by data (nbflow.Asset): events on success only, a consumer run once all its
assets were updated (several updates count once), lineage, save(asset=) from a task and a
notebook, two schedulers on PostgreSQL making exactly one run, the CLI and the REST API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nbflow import api
from nbflow.assets import Asset
from nbflow.exceptions import AssetNotFoundError, DefinitionError
from nbflow.scheduler import Scheduler

PRODUCERS = """
from pathlib import Path
import nbflow
from nbflow import Asset, Pipeline, task

FAIL = Path(__file__).parent / "fail"

with Pipeline("train") as train_pipeline:
    @task(produces=[Asset("model", uri="file:///models/m.pkl", description="the model")])
    def fit():
        if FAIL.exists():
            raise RuntimeError("no data")
        return 1

    fit()

with Pipeline("features") as features_pipeline:
    @task
    def build():
        nbflow.save("table", [1, 2], asset="features")
        return 2

    build()
"""

CONSUMERS = """
from nbflow import Asset, Pipeline, task

with Pipeline("report", schedule=[Asset("model")]) as report_pipeline:
    @task
    def write():
        return "report"

    write()

with Pipeline("both", schedule=[Asset("model"), Asset("features")]) as both_pipeline:
    @task
    def join():
        return "both"

    join()
"""


@pytest.fixture
def dags(tmp_path, nbflow_home, monkeypatch):
    folder = tmp_path / "dags"
    folder.mkdir()
    (folder / "producers.py").write_text(textwrap.dedent(PRODUCERS))
    (folder / "consumers.py").write_text(textwrap.dedent(CONSUMERS))
    monkeypatch.setenv("NBFLOW_DAGS_FOLDER", str(folder))
    monkeypatch.setenv("NBFLOW_IMPORT_TIMEOUT", "10")
    monkeypatch.setenv("NBFLOW_HEARTBEAT", "0.2")
    api.reset()
    return folder


def runs_of(name: str) -> list[dict]:
    return sorted((dict(r) for r in api.list_runs(name, limit=100)), key=lambda r: r["id"])


def drive(sched: Scheduler, until, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        sched.loop_once()
        if until():
            return
    raise AssertionError("timed out")


def finished(name: str, count: int):
    return lambda: len(runs_of(name)) >= count and all(r["state"] in ("success", "failed") for r in runs_of(name))


def produce(sched: Scheduler, name: str) -> int:
    """Trigger a run of producer ``name`` and drive it to its end (and the scheduler's next look)."""
    before = len(runs_of(name))
    run_id = api.trigger(name)
    drive(sched, finished(name, before + 1))
    sched.loop_once()  # the loop after the producer finished looks at the new events
    return run_id


def test_producer_success_triggers_consumer_once_with_lineage(dags):
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()
        assert runs_of("report") == []  # no update yet
        producer = produce(sched, "train")
        reports = runs_of("report")
        assert len(reports) == 1 and reports[0]["trigger"] == "asset"
        assert runs_of("both") == []  # waits for features too
        lineage = api.run_lineage(reports[0]["id"])
        assert [(e["asset"], e["pipeline"], e["run_id"], e["task_id"]) for e in lineage] == [
            ("model", "train", producer, "fit")
        ]
        for _ in range(5):  # no new update: no new run
            sched.loop_once()
        drive(sched, finished("report", 1))
        assert len(runs_of("report")) == 1 and runs_of("report")[0]["state"] == "success"
        assert api.load_output(reports[0]["id"], "write") == "report"
    finally:
        sched.close()


def test_two_assets_wait_for_both_and_several_updates_count_once(dags):
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()
        first, second = produce(sched, "train"), produce(sched, "train")  # two updates of model
        assert runs_of("both") == []  # features not updated yet
        assert len(runs_of("report")) == 2  # report had run 1 consumed before update 2 came
        pending = {a["name"]: a["pending"] for a in api.list_assets()}
        assert pending["model"] == ["both"]
        features = produce(sched, "features")  # save(..., asset="features") in a @task
        both = runs_of("both")
        assert len(both) == 1 and both[0]["trigger"] == "asset"
        lineage = api.run_lineage(both[0]["id"])
        assert sorted((e["asset"], e["run_id"]) for e in lineage) == sorted(
            [("model", first), ("model", second), ("features", features)]
        )
        for _ in range(5):
            sched.loop_once()
        assert len(runs_of("both")) == 1  # every event consumed: nothing more
        assert {a["name"]: a["pending"] for a in api.list_assets()}["model"] == []
    finally:
        sched.close()


def test_failed_producer_records_no_event(dags):
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()
        (dags / "fail").write_text("x")
        run_id = produce(sched, "train")
        assert api.run_details(run_id)["run"]["state"] == "failed"
        assert runs_of("report") == []
        model = api.asset_details("model")
        assert model["events"] == [] and model["last_update"] is None
        assert model["producers"] == ["train.fit"] and model["consumers"] == ["both", "report"]
        assert model["uri"] == "file:///models/m.pkl" and model["description"] == "the model"
        (dags / "fail").unlink()
        ok = produce(sched, "train")
        assert [e["run_id"] for e in api.asset_details("model")["events"]] == [ok]
        assert len(runs_of("report")) == 1
    finally:
        sched.close()


def test_paused_consumer_keeps_its_updates_for_later(dags):
    sched = Scheduler(executor="inline", parse_interval=0)
    sched.start()
    try:
        sched.loop_once()
        api.set_paused("report", True)
        produce(sched, "train")
        produce(sched, "train")
        assert runs_of("report") == []
        api.set_paused("report", False)
        sched.loop_once()
        reports = runs_of("report")
        assert len(reports) == 1 and len(api.run_lineage(reports[0]["id"])) == 2
    finally:
        sched.close()


@pytest.mark.parametrize("executor", ["inline", "local"])
def test_events_only_on_success_exactly_once_per_attempt(nbflow_home, write_pipeline, executor):
    path = write_pipeline(
        """
        from pathlib import Path
        from nbflow import Asset, Pipeline, shell, task

        MARK = Path(__file__).parent / "tried"

        with Pipeline("retried") as pipeline:
            @task(retries=1, produces=[Asset("a"), "b"])
            def flaky():
                if not MARK.exists():
                    MARK.write_text("once")
                    raise RuntimeError("first try fails")
                return 1

            flaky() >> shell("true", name="sh", produces=[Asset("c")])
        """
    )
    result = api.run_file(path, executor=executor)  # local: the record crosses a process
    assert result.state.value == "success"
    events = api.open_store().asset_events()
    assert sorted((e["asset"], e["task_id"], e["try_number"]) for e in events) == [
        ("a", "flaky", 2),
        ("b", "flaky", 2),
        ("c", "sh", 1),
    ]
    store = api.open_store()  # a second report of the same attempt adds nothing
    store.write(lambda tx: tx.add_asset_events(result.run_id, "flaky", 2, ["a", "b"]))
    store.write(lambda tx: tx.add_asset_events(result.run_id, "flaky", 1, ["a"]))  # the failed try: nothing
    assert len(api.open_store().asset_events()) == 3


def test_save_asset_from_a_notebook(nbflow_home, write_pipeline):
    from tests.conftest import make_notebook

    path = write_pipeline(
        """
        from nbflow import Pipeline, notebook

        with Pipeline("nb") as pipeline:
            notebook("nb.ipynb", name="nb")
        """
    )
    make_notebook(
        path.parent / "nb.ipynb",
        [("x = 1", ["parameters"]), "import nbflow\nnbflow.save('table', [1, 2, 3], asset='warehouse.table')"],
    )
    result = api.run_file(path, executor="inline")
    assert result.state.value == "success", result
    events = api.open_store().asset_events("warehouse.table")
    assert [(e["pipeline"], e["run_id"], e["task_id"]) for e in events] == [("nb", result.run_id, "nb")]
    assert api.asset_details("warehouse.table")["producers"] == ["nb.nb"]


def test_definition_errors_name_the_pipeline_and_the_fix():
    from nbflow import Pipeline, task

    with pytest.raises(DefinitionError) as err:
        Pipeline("bad", schedule=["model"])
    assert "pipeline 'bad'" in str(err.value) and "nbflow.Asset" in str(err.value)
    assert "schedule=[nbflow.Asset" in (err.value.hint or "")
    with pytest.raises(DefinitionError, match="invalid asset name"):
        Asset("no spaces")
    with pytest.raises(DefinitionError, match="produces of task 'f'"):
        with Pipeline("p"):

            @task(produces=[42])
            def f():
                return 1

            f()
    with Pipeline("ok", schedule=Asset("m")) as ok:
        pass
    assert ok.assets == (Asset("m"),) and ok.cron is None and ok.definition()["schedule_assets"][0]["name"] == "m"


def test_unknown_asset_is_an_error_naming_the_known(nbflow_home):
    with pytest.raises(AssetNotFoundError, match="no asset named 'nope'"):
        api.asset_details("nope")


def test_cli_lists_assets_and_shows_one(dags):
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()
        producer = produce(sched, "train")
    finally:
        sched.close()
    report = runs_of("report")[0]["id"]
    env = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "assets"], capture_output=True, text=True, env=env, check=True
    ).stdout
    lines = {line.split()[0]: line for line in out.splitlines()[2:] if line.strip()}
    assert "train.fit" in lines["model"] and "both, report" in lines["model"]
    assert f"run {producer}" in lines["model"] and "both" in lines["model"].split("run")[-1]
    assert "features" in lines and "-" in lines["features"]
    shown = subprocess.run(
        [sys.executable, "-m", "nbflow", "assets", "show", "model"], capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert f"train run {producer}" in shown.stdout and f"report run {report}" in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "nbflow", "assets", "show", "nope"], capture_output=True, text=True, env=env
    )
    assert missing.returncode != 0 and "no asset named 'nope'" in missing.stderr


PG_PRODUCER = """
from nbflow import Asset, Pipeline, task

with Pipeline("make") as make_pipeline:
    @task(produces=[Asset("data")])
    def make():
        return 1

    make()

with Pipeline("use", schedule=[Asset("data")], max_active_runs=100) as use_pipeline:
    @task
    def use():
        return 2

    use()
"""


@pytest.mark.postgres
def test_two_schedulers_on_postgres_make_exactly_one_run_per_update(tmp_path, pg_url, nbflow_home):
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "pg.py").write_text(textwrap.dedent(PG_PRODUCER))
    env = {
        **os.environ,
        "NBFLOW_HOME": str(nbflow_home),
        "NBFLOW_DB_URL": pg_url,
        "NBFLOW_DAGS_FOLDER": str(dags),
        "NBFLOW_HEARTBEAT": "0.3",
    }
    procs = [
        subprocess.Popen(  # noqa: SIM115
            [sys.executable, "-m", "nbflow", "scheduler", "-e", "inline"],
            env=env,
            stdout=open(tmp_path / f"s{i}.log", "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for i in range(2)
    ]
    store = api.open_store()
    updates = 4
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not store.asset_refs("data"):
            time.sleep(0.2)  # the schedulers synced the folder
        made = []
        for _ in range(updates):
            run_id = api.trigger("make")
            made.append(run_id)
            deadline = time.time() + 60
            while time.time() < deadline and len(store.consumed_by(e["id"] for e in store.asset_events("data"))) < len(
                made
            ):
                time.sleep(0.1)
        deadline = time.time() + 60
        while time.time() < deadline:
            runs = store.list_runs("use", limit=100)
            if len(runs) >= 1 and all(r["state"] == "success" for r in runs):
                break
            time.sleep(0.3)
        time.sleep(1.5)  # a duplicate would show up now
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(30)
    logs = "\n".join((tmp_path / f"s{i}.log").read_text() for i in range(2))
    events = store.asset_events("data")
    assert len(events) == updates, logs
    consumed = store.consumed_by(e["id"] for e in events)
    assert sorted(c["event_id"] for c in consumed) == sorted(e["id"] for e in events)  # each consumed once
    runs = store.list_runs("use", limit=100)
    assert {r["trigger"] for r in runs} == {"asset"}
    assert {c["run_id"] for c in consumed} == {r["id"] for r in runs}  # every run consumed something
    assert len(runs) == updates  # each update waited for its run before the next one
    assert all(r["state"] == "success" for r in runs), [r["state"] for r in runs]
    keys = [r["idempotency_key"] for r in runs]
    assert len(set(keys)) == len(keys) and all(k.startswith("asset:") for k in keys)


@pytest.mark.postgres
def test_concurrent_writers_on_postgres_make_one_run_without_the_pipeline_lock(pg_url, write_pipeline):
    """The guard under the scheduler's row lock: two transactions (separate Store objects, no
    lock) computing the same run at once; one makes it, the other's savepoint rolls back."""
    import threading

    from nbflow.loader import load_pipeline
    from nbflow.store import Store
    from nbflow.store.orm import utcnow
    from nbflow.store.scheduling import task_rows

    path = write_pipeline(PG_PRODUCER)
    use = load_pipeline(path, "use")
    definition = use.definition()
    first = Store()
    first.write(lambda tx: tx.sync_pipeline(definition, use.fingerprint()))
    made = [api.run_file(path, pipeline_name="make", executor="inline").run_id for _ in range(2)]
    version = first.get_pipeline("use")["latest_version_id"]
    barrier, results = threading.Barrier(2), []

    def make_run() -> None:
        store = Store()
        barrier.wait()
        results.append(
            store.write(
                lambda tx: tx.create_asset_run(
                    pipeline="use",
                    version_id=version,
                    params={},
                    tasks=task_rows(definition),
                    now=utcnow(),
                )
            )
        )

    threads = [threading.Thread(target=make_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    made_runs = [r for r in results if r is not None]
    assert len(results) == 2 and len(made_runs) == 1, results
    runs = first.list_runs("use", limit=10)
    assert [r["id"] for r in runs] == made_runs
    assert sorted(e["run_id"] for e in api.run_lineage(made_runs[0])) == sorted(made)


@pytest.mark.server
@pytest.mark.slow
def test_rest_lists_assets_one_asset_and_a_runs_lineage(tmp_path, monkeypatch):
    from tests.jupyter_procs import nbflow_env, start_jupyter

    root = tmp_path / "jroot"
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "producers.py").write_text(textwrap.dedent(PRODUCERS))
    (root / "pipelines" / "consumers.py").write_text(textwrap.dedent(CONSUMERS))
    (root / "pipelines" / "uris.py").write_text(
        'from nbflow import Asset, Pipeline, shell\n\nwith Pipeline("uris") as uris:\n'
        '    shell("true", name="put", produces=[Asset("s3://bucket/key.csv")])\n'
    )
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
    server = start_jupyter(root, env, "server")
    try:
        status, body = server.request("GET", "assets")  # each answer is checked against docs/openapi.yaml
        assert status == 200
        assets = {a["name"]: a for a in body["assets"]}
        assert set(assets) == {"model", "features", "s3://bucket/key.csv"}
        assert assets["model"]["producers"] == ["train.fit"] and assets["model"]["consumers"] == ["both", "report"]
        assert assets["model"]["last_update"]["run_id"] == producer and assets["model"]["pending"] == ["both"]
        status, model = server.request("GET", "assets/model?limit=5")
        assert status == 200 and model["uri"] == "file:///models/m.pkl"
        assert [(e["run_id"], e["triggered"]) for e in model["events"]] == [
            (producer, [{"pipeline": "report", "run_id": report}])
        ]
        status, uri = server.request("GET", "assets/s3%3A%2F%2Fbucket%2Fkey.csv")  # a URI as a name, escaped
        assert status == 200 and uri["name"] == "s3://bucket/key.csv" and uri["producers"] == ["uris.put"]
        status, missing = server.request("GET", "assets/nope")
        assert status == 404 and "no asset named 'nope'" in missing["message"]
        status, listed = server.request("GET", "pipelines")
        assert status == 200
        schedules = {p["name"]: p["schedule_assets"] for p in listed["pipelines"]}
        assert schedules["both"] == ["features", "model"] and schedules["train"] == []
        status, details = server.request("GET", f"runs/{report}")
        assert status == 200
        assert [(c["asset"], c["run_id"]) for c in details["consumed"]] == [("model", producer)]
    finally:
        server.stop()
        api.reset()


def test_cell_task_produces_and_dag_show_and_picture(nbflow_home, tmp_path, write_pipeline):
    from nbflow.loader import load_pipeline
    from nbflow.render import to_dot
    from tests.conftest import make_notebook

    nb = make_notebook(
        tmp_path / "cells.ipynb",
        [
            ("%%nbflow task fit --outputs m --produces model,metrics\nm = 1", []),
            ("%%nbflow task after --inputs m\nm", []),
        ],
    )
    cells = load_pipeline(nb)
    assert [a.name for a in cells.task("fit").produces] == ["model", "metrics"] and cells.task("after").produces == ()
    result = api.run_file(nb, executor="inline")
    assert result.state.value == "success"
    assert sorted(e["asset"] for e in api.open_store().asset_events()) == ["metrics", "model"]

    path = write_pipeline(PRODUCERS + CONSUMERS)
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "dag", "show", str(path), "--pipeline", "train"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "produces model" in out
    out = subprocess.run(
        [sys.executable, "-m", "nbflow", "dag", "show", str(path), "--pipeline", "both"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "schedule when updated: features, model" in out
    dot = to_dot(load_pipeline(path, "train").definition())
    assert '"asset:model" [label="model", shape=folder' in dot and '"fit" -> "asset:model" [style=dashed];' in dot


def test_a_bare_asset_keeps_the_uri_another_pipeline_gave_it(nbflow_home, write_pipeline):
    from nbflow.loader import load_pipeline

    path = write_pipeline(PRODUCERS + CONSUMERS)
    store = api.open_store()
    for name in ("train", "report", "both", "report"):  # the consumers' bare Asset("model") synced last
        pipeline = load_pipeline(path, name)
        store.write(lambda tx, p=pipeline: tx.sync_pipeline(p.definition(), p.fingerprint()))
    model = api.asset_details("model")
    assert (model["uri"], model["description"]) == ("file:///models/m.pkl", "the model")
    assert model["producers"] == ["train.fit"] and model["consumers"] == ["both", "report"]
    refs = [(r["pipeline"], r["role"]) for r in store.asset_refs("model")]
    assert sorted(refs) == [("both", "consumer"), ("report", "consumer"), ("train", "producer")]  # once each


def test_save_refuses_a_bad_asset_name_and_outside_a_run_records_nothing():
    import nbflow

    with pytest.raises(DefinitionError, match="invalid asset name 'no spaces'"):
        nbflow.save("x", 1, asset="no spaces")
    assert nbflow.save("x", 2, asset=Asset("fine")) == 2  # by hand (no run): checked, nothing stored


def test_airflow_example_assets_behaves_as_airflow_documents(tmp_path, nbflow_home, monkeypatch):
    import shutil

    folder = tmp_path / "dags"
    folder.mkdir()
    shutil.copy(Path(__file__).parent / "airflow_examples" / "example_assets.py", folder)
    monkeypatch.setenv("NBFLOW_DAGS_FOLDER", str(folder))
    api.reset()
    sched = Scheduler(executor="inline", parse_interval=60)
    sched.start()
    try:
        sched.loop_once()  # the daily producer's newest interval is due (catchup=False): one run
        drive(sched, finished("asset_produces_1", 1))
        sched.loop_once()
        drive(sched, finished("asset_consumes_1", 1))
        (consumed,) = runs_of("asset_consumes_1")
        assert consumed["trigger"] == "asset"
        producer = runs_of("asset_produces_1")[0]["id"]
        assert [(e["asset"], e["run_id"]) for e in api.run_lineage(consumed["id"])] == [
            ("s3://dag1/output_1.txt", producer)
        ]
        assert runs_of("asset_consumes_1_and_2") == []  # waits for dag2's asset
        second = produce(sched, "asset_produces_2")  # no schedule: triggered by hand
        (both,) = runs_of("asset_consumes_1_and_2")
        assert sorted(e["run_id"] for e in api.run_lineage(both["id"])) == [producer, second]
        for _ in range(5):
            sched.loop_once()
        assert runs_of("asset_consumes_1_never_scheduled") == []
        assert runs_of("asset_consumes_unknown_never_scheduled") == []
        assert len(runs_of("asset_consumes_1")) == 1 and len(runs_of("asset_consumes_1_and_2")) == 1
    finally:
        sched.close()
    dag1 = api.asset_details("s3://dag1/output_1.txt")  # a URI is a name, as in Airflow
    assert dag1["producers"] == ["asset_produces_1.producing_task_1"]
    assert dag1["consumers"] == ["asset_consumes_1", "asset_consumes_1_and_2", "asset_consumes_1_never_scheduled"]
    assert dag1["pending"] == ["asset_consumes_1_never_scheduled"]


def test_a_removed_consumer_is_no_consumer_any_more(dags):
    sched = Scheduler(executor="inline", parse_interval=0)
    sched.start()
    try:
        sched.loop_once()
        assert api.asset_details("model")["consumers"] == ["both", "report"]
        (dags / "consumers.py").unlink()
        sched.loop_once()
        produce(sched, "train")
        model = api.asset_details("model")
        assert model["consumers"] == [] and model["pending"] == [] and len(model["events"]) == 1
        assert runs_of("report") == []
    finally:
        sched.close()


def test_a_sql_task_produces_an_asset(nbflow_home, write_pipeline, monkeypatch, tmp_path):
    monkeypatch.setenv("NBFLOW_CONN_LITE", f"sqlite:///{tmp_path}/lite.db")
    path = write_pipeline(
        """
        from nbflow import Asset, Pipeline
        from nbflow.tasks.sql import sql

        with Pipeline("load") as pipeline:
            sql("CREATE TABLE t (x INTEGER)", conn="lite", output="none", name="ddl", produces=[Asset("warehouse.t")])
            sql("SELECT * FROM missing", conn="lite", output="rows", name="bad", produces=[Asset("never")])
        """
    )
    result = api.run_file(path, executor="inline")
    states = {t["task_id"]: t["state"] for t in result.tasks}
    assert states == {"ddl": "success", "bad": "failed"}
    assert [(e["asset"], e["task_id"]) for e in api.open_store().asset_events()] == [("warehouse.t", "ddl")]
