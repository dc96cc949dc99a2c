"""docs/openapi.yaml is the one source of the REST shapes: it is a valid OpenAPI document,
it lists exactly the routes of ``handlers.ROUTES``, and the TypeScript types the extension
uses (``extension/src/schema.d.ts``) are what openapi-typescript generates from it now.
(That every answer of the server matches it is checked in every server test:
``tests/openapi_check.py``.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from nbflow.server.handlers import ROUTES
from tests.openapi_check import document, document_paths, route_paths

EXTENSION = Path(__file__).parent.parent / "extension"


def test_the_document_is_valid_openapi_and_lists_every_route_and_no_other() -> None:
    assert document()["openapi"].startswith("3.0")
    routes, documented = route_paths(ROUTES), document_paths()
    assert len(routes) >= 12
    assert routes - documented == set(), "routes the document does not describe"
    assert documented - routes == set(), "documented paths no route serves"


def test_every_operation_documents_its_errors() -> None:
    for template, item in document()["paths"].items():
        for method, op in item.items():
            statuses = set(op["responses"])
            assert {"403", "500"} <= statuses, (method, template, statuses)
            if method == "post":
                assert "413" in statuses, (method, template)


def test_the_generated_typescript_is_up_to_date(tmp_path: Path) -> None:
    """Run the generator (the extension's devDependency) and compare with the committed file."""
    if shutil.which("node") is None:
        pytest.skip("node is not installed: the generated TypeScript cannot be checked here (CI has node)")
    generator = EXTENSION / "node_modules" / ".bin" / "openapi-typescript"
    prettier = EXTENSION / "node_modules" / ".bin" / "prettier"
    assert generator.exists() and prettier.exists(), "run `cd extension && jlpm install` first (.ci/run does)"
    out = tmp_path / "schema.d.ts"
    subprocess.run(
        [str(generator), "../docs/openapi.yaml", "--output", str(out)],
        cwd=EXTENSION,
        check=True,
        capture_output=True,
        timeout=120,
    )
    formatted = subprocess.run(
        [str(prettier), "--stdin-filepath", "src/schema.d.ts"],
        cwd=EXTENSION,
        check=True,
        input=out.read_bytes(),
        capture_output=True,
        timeout=120,
    ).stdout.decode()
    assert formatted == (EXTENSION / "src" / "schema.d.ts").read_text(), (
        "extension/src/schema.d.ts is out of date with docs/openapi.yaml: run `cd extension && jlpm gen:api` and commit it"
    )
