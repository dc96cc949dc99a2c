"""nbflow/lazyimports.py: rfc3987_syntax (seconds of CPU to import) is deferred until used, with the same answers."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = r"""
import json, sys
import nbflow, nbformat
nbformat.validate(nbformat.v4.new_notebook())  # nbformat -> jsonschema, which imports rfc3987_syntax
stand_in = type(sys.modules["rfc3987_syntax"]).__name__
from jsonschema import FormatChecker
checker = FormatChecker()
answers = [checker.conforms("https://example.org/a?b#c", "iri"), checker.conforms("http://a b", "iri"),
           checker.conforms("../relative", "iri-reference")]
import rfc3987_syntax
print(json.dumps({"stand_in": stand_in, "answers": answers,
                  "after": type(sys.modules["rfc3987_syntax"]).__name__, "attr": callable(rfc3987_syntax.is_valid_syntax)}))
"""


def test_rfc3987_syntax_is_deferred_until_an_iri_is_checked_and_then_answers_as_itself():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["stand_in"] == "_Deferred"  # reading a notebook did not build the RFC 3987 parser
    assert seen["answers"] == [True, False, True]  # the real module's answers, loaded on first use
    assert seen["after"] == "module" and seen["attr"]


def test_a_process_that_imported_rfc3987_syntax_first_keeps_the_real_module():
    code = "import rfc3987_syntax, nbflow, sys; print(type(sys.modules['rfc3987_syntax']).__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "module"
