"""Generate the tiny notebooks used by tests/test_params.py and tests/test_nbrun.py.

Run ``python tests/notebooks/make_notebooks.py`` after changing this file and commit the
regenerated ``.ipynb`` files with it. Notebooks are kept tiny so that a kernel start is the
only real cost of a test.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

PY3 = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


def _params(source: str) -> nbformat.NotebookNode:
    cell = new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    return cell


def _nb(cells: list[nbformat.NotebookNode], metadata: dict | None = None) -> nbformat.NotebookNode:
    nb = new_notebook(cells=cells, metadata=dict(PY3) if metadata is None else metadata)
    return nb


NOTEBOOKS: dict[str, nbformat.NotebookNode] = {
    "params_ok.ipynb": _nb(
        [
            new_markdown_cell("# params_ok"),
            _params(
                "alpha: float = 0.5  # learning rate\n"
                "n = 5\n"
                'name = "world"\n'
                "flag = False\n"
                "items = [1, 2]\n"
                "opts = {'a': 1}\n"
                "anything = None\n"
            ),
            new_code_cell('print(f"hello {name} alpha={alpha} n={n} flag={flag}")'),
            new_code_cell("result = alpha * n\nresult"),
        ]
    ),
    "no_params.ipynb": _nb(
        [
            new_code_cell('print("no params here")'),
            new_code_cell("x = 1"),
        ]
    ),
    "uses_context.ipynb": _nb(
        [
            _params("x = 1"),
            new_code_cell('print("ctx", nbflow_ctx["run_id"], x)'),
        ]
    ),
    "raises.ipynb": _nb(
        [
            _params("alpha = 0.5"),
            new_code_cell('print("before the error")'),
            new_code_cell('raise ValueError(f"bad alpha {alpha}")'),
            new_code_cell('print("never printed")'),
        ]
    ),
    "failnow.ipynb": _nb(
        [
            new_code_cell(
                'class FailNow(Exception):\n    pass\nraise FailNow("data is wrong, retrying will not help")'
            ),
            new_code_cell('print("never printed")'),
        ]
    ),
    "sysexit0.ipynb": _nb(
        [
            new_code_cell('print("stopping early")'),
            new_code_cell("import sys\nsys.exit(0)"),
            new_code_cell('print("never printed")'),
        ]
    ),
    "sleeps.ipynb": _nb(
        [
            _params("seconds = 30"),
            new_code_cell('print("before sleep", flush=True)'),
            new_code_cell("import time\ntime.sleep(seconds)"),
            new_code_cell('print("after sleep")'),
            new_code_cell('print("last cell")'),
        ]
    ),
    "kills_kernel.ipynb": _nb(
        [
            new_code_cell('print("about to die", flush=True)'),
            new_markdown_cell("The next cell kills its own kernel."),
            new_code_cell("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
            new_code_cell('print("never printed")'),
        ]
    ),
    "many_short_cells.ipynb": _nb(
        [new_code_cell("import time")] + [new_code_cell(f"time.sleep(0.25)\nprint('cell {i}')") for i in range(1, 41)]
    ),
    "ignores_sigterm.ipynb": _nb(
        [
            new_code_cell(
                "import signal, subprocess, time\n"
                "# Ignored signals stay ignored across exec: the child ignores SIGTERM too.\n"
                "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                'child = subprocess.Popen(["sleep", "60"])\n'
                'print("child pid", child.pid, flush=True)'
            ),
            new_code_cell("time.sleep(60)"),
            new_code_cell('print("never printed")'),
        ]
    ),
    "no_kernelspec.ipynb": _nb(
        [_params("x = 1"), new_code_cell("print(x)")],
        metadata={"language_info": {"name": "python"}},
    ),
    "unknown_kernel.ipynb": _nb(
        [new_code_cell("print(1)")],
        metadata={
            "kernelspec": {"name": "py99", "display_name": "Python 99", "language": "python"},
            "language_info": {"name": "python"},
        },
    ),
}


def main() -> None:
    """Write every notebook next to this script."""
    for name, nb in NOTEBOOKS.items():
        nbformat.validate(nb)
        nbformat.write(nb, HERE / name)


if __name__ == "__main__":
    main()
