"""``lianfang walktest`` and ``lianfang reload``: the running gateway, through its socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from gateway.cli.options import ConfigOption, config_path, load_or_exit
from gateway.control import CommandError, ControlUnavailableError, ask

if TYPE_CHECKING:
    from rich.console import Console, Group

    from gateway.config.model import GatewayConfig

app = typer.Typer()

POLL_S = 0.5
"""How often the live table asks the gateway for the test's state."""
END_GRACE_S = 30.0
"""How long past the test's end the command waits for the gateway to say it ended."""
UNREACHABLE_S = 30.0
"""How long the command waits for a gateway that went away (a restart) before giving up."""


@app.command()
def walktest(
    *,
    shops: Annotated[
        str | None,
        typer.Option("--shops", help="Shops to test, comma-separated (e.g. S00011,S00012)."),
    ] = None,
    all_shops: Annotated[bool, typer.Option("--all", help="Test every shop.")] = False,
    minutes: Annotated[
        float, typer.Option("--minutes", min=0.01, max=1440, help="Test mode ends after this.")
    ] = 30,
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the result (JSON) to this file.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    config: ConfigOption = None,
) -> None:
    """Walk test: shops' events reach the police as tests and alert nobody until all are heard.

    Press every device of the shops under test; the table shows each one heard.
    Ctrl-C ends the test early. Exit 0 only when every shop under test passed.
    """
    from rich.console import Console  # noqa: PLC0415 - keep `lianfang --help` fast

    if all_shops == (shops is not None):
        typer.echo("choose the shops: --shops S1,S2 or --all", err=True)
        raise typer.Exit(2)
    chosen = None if shops is None else [s.strip() for s in shops.split(",") if s.strip()]
    cfg = load_or_exit(config_path(config))
    # With --json the live table goes to stderr, so that stdout is the result alone.
    console = Console(stderr=as_json)
    try:
        result = asyncio.run(_walk(cfg, chosen, minutes, console))
    except (ControlUnavailableError, CommandError) as exc:
        typer.echo(f"walktest: {exc}", err=True)
        raise typer.Exit(2) from None
    text = json.dumps(result, indent=2)
    if report is not None:
        report.write_text(text + "\n")
    if as_json:
        typer.echo(text)
    passed = bool(result["shops"]) and all(s["passed"] for s in result["shops"])
    raise typer.Exit(0 if passed else 1)


@app.command()
def reload(config: ConfigOption = None) -> None:
    """Make the running gateway read its config again (as SIGHUP does); links stay up."""
    cfg = load_or_exit(config_path(config))
    try:
        typer.echo(asyncio.run(reload_running(cfg)))
    except (ControlUnavailableError, CommandError) as exc:
        typer.echo(f"reload: {exc}", err=True)
        raise typer.Exit(1) from None


async def reload_running(config: GatewayConfig) -> str:
    """Ask the gateway running on ``config``'s state dir to reload; what it said, in words."""
    answer = await ask(config.state_dir, "reload", timeout_s=30)
    pending = answer.get("restart_needed") or []
    if pending:
        return f"reloaded; {', '.join(pending)} changed and apply at the next restart"
    return "reloaded"


async def _walk(
    config: GatewayConfig, shops: list[str] | None, minutes: float, console: Console
) -> dict[str, Any]:
    """Start the test, show it live until it ends (or Ctrl-C stops it); the final result."""
    from rich.live import Live  # noqa: PLC0415

    state_dir = config.state_dir
    status = await ask(state_dir, "walktest.start", {"shops": shops, "minutes": minutes})
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    deadline = time.monotonic() + minutes * 60 + END_GRACE_S
    answered = time.monotonic()
    try:
        with Live(_view(status), console=console, refresh_per_second=4) as live:
            while status.get("running"):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await interrupted.wait()
                if interrupted.is_set():
                    status = await ask(state_dir, "walktest.stop")
                    break
                if time.monotonic() > deadline:
                    raise CommandError("the gateway did not end the walk test in time")
                try:
                    status = await ask(state_dir, "walktest.status")
                except ControlUnavailableError:
                    # A gateway restarting keeps the test: wait for it a while.
                    if time.monotonic() - answered > UNREACHABLE_S:
                        raise
                    continue
                answered = time.monotonic()
                live.update(_view(status))
            live.update(_view(status))
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return status


def _view(status: dict[str, Any]) -> Group:
    """The progress bar of shops done, the table of devices and any alarm taken as a test."""
    from rich.console import Group  # noqa: PLC0415
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    shops = status.get("shops", [])
    progress = Progress(TextColumn("shops passed"), BarColumn(), MofNCompleteColumn())
    progress.add_task("shops", total=len(shops) or 1, completed=sum(s["passed"] for s in shops))
    table = Table(title=_title(status))
    for column in ("shop", "name", "device", "kind", "heard at", "battery / supervision", "result"):
        table.add_column(column)
    waiting = "waiting" if status.get("running") else "[red]FAIL[/]"
    for shop in shops:
        for device in shop["devices"]:
            battery = device["battery_v"]
            condition = ", ".join(
                x for x in (f"{battery:.2f} V" if battery else "", device["fault"] or "ok") if x
            )
            table.add_row(
                shop["shop_id"],
                shop["name"],
                device["device_id"],
                device["kind"] or "-",
                _local_time(device["heard_at"]),
                condition,
                "[green]PASS[/]" if device["passed"] else waiting,
            )
    alarms = [
        f"[bold red]{a['kind']} from {a['shop_id']} was taken as a test (the shop is under test): "
        "if it was real, call the police[/]"
        for a in status.get("real_alarms", [])
    ]
    return Group(progress, table, *alarms)


def _local_time(at: str | None) -> str:
    """An ISO time as the installer's clock reads it (HH:MM:SS), or ``-``."""
    return datetime.fromisoformat(at).astimezone().strftime("%H:%M:%S") if at else "-"


def _title(status: dict[str, Any]) -> str:
    if status.get("running"):
        return f"Walk test: {status['remaining_s'] / 60:.1f} min left"
    return f"Walk test ended: {status.get('ended_because', 'ended')}"
