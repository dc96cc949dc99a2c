"""nbflow.fingerprint: parts that mean "the result would be the same", and the reasons they give."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from nbflow import fingerprint as fp
from nbflow.fingerprint import Unhashable
from nbflow.refs import OutputRef, ParamRef


def test_stable_repr_sorts_sets_and_dicts_and_refuses_objects():
    assert fp.stable_repr({"b": {3, 1, 2}, "a": (1, [2.5, None])}) == fp.stable_repr(
        {"a": (1, [2.5, None]), "b": {2, 3, 1}}
    )
    assert fp.stable_repr([1]) != fp.stable_repr((1,))
    assert fp.stable_repr(OutputRef("prepare", "data")) != fp.stable_repr(OutputRef("prepare"))
    assert "C" in fp.stable_repr(ParamRef("C"))

    class Model:
        pass

    with pytest.raises(Unhashable, match=r"argument model is a .*Model, which has no deterministic hash"):
        fp.stable_repr({"k": Model()}, "argument model")


def test_the_same_set_hashes_the_same_in_another_process():
    """Set order depends on PYTHONHASHSEED: the text must not."""
    code = "from nbflow.fingerprint import stable_repr; print(stable_repr({'pear', 'apple', 'fig', 'kiwi'}))"
    texts = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(texts) == 1


def test_short_keeps_small_values_readable_and_hashes_long_ones():
    assert fp.short(0.5) == "0.5"
    long = fp.short("x" * 500)
    assert len(long) < 60 and long.startswith("'xxx") and "#" in long
    assert fp.short("x" * 500) != fp.short("x" * 499 + "y")


def _module(tmp_path, name, source):
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    sys.path.insert(0, str(tmp_path))
    try:
        import importlib

        sys.modules.pop(name, None)
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(tmp_path))


FUNCS = """
import math
THRESHOLD = 3

def helper(x):
    return x * THRESHOLD

def train(data):
    # a comment
    return helper(sum(data)) + math.floor(0.5)
"""


def test_function_parts_follow_helpers_and_constants_of_the_module_not_comments(tmp_path):
    base = fp.function_parts(_module(tmp_path, "m_base", FUNCS).train)
    assert set(base) == {"function:train", "function:helper", "global:THRESHOLD"}
    assert base["global:THRESHOLD"] == "3"
    moved = FUNCS.replace("    # a comment\n", "\n\n    # another comment, lines moved\n")
    assert fp.function_parts(_module(tmp_path, "m_moved", moved).train) == base
    helper = fp.function_parts(_module(tmp_path, "m_helper", FUNCS.replace("x * THRESHOLD", "x * THRESHOLD + 1")).train)
    assert fp.changes(base, helper) == ["function helper changed"]
    const = fp.function_parts(_module(tmp_path, "m_const", FUNCS.replace("THRESHOLD = 3", "THRESHOLD = 4")).train)
    assert fp.changes(base, const) == ["global THRESHOLD: 3 -> 4"]
    literal = fp.function_parts(_module(tmp_path, "m_lit", FUNCS.replace("0.5", "0.7")).train)
    assert fp.changes(base, literal) == ["function train changed"]


GLOBALS = """
import dataclasses
import functools
import logging
import math

CFG = {"lr": 0.1, "layers": [8, 4]}
log = logging.getLogger("m")


class Scaler:
    factor = 2

    def __init__(self, shift):
        self.shift = shift

    def apply(self, x):
        return x * self.factor + self.shift


@dataclasses.dataclass
class Params:
    alpha: float = 0.5


@functools.lru_cache(maxsize=None)
def cached_helper(x):
    return x + 1


add_two = functools.partial(math.fsum)


def train(data):
    log.info("training")
    return Scaler(CFG["lr"]).apply(cached_helper(len(data))) + Params().alpha + add_two([1.0]) + math.floor(1.5)
"""


@pytest.mark.parametrize(
    "edit, reason",
    [
        (('"lr": 0.1', '"lr": 0.5'), "global CFG: {'layers': [8, 4], 'lr': 0.1} -> {'layers': [8, 4], 'lr': 0.5}"),
        (("x * self.factor", "x * self.factor * 2"), "function Scaler.apply changed"),
        (("factor = 2", "factor = 3"), "class Scaler changed"),
        (("alpha: float = 0.5", "alpha: float = 0.7"), "class Params changed"),
        (("return x + 1", "return x + 2"), "function cached_helper changed"),
    ],
)
def test_module_values_classes_and_decorated_helpers_a_task_uses_are_part_of_it(tmp_path, edit, reason):
    """A dict constant, a class's method or attribute, a dataclass default, an lru_cache'd helper:
    changing any of them must make the task stale (they were skipped, so the task was reused)."""
    base = fp.function_parts(_module(tmp_path, "g_base", GLOBALS).train)
    assert {"function:Scaler.apply", "function:Scaler.__init__", "class:Scaler", "class:Params"} <= set(base)
    assert "global:log" not in base  # a logger's calls do not change results
    assert fp.function_parts(_module(tmp_path, "g_same", GLOBALS).train) == base
    changed = fp.function_parts(_module(tmp_path, "g_edit", GLOBALS.replace(*edit)).train)
    assert fp.changes(base, changed) == [reason]


def test_a_module_object_without_a_deterministic_text_makes_the_task_unhashable(tmp_path):
    source = "import threading\nLOCK = threading.Lock()\n\ndef train():\n    with LOCK:\n        return 1\n"
    with pytest.raises(Unhashable, match=r"global LOCK is a _thread.lock"):
        fp.function_parts(_module(tmp_path, "g_lock", source).train)


def test_a_closure_over_an_object_is_unhashable_and_over_a_number_is_part_of_it():
    def make(value):
        def fn():
            return value

        return fn

    assert fp.function_parts(make(1)) != fp.function_parts(make(2))
    with pytest.raises(Unhashable, match="variable value that"):
        fp.function_parts(make(object()))


def test_notebook_parts_ignore_outputs_counts_ids_metadata_and_markdown_but_not_tags():
    cell = {"cell_type": "code", "source": "x = 1", "metadata": {}, "outputs": [], "execution_count": None, "id": "a"}
    title = {"cell_type": "markdown", "source": "# title"}
    base, names = fp.notebook_cell_parts({"cells": [title, cell]}, "train.ipynb")
    assert list(base) == ["code:train.ipynb code cell 1"]
    assert names == {"code:train.ipynb code cell 1": "train.ipynb Cell 2/2"}  # as JupyterLab's status bar
    noisy = dict(
        cell,
        outputs=[{"output_type": "stream", "text": "1"}],
        execution_count=9,
        id="b",
        metadata={"collapsed": True, "scrolled": False},
    )
    assert fp.notebook_cell_parts({"cells": [title, noisy]}, "train.ipynb")[0] == base
    notes = {"cell_type": "markdown", "source": "more words"}  # a markdown cell added or edited: not code
    assert fp.notebook_cell_parts({"cells": [title, notes, cell]}, "train.ipynb")[0] == base
    assert fp.notebook_cell_parts({"cells": [dict(title, source="# renamed"), cell]}, "train.ipynb")[0] == base
    tagged = dict(cell, metadata={"tags": ["parameters"]})
    assert fp.notebook_cell_parts({"cells": [title, tagged]}, "train.ipynb")[0] != base
    edited, names = fp.notebook_cell_parts({"cells": [title, notes, dict(cell, source=["x = ", "2"])]}, "train.ipynb")
    assert fp.changes(base, edited, names.get) == ["code changed: train.ipynb Cell 3/3"]


def test_reads_parts_hash_contents_globs_folders_and_say_missing(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "a.yaml").write_text("a: 1")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("x\n1\n")
    parts = fp.reads_parts(["conf/*.yaml", "data", "nope.csv"], str(tmp_path))
    assert set(parts) == {"reads:conf/a.yaml", "reads:data/raw.csv", "reads:nope.csv"}
    assert parts["reads:nope.csv"] == "missing"
    (tmp_path / "data" / "raw.csv").write_text("x\n2\n")
    os.utime(tmp_path / "data" / "raw.csv", ns=(1, 1))  # mtime alone never decides for small files
    again = fp.reads_parts(["conf/*.yaml", "data", "nope.csv"], str(tmp_path))
    assert fp.changes(parts, again) == ["reads data/raw.csv changed"]
    (tmp_path / "nope.csv").write_text("now here")
    assert (
        fp.explain({"reads:nope.csv": "missing"}, fp.reads_parts(["nope.csv"], str(tmp_path)))
        == "reads nope.csv changed"
    )


def test_a_file_over_the_threshold_is_size_mtime_and_edges(tmp_path, monkeypatch):
    monkeypatch.setattr(fp, "LARGE_FILE", 10)
    monkeypatch.setattr(fp, "_EDGE", 4)
    big = tmp_path / "big.bin"
    big.write_bytes(b"0123456789abcdef")
    first = fp.file_digest(str(big))
    assert first.startswith("size=16,mtime=") and "edges=" in first
    big.write_bytes(b"0123456789abcdeX")  # the last bytes changed
    assert fp.file_digest(str(big)) != first


def test_explain_orders_own_changes_before_upstream_and_counts_the_rest():
    old = {
        "param:C": "1.0",
        "upstream:prepare": "aa",
        "code:train.ipynb code cell 3": "x",
        "reads:a.csv": "1",
        "kind": "notebook",
    }
    new = {
        "param:C": "0.5",
        "upstream:prepare": fp.WILL_RUN,
        "code:train.ipynb code cell 3": "y",
        "reads:a.csv": "2",
        "kind": "notebook",
    }
    assert fp.changes(old, new) == [
        "code changed: train.ipynb code cell 3",
        "parameter C: 1.0 -> 0.5",
        "reads a.csv changed",
        "upstream prepare will run",
    ]
    assert fp.explain(old, new) == "code changed: train.ipynb code cell 3; parameter C: 1.0 -> 0.5 (+2 more)"
    assert fp.explain(None, new) == "fingerprint changed"
    assert fp.changes({"upstream:t:a": "1", "upstream:t:b": "1"}, {"upstream:t:a": "2", "upstream:t:b": "2"}) == [
        "upstream t changed"
    ]


def test_outputs_key_is_the_content_hash_or_the_attempt_itself():
    refs = [{"name": "a", "digest": "d1"}, {"name": "b", "digest": "d2"}]
    assert fp.outputs_key(refs, 1, 1) == fp.outputs_key(list(reversed(refs)), 7, 3)  # content, not run ids
    assert fp.outputs_key([], 1, 1) == "attempt 1/1" != fp.outputs_key([], 2, 1)
    assert fp.changes({"args": "a", "command": "x"}, {"args": "b", "command": "y"}) == [
        "command changed",
        "arguments changed",
    ]
    assert fp.outputs_key([{"name": "a", "digest": ""}], 4, 2) == "attempt 4/2"  # written before digests were kept
    assert fp.output_digest(refs, ["a"]) != fp.output_digest(refs, ["b"])
