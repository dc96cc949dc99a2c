"""The JupyterLab sidebar's read-only "Connections & variables" section (issue 17), in headless
Debian chromium: it lists what the REST API gives, secrets as ***, never the password.
JupyterLab loads this tree's build of the extension (``cd extension && jlpm build``).
Screenshot: ``test-artifacts/secrets-sidebar.png``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from nbflow import vault
from tests.jupyter_procs import TREE_LABEXTENSION, JupyterProc, nbflow_env, start_jupyter, stop_nbflow_processes
from tests.lab_browser import lab_page, require_browser, shot

pytestmark = [pytest.mark.browser, pytest.mark.slow]
sync_api = require_browser()
if not (TREE_LABEXTENSION / "package.json").exists():
    pytest.skip("the extension is not built in this tree: cd extension && jlpm build", allow_module_level=True)

PASSWORD = "ui-s3cret-pw-31"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterProc]:
    root = tmp_path_factory.mktemp("labsecrets")
    (root / "pipelines").mkdir()
    env = {**nbflow_env(root), "NBFLOW_FERNET_KEY": vault.new_key()}
    proc = start_jupyter(root, env, "lab", extra_args=("--LabApp.expose_app_in_browser=True",))
    yield proc
    proc.stop()
    stop_nbflow_processes(root)


def test_the_sidebar_lists_connections_and_variables_masked(lab: JupyterProc) -> None:
    uri = f"postgresql://etl:{PASSWORD}@wh.example.com:5432/dw"
    assert lab.request("POST", "connections", {"name": "warehouse", "uri": uri, "description": "the DW"})[0] == 201
    assert lab.request("PUT", "variables/api_token", {"value": "tok-ui-778899"})[0] == 200
    assert lab.request("PUT", "variables/threshold", {"value": 0.75})[0] == 200
    with lab_page(lab.url, lab.token) as pg:
        if not pg.locator(".nbflow-sidebar").is_visible():
            pg.click('li[data-id="nbflow-sidebar"]', timeout=30_000)
        pg.click(".nbflow-secrets summary", timeout=30_000)
        pg.wait_for_selector('.nbflow-connection[data-connection="warehouse"]', timeout=30_000)
        pg.wait_for_selector('.nbflow-variable[data-variable="threshold"]', timeout=30_000)
        row = pg.locator('.nbflow-connection[data-connection="warehouse"]').inner_text()
        assert "postgresql://etl:***@wh.example.com:5432/dw" in row and "postgresql" in row
        token = pg.locator('.nbflow-variable[data-variable="api_token"]').inner_text()
        assert "***" in token and "tok-ui-778899" not in token
        assert "0.75" in pg.locator('.nbflow-variable[data-variable="threshold"]').inner_text()
        html = pg.content()
        assert PASSWORD not in html and "tok-ui-778899" not in html
        shot(pg, "secrets-sidebar")
