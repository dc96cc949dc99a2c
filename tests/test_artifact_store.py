"""An artifact root in an S3 object store: moto's S3 server on 127.0.0.1 (a real S3 protocol
server, ``moto[server]``) through s3fs, and a store that cannot be reached (a closed port).
The multi-host version, with the store's network cut mid-run, is tests/cluster."""

from __future__ import annotations

import errno
from collections.abc import Iterator

import fsspec.config
import pytest

from nbflow import Pipeline, api, artifacts, remotefs, task
from nbflow.exceptions import ArtifactStoreError
from nbflow.loader import load_pipeline
from nbflow.worker import read_result
from tests.jupyter_procs import free_port

KEYS = {"key": "nbflow-test", "secret": "nbflow-test"}
FAST = {"connect_timeout": 1, "read_timeout": 5, "retries": {"max_attempts": 1}}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _use(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    """fsspec's S3 options (what FSSPEC_S3 sets in a new process) for this test."""
    monkeypatch.setitem(fsspec.config.conf, "s3", {**KEYS, "endpoint_url": endpoint, "config_kwargs": FAST})


@pytest.fixture
def live(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    _use(monkeypatch, s3_server)
    bucket = f"b{free_port()}"
    fsspec.filesystem("s3", **fsspec.config.conf["s3"]).mkdir(bucket)
    return bucket


@pytest.fixture
def away(monkeypatch: pytest.MonkeyPatch) -> None:
    _use(monkeypatch, f"http://127.0.0.1:{free_port()}")  # nobody listens there


def test_an_object_store_gets_whole_objects_without_temporary_names(live: str) -> None:
    fs, _ = fsspec.core.url_to_fs(f"s3://{live}")
    assert remotefs.is_object_store(fs) and not remotefs.is_object_store(fsspec.filesystem("file"))
    artifacts.write_bytes(f"s3://{live}/run-1/t/try-1/result.json", b'{"ok": true}', atomic=True)
    assert fs.find(live) == [f"{live}/run-1/t/try-1/result.json"]  # no result.json.tmp, no folder markers
    assert artifacts.read_bytes(f"s3://{live}/run-1/t/try-1/result.json") == b'{"ok": true}'
    with pytest.raises(FileNotFoundError):  # a missing object stays what it is, not a ArtifactStoreError
        artifacts.read_bytes(f"s3://{live}/run-1/t/try-1/nothing.json")


def test_upload_folder_sends_every_file_at_its_relative_path(live: str, tmp_path) -> None:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "log.txt").write_text("hello\n")
    (tmp_path / "artifacts" / "return.json").write_text("42")
    (tmp_path / "empty").mkdir()
    remotefs.upload_folder(str(tmp_path), f"s3://{live}/run-1/t/try-1")
    fs, _ = fsspec.core.url_to_fs(f"s3://{live}")
    assert sorted(fs.find(live)) == [f"{live}/run-1/t/try-1/artifacts/return.json", f"{live}/run-1/t/try-1/log.txt"]
    assert fs.cat(f"{live}/run-1/t/try-1/artifacts/return.json") == b"42"


def test_an_unreachable_store_is_a_store_error_naming_the_url(away: None, tmp_path) -> None:
    uri = "s3://nbflow/run-1/t/try-1/result.json"
    with pytest.raises(ArtifactStoreError) as caught:
        artifacts.write_bytes(uri, b"{}")
    error = caught.value
    assert isinstance(error, OSError) and error.errno == errno.EIO
    assert error.filename == uri and error.action == "write"
    assert "EndpointConnectionError" in error.strerror or "ConnectionError" in error.strerror, error.strerror
    with pytest.raises(ArtifactStoreError, match="Connect") as caught:
        artifacts.read_bytes(uri)
    assert caught.value.action == "read"
    (tmp_path / "log.txt").write_text("x")
    with pytest.raises(ArtifactStoreError) as caught:
        remotefs.upload_folder(str(tmp_path), "s3://nbflow/run-1/t/try-1")
    assert caught.value.action == "upload" and caught.value.filename == "s3://nbflow/run-1/t/try-1"
    assert read_result("s3://nbflow/run-1/t/try-1") is None  # asked again later, not an error in the driver


def test_an_attempt_that_cannot_upload_ends_storage_error_and_is_retried(
    nbflow_home, away: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", "s3://nbflow/runs")
    api.reset()

    @task(retries=1, retry_delay=0)
    def answer() -> int:
        return 42

    with Pipeline("unreachable_store") as pipeline:
        answer()
    result = api.run_pipeline(pipeline, executor="inline")
    assert not result.ok
    tries = api.run_details(result.run_id)["attempts"]
    assert [(a["try_number"], a["reason"]) for a in tries] == [(1, "storage_error"), (2, "storage_error")]
    message = tries[0]["message"]
    assert message.startswith(f"cannot upload s3://nbflow/runs/unreachable_store/run-{result.run_id}/answer/try-1: ")
    assert "NBFLOW_ARTIFACT_ROOT" in message and "reaches its store" in message


INPUTS = """
from nbflow import Pipeline, task


@task
def make() -> list:
    return [1, 2, 3]


@task(retries=0)
def use(values: list) -> int:
    return sum(values)


with Pipeline("inputs_away") as pipeline:
    use(make())
"""


def test_inputs_that_cannot_be_read_are_a_storage_error_too(nbflow_home, live, write_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", f"s3://{live}/runs")
    api.reset()
    first = api.run_pipeline(load_pipeline(write_pipeline(INPUTS)), executor="inline")
    assert first.ok and api.load_output(first.run_id, "use") == 6
    _use(monkeypatch, f"http://127.0.0.1:{free_port()}")  # the store goes away before `use` runs again
    again = api.rerun(first.run_id, tasks=["use"], executor="inline")
    assert not again.ok
    attempt = [a for a in api.run_details(first.run_id)["attempts"] if a["task_id"] == "use"][-1]
    assert attempt["try_number"] == 2 and attempt["reason"] == "storage_error"
    assert attempt["message"].startswith(f"cannot read s3://{live}/runs/inputs_away/run-{first.run_id}/make/try-1/")


def test_the_front_doors_say_the_store_is_away_instead_of_a_traceback(
    nbflow_home, away: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nbflow.cli import main
    from nbflow.server.errors import to_api_error

    monkeypatch.setenv("NBFLOW_ARTIFACT_ROOT", "s3://nbflow/runs")
    api.reset()

    @task
    def talk() -> None:
        print("hello")

    with Pipeline("store_away") as pipeline:
        talk()
    run_id = api.run_pipeline(pipeline, executor="inline").run_id
    assert main(["logs", str(run_id), "talk"]) == 2
    said = capsys.readouterr().err
    assert said.startswith(f"error: cannot read s3://nbflow/runs/store_away/run-{run_id}/talk/try-1/log.txt: ")
    assert "hint: check NBFLOW_ARTIFACT_ROOT and that this host reaches its store" in said
    with pytest.raises(ArtifactStoreError) as caught:
        api.read_log(run_id, "talk")
    answer = to_api_error(caught.value, context="GET log")  # the REST API: an outage (503), not a bug (500)
    assert answer.status_code == 503
    assert answer.body["message"] == str(caught.value) and "NBFLOW_ARTIFACT_ROOT" in answer.body["hint"]
