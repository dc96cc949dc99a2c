"""Assets: named pieces of data that tasks produce and pipelines wait for (Airflow's assets).

A task declares what it updates, ``produces=[Asset("model")]`` (or, inside the task or its
notebook, ``nbflow.save("model.pkl", value, asset="model")``); each successful attempt of it
records one *asset event* in the store. A pipeline scheduled on assets,
``Pipeline("report", schedule=[Asset("model"), Asset("features")])``, gets one run (trigger
``asset``) each time **all** of its assets were updated since its last asset-triggered run;
several updates of one asset before that run count once (the run records every event it
consumed: its lineage). See :mod:`nbflow.store.assets` for how the scheduler makes such a run
exactly once, and ``nbflow assets`` for the lineage.

This module is the model half: the :class:`Asset` value and the checks of where one is given.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from nbflow.exceptions import DefinitionError

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-:/]*$")  # a plain name, or a URI as Airflow's Asset("s3://b/k")
NAME_LIMIT = 200


@dataclass(frozen=True)
class Asset:
    """A named piece of data (a model, a table, a file): ``Asset("model", uri="s3://b/model.pkl")``.

    Two assets are the same when their names are: the name is what events and schedules match
    on; ``uri`` and ``description`` are shown by ``nbflow assets``.
    """

    name: str
    uri: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        check_asset_name(self.name)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Asset) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("nbflow.Asset", self.name))

    def as_dict(self) -> dict[str, str]:
        """Plain data (a pipeline's stored definition)."""
        return {"name": self.name, "uri": self.uri, "description": self.description}


def check_asset_name(name: Any, where: str | None = None) -> str:
    """An asset's name: letters, digits and ``_ . - : /`` (a URI such as ``s3://bucket/key.csv``
    is a name too, as in Airflow), at most :data:`NAME_LIMIT` characters."""
    if not isinstance(name, str) or not _NAME.match(name) or len(name) > NAME_LIMIT:
        raise DefinitionError(
            f"invalid asset name {name!r}",
            where=where,
            hint=f"use letters, digits, '_', '.', '-', ':' or '/' (at most {NAME_LIMIT} characters), e.g. Asset('model')",
        )
    return name


def check_assets(value: Any, owner: str, where: str | None = None) -> tuple[Asset, ...]:
    """``produces=`` of a task (``owner``): a list of :class:`Asset` (or names), no duplicates."""
    if value is None:
        return ()
    if isinstance(value, (Asset, str)):
        value = [value]
    if not isinstance(value, Iterable):
        raise DefinitionError(
            f"produces of {owner} must be a list of nbflow.Asset, got {value!r}",
            where=where,
            hint='e.g. produces=[nbflow.Asset("model")]',
        )
    out: list[Asset] = []
    for item in value:
        if isinstance(item, str):
            item = Asset(check_asset_name(item, where))
        if not isinstance(item, Asset):
            raise DefinitionError(
                f"produces of {owner} holds {item!r}, which is not an nbflow.Asset",
                where=where,
                hint='e.g. produces=[nbflow.Asset("model")]',
            )
        if item not in out:
            out.append(item)
    return tuple(out)


def split_schedule(schedule: Any, pipeline: str, where: str | None = None) -> tuple[str | None, tuple[Asset, ...]]:
    """A pipeline's ``schedule=``: ``(cron text, ())`` for a cron or preset string (checked by
    :mod:`nbflow.schedule`), ``(None, assets)`` for a list of :class:`Asset` (or one)."""
    if schedule is None or isinstance(schedule, str):
        return schedule, ()
    items = [schedule] if isinstance(schedule, Asset) else schedule
    fix = 'schedule="0 3 * * *" (cron), or schedule=[nbflow.Asset("model"), ...] (runs when all were updated)'
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        raise DefinitionError(
            f"schedule of pipeline '{pipeline}' must be a cron string or a non-empty list of nbflow.Asset, "
            f"got {schedule!r}",
            where=where,
            hint=fix,
        )
    assets: list[Asset] = []
    for item in items:
        if not isinstance(item, Asset):
            raise DefinitionError(
                f"schedule of pipeline '{pipeline}' holds {item!r}, which is not an nbflow.Asset",
                where=where,
                hint=fix,
            )
        if item not in assets:
            assets.append(item)
    return None, tuple(sorted(assets, key=lambda a: a.name))
