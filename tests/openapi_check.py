"""Checks answers of the REST API against ``docs/openapi.yaml`` (the one source of its shapes).

:func:`check_answer` is called by :meth:`tests.jupyter_procs.JupyterProc.request` for every
answer of every server test, so a handler whose answer (success or error) is not what the
document says fails the test that made the request.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import yaml
from openapi_schema_validator import OAS30Validator, oas30_format_checker

DOCUMENT = Path(__file__).parent.parent / "docs" / "openapi.yaml"


@functools.lru_cache(maxsize=1)
def document() -> dict[str, Any]:
    """The OpenAPI document, checked to be a valid OpenAPI 3.0 document once."""
    from openapi_spec_validator import validate

    spec = yaml.safe_load(DOCUMENT.read_text())
    validate(spec)
    return spec


@functools.lru_cache(maxsize=1)
def _templates() -> list[tuple[re.Pattern[str], str]]:
    out = []
    for template in document()["paths"]:
        regex = re.escape(template)
        regex = re.sub(r"\\\{path\\\}", r".+", regex)  # the drive's file path may hold slashes
        regex = re.sub(r"\\\{(\w+)\\\}", r"[^/]+", regex)
        out.append((re.compile(regex + r"$"), template))
    # concrete paths first: /pipelines/{name}/graph.svg before /pipelines/{name}/graph
    return sorted(out, key=lambda pair: -len(pair[1]))


def operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented (template, operation) of ``method path`` (a path under the API, without query)."""
    for regex, template in _templates():
        if regex.match("/" + path.lstrip("/")):
            op = document()["paths"][template].get(method.lower())
            assert op is not None, f"{method} {template} is not in {DOCUMENT.name}"
            return template, op
    raise AssertionError(f"no path of {DOCUMENT.name} matches {path}")


def check_answer(method: str, path: str, status: int, content_type: str, body: Any) -> None:
    """Assert that the answer is one the document lists for the operation, with a valid body."""
    template, op = operation(method, path.split("?", 1)[0])
    response = op["responses"].get(str(status)) or op["responses"].get("default")
    assert response is not None, (
        f"{method} {template} answered {status}, which {DOCUMENT.name} does not list: {body!r:.300}"
    )
    if "$ref" in response:
        response = document()["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    content = response.get("content")
    if not content:
        return
    kind = content_type.split(";", 1)[0].strip()
    assert kind in content, f"{method} {template} {status}: content type {kind!r}, documented {sorted(content)}"
    schema = content[kind].get("schema")
    if schema is None:
        return
    root = {**schema, "components": document()["components"]}
    validator = OAS30Validator(root, format_checker=oas30_format_checker)
    errors = sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{method} {template} {status} does not match {DOCUMENT.name}: " + "; ".join(
        f"at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:300]}" for e in errors[:5]
    )


def route_paths(routes: list[tuple[str, Any, tuple[str, ...]]]) -> set[tuple[str, str]]:
    """(METHOD, /template) of every route of ``handlers.ROUTES``, written as the document writes paths."""
    out = set()
    for pattern, _handler, methods in routes:
        variants = [pattern.replace(r"(?P<svg>\.svg)?", ""), pattern.replace(r"(?P<svg>\.svg)?", ".svg")]
        for variant in dict.fromkeys(variants):
            template = "/" + re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", variant).replace("\\.", ".")
            assert "(" not in template, f"route {pattern} has a group the check does not know"
            out.update((m, template) for m in methods)
    return out


def document_paths() -> set[tuple[str, str]]:
    """(METHOD, /template) of every operation of the document."""
    return {
        (m.upper(), t)
        for t, item in document()["paths"].items()
        for m in item
        if m in ("get", "post", "put", "delete", "patch")
    }
