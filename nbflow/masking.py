"""The secrets masker (Airflow's as the anchor): every value registered with :func:`mask_secret`
is written ``***`` by :func:`redact`, also URL-encoded (a password inside a URI); a dict's
values under sensitive keys (:data:`SENSITIVE_WORDS`, Airflow's list) count as secrets.
:func:`scrub_files` rewrites a finished log or output notebook. Registration happens where
secrets are opened or carried (:mod:`nbflow.vault`); this module knows nothing else of nbflow.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

MASK = "***"
#: Airflow's DEFAULT_SENSITIVE_FIELDS: a variable or extra field whose name contains one is secret
SENSITIVE_WORDS = (
    "access_token",
    "api_key",
    "apikey",
    "authorization",
    "passphrase",
    "passwd",
    "password",
    "private_key",
    "secret",
    "token",
    "keyfile_dict",
    "service_account",
)
#: shorter values are not masked (a one-letter password would turn every such letter into ***)
MIN_MASK_LENGTH = 3


def is_sensitive(name: str) -> bool:
    """Whether a variable key or an extra field's name looks secret (Airflow's rule: contains a word)."""
    lowered = name.lower()
    return any(word in lowered for word in SENSITIVE_WORDS)


_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None
_mask_lock = threading.Lock()


def mask_secret(value: Any, name: str | None = None) -> None:
    """Mask ``value`` from now on (its strings; for a dict, those under sensitive keys, or all
    of them when ``name`` itself is sensitive). Also its URL-encoded forms."""
    global _pattern
    found = list(_strings(value, all_=name is None or is_sensitive(name)))
    with _mask_lock:
        for text in found:
            for form in {text, quote(text, safe=""), quote_plus(text)}:
                if len(form) >= MIN_MASK_LENGTH and form not in _secrets:
                    _secrets.add(form)
                    _pattern = None


def masked_value(value: Any, name: str = "") -> Any:
    """``value`` as shown: ``***`` when ``name`` is sensitive, else with its sensitive fields ``***``."""
    if is_sensitive(name):
        return MASK
    if isinstance(value, Mapping):
        return {k: masked_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked_value(v) for v in value]
    return value


def _strings(value: Any, *, all_: bool) -> Iterable[str]:
    if isinstance(value, str):
        if all_:
            yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, all_=all_ or is_sensitive(str(key)))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item, all_=all_)
    elif all_ and value is not None and not isinstance(value, bool):
        yield str(value)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every masked secret (and ``secrets``) replaced by ``***``."""
    global _pattern
    extra = [s for s in secrets if s and len(s) >= MIN_MASK_LENGTH]
    if not text or (not _secrets and not extra):
        return text
    if extra:
        return _compile({*_secrets, *extra}).sub(MASK, text)
    with _mask_lock:
        if _pattern is None:
            _pattern = _compile(_secrets)
        pattern = _pattern
    return pattern.sub(MASK, text)


def redact_each(*texts: Any) -> tuple[Any, ...]:
    """Each text redacted (None and non-strings as they are): an attempt's error message and traceback."""
    return tuple(redact(t) if isinstance(t, str) else t for t in texts)


def _compile(values: Iterable[str]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True)))


def redact_notebook(nb: dict[str, Any], secrets: Iterable[str] = ()) -> bool:
    """Mask secrets in a notebook's outputs and sources (in place); whether anything changed."""
    secrets = list(secrets)
    changed = False

    def walk(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, str):
            masked = redact(value, secrets)
            changed = changed or masked != value
            return masked
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    for cell in nb.get("cells", []):
        for part in ("outputs", "source"):
            if part in cell:
                cell[part] = walk(cell[part])
    return changed


def scrub_files(*paths: str | None) -> None:
    """Rewrite local text files (a log; an ``.ipynb`` as JSON) with secrets masked."""
    if not _secrets:
        return
    for path in paths:
        if not path or "://" in path or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        if path.endswith(".ipynb"):
            try:
                nb = json.loads(text)
            except ValueError:
                continue
            if redact_notebook(nb):
                _rewrite(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        elif (masked := redact(text)) != text:
            _rewrite(path, masked)


def _rewrite(path: str, text: str) -> None:
    tmp = f"{path}.masking"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)
