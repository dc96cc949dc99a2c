"""I/O on an artifact root behind a URL (``s3://``, ``gs://``, ``file://`` ... through fsspec).

* :func:`store_errors`: around such I/O, the store client's own errors (botocore's
  ``ConnectTimeoutError``, an ``OSError`` naming no file ...) become an
  :class:`~nbflow.exceptions.ArtifactStoreError` naming the URL: an ``OSError`` (EIO), so an
  attempt it stops ends ``storage_error`` and its retries apply.
* :func:`is_object_store`: an object store has no folders to make, and one PUT is atomic
  (:func:`nbflow.artifacts.write_bytes` then writes one PUT, without a temporary name).
* :func:`upload_folder`: a staged attempt folder sent as one batch (one PUT per file on an
  object store).
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from collections.abc import Iterator
from typing import Any

from nbflow.exceptions import ArtifactStoreError

__all__ = ["OBJECT_STORES", "is_object_store", "store_errors", "upload_folder", "ArtifactStoreError"]


@contextlib.contextmanager
def store_errors(uri: str, action: str) -> Iterator[None]:
    """Around I/O on a URL root: the store client's own errors (botocore's
    ``ConnectTimeoutError``, an ``OSError`` naming no file ...) become a
    :class:`~nbflow.exceptions.ArtifactStoreError` naming ``uri``; a missing file stays
    ``FileNotFoundError``, an ``OSError`` that names its file passes as it is."""
    try:
        yield
    except (FileNotFoundError, ArtifactStoreError):
        raise
    except OSError as exc:
        if exc.filename:
            raise
        raise ArtifactStoreError(action, uri, exc) from exc
    except Exception as exc:  # noqa: BLE001 - every client has its own exception classes
        raise ArtifactStoreError(action, uri, exc) from exc


#: fsspec protocols of object stores: no folders to make, and one PUT is atomic
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oci", "memory"})


def is_object_store(fs: Any) -> bool:
    """Whether an fsspec filesystem is an object store (see :data:`OBJECT_STORES`)."""
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & OBJECT_STORES)


def upload_folder(local: str, uri: str) -> None:
    """Copy every file under the local folder ``local`` to the same relative paths under the
    URL ``uri``, in one batch (an object store gets one PUT per file and nothing else); the
    store's errors are a :class:`~nbflow.exceptions.ArtifactStoreError` naming ``uri``."""
    import fsspec

    files = [os.path.join(top, name) for top, _, names in os.walk(local) for name in names]
    with store_errors(uri, "upload"):
        fs, path = fsspec.core.url_to_fs(uri)
        targets = [f"{path.rstrip('/')}/{os.path.relpath(f, local).replace(os.sep, '/')}" for f in files]
        if not is_object_store(fs):
            for folder in {posixpath.dirname(t) for t in targets} | {path}:
                fs.makedirs(folder, exist_ok=True)
        if files:
            fs.put(files, targets)
