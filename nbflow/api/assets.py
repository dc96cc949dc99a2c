"""Assets and their lineage (:mod:`nbflow.assets`): ``nbflow assets``, ``GET /nbflow/api/assets``
and the JupyterLab panel's Assets view read them here.

An asset is known once a pipeline declares it (``produces=``, ``schedule=[Asset(...)]``; the
scheduler records declarations when it syncs the DAG folder) or a task updated it (an event).
"""

from __future__ import annotations

import re
from typing import Any

from nbflow.api.runs import open_store
from nbflow.exceptions import AssetNotFoundError
from nbflow.store import Store

_INSTANCE = re.compile(r"\[\d+\]$")  # a mapped task's instance: task[3] produces for task


def list_assets(*, store: Store | None = None) -> list[dict[str, Any]]:
    """Every asset: ``name``, ``uri``, ``description``, ``producers`` (``pipeline.task``),
    ``consumers`` (pipelines scheduled on it), ``last_update`` (``time``, ``run_id``,
    ``pipeline``, ``task_id``; None before the first) and ``pending`` (consumers with an update of
    it they have not run for yet: they wait for their other assets, or for the scheduler)."""
    store = store or open_store()
    declared = {r["name"]: r for r in store.asset_rows()}
    refs = store.asset_refs()
    last = store.last_asset_events()
    producers: dict[str, set[str]] = {}
    for r in refs:
        if r["role"] == "producer":
            producers.setdefault(r["asset"], set()).add(f"{r['pipeline']}.{r['task_id']}")
    for r in store.event_producers():
        producers.setdefault(r["asset"], set()).add(f"{r['pipeline']}.{_INSTANCE.sub('', r['task_id'])}")
    consumers: dict[str, list[str]] = {}
    for r in refs:
        if r["role"] == "consumer":
            consumers.setdefault(r["asset"], []).append(r["pipeline"])
    pending: dict[str, list[str]] = {}
    for pipeline in sorted({p for ps in consumers.values() for p in ps}):
        for asset in store.pending_assets(pipeline):
            pending.setdefault(asset, []).append(pipeline)
    names = sorted({*declared, *producers, *consumers, *last})
    return [
        {
            "name": name,
            "uri": declared[name]["uri"] if name in declared else "",
            "description": declared[name]["description"] if name in declared else "",
            "producers": sorted(producers.get(name, ())),
            "consumers": sorted(consumers.get(name, ())),
            "last_update": _update(last.get(name)),
            "pending": pending.get(name, []),
        }
        for name in names
    ]


def asset_details(name: str, *, limit: int = 50, store: Store | None = None) -> dict[str, Any]:
    """One asset as in :func:`list_assets`, with its newest ``events`` (each with its producing
    run and ``triggered``: the runs that consumed it, ``{"pipeline", "run_id"}``)."""
    store = store or open_store()
    found = [a for a in list_assets(store=store) if a["name"] == name]
    if not found:
        known = ", ".join(a["name"] for a in list_assets(store=store)) or "(none yet)"
        raise AssetNotFoundError(
            f"no asset named {name!r}", hint=f"known assets: {known}; list them with `nbflow assets`"
        )
    events = store.asset_events(name, limit=limit)
    triggered: dict[int, list[dict[str, Any]]] = {}
    for c in store.consumed_by(e["id"] for e in events):
        triggered.setdefault(c["event_id"], []).append({"pipeline": c["pipeline"], "run_id": c["run_id"]})
    return {
        **found[0],
        "events": [
            {**_update(e), "id": e["id"], "try_number": e["try_number"], "triggered": triggered.get(e["id"], [])}
            for e in events
        ],
    }


def run_lineage(run_id: int, *, store: Store | None = None) -> list[dict[str, Any]]:
    """The asset events an asset-triggered run consumed (empty for other runs): ``asset``,
    ``time``, and the producing ``pipeline``, ``run_id``, ``task_id``."""
    store = store or open_store()
    return [{**_update(e), "asset": e["asset"]} for e in store.run_lineage(run_id)]


def _update(event: Any) -> dict[str, Any] | Any:
    if event is None:
        return None
    return {
        "time": event["created_at"],
        "run_id": event["run_id"],
        "pipeline": event["pipeline"],
        "task_id": event["task_id"],
    }
