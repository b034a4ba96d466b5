"""``lianfang demo``: a whole street block on this machine, one panic, what happened.

Starts two private Mosquitto brokers on free loopback ports (the block's and a
stand-in police platform's), writes a config from the Changping Road survey
shipped with the package, secures the block broker as ``lianfang broker-config``
does (no anonymous clients; a login per shop and one for the gateway; each may
use only its own topics) so that what users try is what they should deploy,
starts the real gateway daemon, a police receiver,
an alarm receiving centre (``lianfang receiver``, SIA DC-09) and a shop panel for
every shop, presses panic at one shop, and shows which shops were alerted and
when the police and the centre had it, and ends by writing the block's
commissioning report (``lianfang report``) where it is told. Leaves no process
behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from importlib.resources import as_file, files
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.police_platform import PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto, MosquittoMissing, free_port
from lab.process import GatewayProcess, ReceiverProcess

WAIT_S = 10.0


def run_demo(shop_id: str = "S00011", report: Path = Path("lianfang-demo-report.html")) -> int:
    """Run the demo and write its block's commissioning report to ``report``; the exit code."""
    console = Console()
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-demo-"))
    block_port = free_port()
    access = workdir / "block-broker-access"
    try:
        with Mosquitto(workdir=workdir / "police-broker") as police:
            centre = ReceiverProcess(workdir / "centre.sqlite3")
            centre.start()
            try:
                block_url = f"mqtt://127.0.0.1:{block_port}"
                config = _write_config(workdir, block_url, police.url, centre.url, console)
                logins = _secure_block_broker(config, access, block_port)
                console.print(
                    f"Block broker secured as `lianfang broker-config` does: {len(logins) - 1} "
                    "shop logins and the gateway's, each limited to its own topics"
                )
                with Mosquitto(
                    port=block_port, workdir=workdir / "block-broker", include_dir=access
                ) as block:
                    console.print(
                        f"[bold]Block broker[/] {block.url}  [bold]police broker[/] {police.url}"
                    )
                    console.print(f"[bold]Alarm receiving centre[/] (SIA DC-09) {centre.url}")
                    return _run_gateway(
                        console,
                        workdir,
                        config,
                        logins=logins,
                        police_url=police.url,
                        shop_id=shop_id,
                        centre=centre,
                        report=report,
                    )
            finally:
                centre.stop()
    except MosquittoMissing as exc:
        console.print(f"[red]{exc}[/]")
        return 1
    except (RuntimeError, subprocess.CalledProcessError, TimeoutError, ExceptionGroup) as exc:
        console.print(f"[red]demo failed: {exc!r}[/]")
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _run_gateway(
    console: Console,
    workdir: Path,
    config: Path,
    *,
    logins: dict[str, str],
    police_url: str,
    shop_id: str,
    centre: ReceiverProcess,
    report: Path,
) -> int:
    from gateway.cli.report import write_report  # noqa: PLC0415 - keep `lianfang --help` fast
    from gateway.config.file import load_config  # noqa: PLC0415

    gateway = GatewayProcess(config, log=workdir / "gateway.log")
    try:
        with console.status("Starting the gateway..."):
            ready_s = gateway.start()
        console.print(f"Gateway GW-001 ready in {ready_s:.2f} s (pid {gateway.pid})")
        code = asyncio.run(
            _press_panic(console, logins, police_url, config, shop_id, centre=centre)
        )
        if code == 0:
            written = write_report(load_config(config), config, report, links_of=shop_id)
            # soft_wrap: the path stays on one line, to copy whole.
            console.print(
                f"\nCommissioning report of the block: {written.resolve()}", soft_wrap=True
            )
        return code
    finally:
        gateway.stop()


def _secure_block_broker(config: Path, out: Path, port: int) -> dict[str, str]:
    """What `lianfang broker-config --out OUT --listen 127.0.0.1:PORT` does; user -> password."""
    from gateway.cli.broker_config import set_gateway_login  # noqa: PLC0415 - keep --help fast
    from gateway.config import broker_access as ba  # noqa: PLC0415
    from gateway.config.file import load_config  # noqa: PLC0415

    cfg = load_config(config)
    logins, _ = ba.generate(out, cfg, ba.Listener("127.0.0.1", port))
    set_gateway_login(config, ba.gateway_username(cfg), out / ba.GATEWAY_PASSWORD_FILE)
    return {login.username: login.password for login in logins}


def _write_config(
    workdir: Path, block_url: str, police_url: str, centre_url: str, console: Console
) -> Path:
    with as_file(files("gateway") / "data" / "changping-road.csv") as survey:
        subprocess.run(  # noqa: S603 - our own CLI
            [
                sys.executable,
                "-m",
                "gateway",
                "init",
                "--survey",
                str(survey),
                "--gateway",
                "GW-001",
                "--broker",
                block_url,
                "--police",
                police_url,
                "--dc09",
                centre_url,
                "--dc09-account",
                "9999",
                "--dir",
                str(workdir),
            ],
            check=True,
            capture_output=True,
        )
    console.print("Config written from the Changping Road survey (87 shops)")
    return workdir / "lianfang.yaml"


async def _press_panic(
    console: Console,
    logins: dict[str, str],
    police_url: str,
    config: Path,
    shop_id: str,
    *,
    centre: ReceiverProcess,
) -> int:
    from gateway.config.file import load_config  # noqa: PLC0415 - after the gateway is up

    cfg = load_config(config)
    names = {s.id: s.name for s in cfg.shops}
    if shop_id not in names:
        console.print(f"[red]no shop {shop_id} in the survey[/]")
        return 1
    seen = asyncio.Event()
    panels: dict[str, ShopPanel] = {}

    def check(_: object) -> None:
        alerted = sum(bool(p.notices) for p in panels.values())
        if platform.by_id and alerted >= cfg.neighbour_alert.count:
            seen.set()

    # Each shop's panel logs in as its shop, with the password from credentials.csv.
    panels.update(
        {
            s: ShopPanel(
                cfg.broker.model_copy(
                    update={"username": s, "password": SecretStr(logins[s]), "password_file": None}
                ),
                s,
                on_notice=check,
            )
            for s in names
            if s in logins
        }
    )
    platform = PolicePlatform(BrokerConfig(url=police_url), client_id="demo-police", on_event=check)
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        tasks.append(tg.create_task(platform.run(), name="police"))
        with console.status(f"Connecting {len(panels)} shop panels and the police receiver..."):
            async with asyncio.timeout(WAIT_S):
                await platform.ready.wait()
                for panel in panels.values():
                    await panel.ready.wait()
        console.print(f"\n[bold red]PANIC[/] pressed at {shop_id} {names[shop_id]}")
        pressed, pressed_wall = time.perf_counter(), time.time()
        await panels[shop_id].send("panic", zone="1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.wait(), WAIT_S)
        arc = await _centre_alarms(centre.db)
        await asyncio.sleep(0.2)  # any late or wrong extra notice still shows
        for task in tasks:
            task.cancel()
    _show(console, panels, names, platform, pressed)
    _show_centre(console, arc, pressed_wall)
    delivered = platform.by_id and arc and any(p.notices for p in panels.values())
    return 0 if delivered else 1


async def _centre_alarms(db: Path) -> list[tuple[str, str, int, int, str]]:
    """The alarm receiving centre's stored alarms, once there is one (or after ``WAIT_S``)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            rows: list[tuple[str, str, int, int, str]] = conn.execute(
                "SELECT account, code, qualifier, zone, received_at FROM alarms ORDER BY id"
            ).fetchall()
        if rows or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


def _show_centre(
    console: Console, rows: list[tuple[str, str, int, int, str]], pressed_wall: float
) -> None:
    table = Table(title="Alarm receiving centre (SIA DC-09, Contact ID)")
    for column in ("account", "event", "zone", "latency"):
        table.add_column(column)
    for account, code, qualifier, zone, received_at in rows:
        latency = datetime.fromisoformat(received_at).timestamp() - pressed_wall
        table.add_row(account, f"{qualifier}{code}", f"{zone:03d}", f"{latency * 1000:.0f} ms")
    console.print(table)
    if not rows:
        console.print("[red]The alarm receiving centre received nothing.[/]")


def _show(
    console: Console,
    panels: dict[str, ShopPanel],
    names: dict[str, str],
    platform: PolicePlatform,
    pressed: float,
) -> None:
    alerted = sorted(
        ((p.notices[0], s) for s, p in panels.items() if p.notices),
        key=lambda pair: pair[0].body["distance_m"],
    )
    table = Table(title=f"Neighbours alerted ({len(alerted)})")
    for column in ("#", "shop", "name", "distance", "way to go", "latency"):
        numeric = column in ("#", "distance", "latency")
        table.add_column(column, justify="right" if numeric else "left")
    for rank, (notice, shop) in enumerate(alerted, 1):
        table.add_row(
            str(rank),
            shop,
            names[shop],
            f"{notice.body['distance_m']:.1f} m",
            notice.body["bearing"],
            f"{(notice.at - pressed) * 1000:.1f} ms",
        )
    console.print(table)
    police = Table(title="Police platform")
    for column in ("event id", "kind", "shop", "grid cell", "latency"):
        police.add_column(column, no_wrap=column != "shop")
    for delivery in platform.unique:
        body = delivery.body
        shop = body.get("shop", {})
        police.add_row(
            body["id"],
            body["kind"],
            f"{body['shop_id']} {shop.get('name', '')}",
            shop.get("grid", {}).get("small", ""),
            f"{(delivery.at - pressed) * 1000:.1f} ms",
        )
    console.print(police)
    for delivery in platform.unique:
        console.print(f"[dim]received on {delivery.topic}[/]")
    if not platform.by_id:
        console.print("[red]The police platform received nothing.[/]")
    with contextlib.suppress(Exception):
        slowest = max(n.at for n, _ in alerted) - pressed
        console.print(
            f"All {len(alerted)} neighbours alerted within {slowest * 1000:.1f} ms; "
            "the police had it with the shop's name, position and grid cells."
        )
