"""``nbflow assets``: assets with their producers, consumers and last update; ``nbflow assets
show NAME``: its updates with their producing runs and the runs they triggered."""

from __future__ import annotations

import argparse
from typing import Any, TextIO


def cmd_assets(args: argparse.Namespace, out: TextIO) -> int:
    from nbflow import api
    from nbflow.cli.commands import _fmt_time, _table

    if args.assets_command == "show":
        return _show(api.asset_details(args.name, limit=args.limit), out)
    rows = []
    for a in api.list_assets():
        last = a["last_update"]
        rows.append(
            (
                a["name"],
                ", ".join(a["producers"]) or "-",
                ", ".join(a["consumers"]) or "-",
                f"{_fmt_time(last['time'])} (run {last['run_id']})" if last else "-",
                ", ".join(a["pending"]) or "-",
            )
        )
    if not rows:
        out.write("no assets yet: declare them with produces=[nbflow.Asset(...)] or schedule=[nbflow.Asset(...)]\n")
        return 0
    _table(rows, ("asset", "producers", "consumers", "last update", "pending consumers"), out)
    return 0


def _show(asset: dict[str, Any], out: TextIO) -> int:
    from nbflow.cli.commands import _fmt_time, _table

    out.write(f"asset {asset['name']}")
    out.write(f" ({asset['uri']})\n" if asset["uri"] else "\n")
    if asset["description"]:
        out.write(f"  {asset['description']}\n")
    out.write(f"producers: {', '.join(asset['producers']) or '-'}\n")
    out.write(f"consumers: {', '.join(asset['consumers']) or '-'}\n")
    out.write(f"pending consumers: {', '.join(asset['pending']) or '-'}\n\n")
    if not asset["events"]:
        out.write("no updates yet\n")
        return 0
    rows = [
        (
            _fmt_time(e["time"]),
            f"{e['pipeline']} run {e['run_id']}",
            f"{e['task_id']} try {e['try_number']}",
            ", ".join(f"{t['pipeline']} run {t['run_id']}" for t in e["triggered"]) or "-",
        )
        for e in asset["events"]
    ]
    _table(rows, ("updated", "by", "task", "triggered"), out)
    return 0


def register(sub: Any) -> None:
    """Add ``nbflow assets [list|show NAME]``."""
    p = sub.add_parser(
        "assets",
        help="assets (runs triggered by data): producers, consumers, last update, lineage",
        description="List assets with the tasks that produce them, the pipelines scheduled on them, their last "
        "update and the consumers with an update they have not run for yet; `show NAME`: its updates, the runs "
        "that made them and the runs they triggered.",
    )
    p.set_defaults(func=cmd_assets, assets_command="list")
    verbs = p.add_subparsers(dest="assets_command", metavar="SUBCOMMAND")
    verbs.add_parser("list", help="every asset (the default)").set_defaults(func=cmd_assets)
    s = verbs.add_parser("show", help="one asset's updates and the runs they triggered")
    s.add_argument("name", help="asset name")
    s.add_argument("--limit", type=int, default=50, help="newest updates shown (default 50)")
    s.set_defaults(func=cmd_assets)
