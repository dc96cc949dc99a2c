"""papermill's log, less what nbflow does on purpose.

papermill warns ``Passed unknown parameter: NAME`` for each parameter its own inspection of
the notebook does not find. nbflow has already checked every parameter it passes (refusing
undeclared ones unless ``params_cell="inject_top"`` asked for them) so, within an attempt,
the warning says nothing: this filter drops it for the names the attempt passes, in the
thread running that attempt. Every other papermill message, and papermill used elsewhere in
the process, is left alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

_passing = threading.local()
_UNKNOWN = "Passed unknown parameter: "


class _Injected(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith(_UNKNOWN) and message[len(_UNKNOWN) :] in getattr(_passing, "names", ()))


logging.getLogger("papermill").addFilter(_Injected())


def passing(names: Iterable[str]) -> None:
    """The parameters this thread's attempt passes to papermill on purpose (empty when it ends)."""
    _passing.names = frozenset(names)
