"""What ``lianfang status`` and ``lianfang events`` show an installer."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway.config.model import GatewayConfig
from gateway.journal_reader import JournalReader


def read_status(config: GatewayConfig) -> dict[str, Any] | None:
    """The running gateway's last ``status.json``, or None if it never ran here."""
    path = config.state_dir / "status.json"
    if not path.exists():
        return None
    status: dict[str, Any] = json.loads(path.read_text())
    status["written_s_ago"] = round(time.time() - path.stat().st_mtime, 1)
    return status


def journal_view(config: GatewayConfig) -> dict[str, Any]:
    """What the journal file says: backlog and refusals per forwarder, field devices."""
    if not config.journal_path.exists():
        return {"pending": {}, "refused": {}, "devices": []}
    reader = JournalReader(config.journal_path)
    try:
        return {
            "pending": reader.pending_counts(),
            "refused": reader.given_up_counts(),
            "devices": reader.device_states(),
        }
    finally:
        reader.close()


def show_status(config: GatewayConfig, console: Console, *, as_json: bool) -> int:
    """Print the gateway's counters and each forwarder's backlog; 1 if it never ran."""
    status = read_status(config)
    view = journal_view(config)
    if as_json:
        console.print_json(json.dumps({"status": status, **view}))
        return 0 if status else 1
    if status is None:
        console.print(f"[yellow]No status in {config.state_dir}: has the gateway run here?[/]")
        return 1
    table = Table(title=f"Gateway {config.gateway.id}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    stale = status["written_s_ago"] > 3 * config.status_interval_s
    age = f"{status['written_s_ago']} s ago" + (" (stale: is it running?)" if stale else "")
    table.add_row("status written", age)
    table.add_row("uptime", f"{status['uptime_s']} s")
    table.add_row("alert level", str(status.get("level", "everyday")))
    _add_walk_test_row(table, status.get("walk_test"))
    table.add_row("events journalled", str(status["events"]))
    table.add_row("repeats dropped", str(status["duplicates"]))
    table.add_row("neighbour notices", str(status["neighbour_notices"]))
    table.add_row("alerts suppressed (cool-down)", str(status["alerts_suppressed"]))
    for reason, n in sorted(status["rejected"].items()):
        table.add_row(f"rejected {reason}", str(n))
    for code, heard in sorted(status.get("unknown_codes", {}).items()):
        table.add_row(f"unknown 433 MHz code {code}", f"heard {time.time() - heard:.0f} s ago")
    errors = status.get("link_errors", {})
    for name, up in sorted(status["links"].items()):
        why = f": {errors[name]}" if not up and name in errors else ""
        table.add_row(f"link {name}", "[green]up[/]" if up else f"[red]down[/]{why}")
    _add_sms_rows(table, status.get("sms"))
    for name in (f.name for f in config.forwarders):
        table.add_row(f"waiting for {name}", str(view["pending"].get(name, 0)))
        if view["refused"].get(name):
            table.add_row(f"refused by {name} (given up)", f"[red]{view['refused'][name]}[/]")
    table.add_row("journal", f"{status['journal_mb']} MB, {status['evicted']} evicted")
    console.print(table)
    if view["devices"]:
        console.print(device_table(view["devices"]))
    for warning in status["warnings"]:
        console.print(f"[bold yellow]warning:[/] {warning}")
    return 0


def _add_walk_test_row(table: Table, walk: dict[str, Any] | None) -> None:
    """The shops under walk test and the minutes left: no test can be forgotten."""
    if walk:
        shops = ", ".join(walk["shops"])
        table.add_row("walk test", f"{shops}: {walk['remaining_min']} min left")


def _add_sms_rows(table: Table, sms: dict[str, Any] | None) -> None:
    """The modem's SIM, network and signal, and what it sent and received (if there is one)."""
    if sms is None:
        return
    signal = "unknown" if sms["signal_dbm"] is None else f"{sms['signal_dbm']} dBm"
    table.add_row("sms modem", f"SIM {sms['sim']}, network {sms['registration']}, signal {signal}")
    table.add_row(
        "sms",
        f"{sms['sent']} sent, {sms['queued']} queued, {sms['failed']} failed, "
        f"{sms['received']} received ({sms['unknown_senders']} from unknown numbers)",
    )


def device_table(devices: list[dict[str, Any]]) -> Table:
    """Field devices: last seen, battery and fault, as kept in the journal database."""
    table = Table(title="Field devices")
    for column in ("shop", "device", "driver", "last seen", "battery", "fault"):
        table.add_column(column)
    now = time.time()
    for d in devices:
        seen = "never" if d["last_seen"] is None else f"{now - d['last_seen']:.0f} s ago"
        battery = "" if d["battery_v"] is None else f"{d['battery_v']:.2f} V"
        fault = f"[red]{d['fault']}[/]" if d["fault"] else "[green]ok[/]"
        table.add_row(d["shop_id"], d["device_id"], d["driver"], seen, battery, fault)
    return table


def show_events(config: GatewayConfig, console: Console, *, limit: int, as_json: bool) -> int:
    """Print the newest ``limit`` events: who each alert told, when each forwarder delivered it."""
    if not config.journal_path.exists():
        console.print(f"[yellow]No journal at {config.journal_path}[/]")
        return 1
    reader = JournalReader(config.journal_path)
    try:
        rows = reader.recent(limit)
        deliveries = reader.deliveries([seq for seq, _ in rows])
    finally:
        reader.close()
    if as_json:
        found = [{**e.model_dump(mode="json"), "deliveries": deliveries[seq]} for seq, e in rows]
        console.print_json(json.dumps(found))
        return 0
    table = Table(title=f"Last {len(rows)} events")
    for column in ("seq", "received", "shop", "device", "kind", "alerted", "delivered", "id"):
        table.add_column(column)
    for seq, event in rows:
        alerted = event.attrs.get("alerted")
        table.add_row(
            str(seq),
            event.received_at.strftime("%Y-%m-%d %H:%M:%S"),
            event.shop_id or "(gateway)",
            event.device_id,
            event.kind.value,
            " ".join(alerted) if isinstance(alerted, list) else "",
            "\n".join(_delivery(d) for d in deliveries[seq]),
            event.id,
        )
    console.print(table)
    return 0


def _delivery(delivery: dict[str, Any]) -> str:
    """One forwarder's delivery of an event, as the events table shows it."""
    name, acked_at, error = delivery["forwarder"], delivery["acked_at"], delivery["last_error"]
    if acked_at is None:
        tried = f", {delivery['attempts']} tries: {error}" if error else ""
        return f"{name} waiting{tried}"
    at = datetime.fromisoformat(acked_at).strftime("%H:%M:%S.%f")[:-3]
    if error and error.startswith("given up:"):
        return f"{name} refused {at}"
    return f"{name} {at}"
