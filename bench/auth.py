"""What logins and ACLs on the block broker cost a panic: on vs off, same run, same machine.

    .venv/bin/python -m bench.auth [--presses N] [--keep]

Two block brokers run the include that ``lianfang broker-config`` generates for
the Changping Road block: **secured** exactly as generated (no anonymous
clients, a PBKDF2 password per shop and for the gateway, the ACL checked on
every publish and delivery), and **open**, the same file with
``allow_anonymous true`` and no password or ACL file, so that the two differ in
authentication and ACLs alone. One stock police Mosquitto serves both.

On each block broker in turn (open first; ``--secured-first`` swaps them, to
tell the ACL's cost from drift on a shared machine): the bare relay (``bench/relay.py``,
the floor; on the secured broker it logs in as the gateway's user, whose ACL
lets it read events and send notices), then the real gateway (on the secured
broker with the login ``broker-config`` set in its config), each measured by
``bench.latency``'s latency phase: 87 shop panels (on the secured broker each
logged in as its shop), 50 background events/s, panic presses every 100 ms,
panic → 10th neighbour notice and panic → police receiver, p50/p99.

Results: ``bench/results/auth-<UTC stamp>.json`` with every figure and the
ratios secured/open (the ACL's cost) and gateway/floor on each broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from bench.latency import (
    QUICK,
    Bench,
    Block,
    Settings,
    Started,
    forget_session,
    latency_run,
    make_bench,
    stop,
    write_config,
)
from bench.procs import RelayProcess, machine_info
from bench.stats import RESULTS, finite
from firmware_stubs.mqtt_panel import ShopPanel
from gateway.cli.broker_config import set_gateway_login
from gateway.config import broker_access as ba
from gateway.config.file import load_config
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto, free_port
from lab.process import GatewayProcess

SIDES = ("open", "secured")
FIGURES = (
    ("notify_10th_ms", "p50"),
    ("notify_10th_ms", "p99"),
    ("police_ms", "p50"),
    ("police_ms", "p99"),
)
console = Console(width=None if sys.stdout.isatty() else 120)


class LoggedInBlock(Block):
    """The block's panels, each logged in as its shop when ``passwords`` are given."""

    def __init__(self, url: str, shops: list[str], passwords: dict[str, str] | None) -> None:
        """Panels for ``shops`` on ``url``; with ``passwords`` (shop -> password), logged in."""
        super().__init__(url, shops)
        if passwords is not None:
            self.panels = {
                s: ShopPanel(
                    BrokerConfig(url=url, username=s, password=SecretStr(passwords[s])),
                    s,
                    device_id="panel-1",
                    on_notice=self._notice,
                )
                for s in shops
            }


def open_conf(secured: str) -> str:
    """The generated ``lianfang.conf`` with anonymous clients allowed and no logins or ACL."""
    kept = [
        line
        for line in secured.splitlines()
        if not line.startswith(("password_file ", "acl_file ", "allow_anonymous "))
    ]
    return "\n".join([*kept, "allow_anonymous true"]) + "\n"


def secure(side: str, config: Path, access: Path, port: int) -> dict[str, str]:
    """``broker-config``'s files in ``access``; secured: the gateway's login set in ``config``.

    Returns user name -> password.
    """
    cfg = load_config(config)
    logins, _ = ba.generate(access, cfg, ba.Listener("127.0.0.1", port))
    conf = access / ba.CONF_FILE
    if side == "open":
        conf.write_text(open_conf(conf.read_text()))
    else:
        set_gateway_login(config, ba.gateway_username(cfg), access / ba.GATEWAY_PASSWORD_FILE)
    return {login.username: login.password for login in logins}


async def measure_side(
    side: str, s: Settings, workdir: Path, started: Started, police_url: str
) -> dict[str, Any]:
    """The floor's and the gateway's latency on one block broker (``open`` or ``secured``)."""
    port = free_port()
    block_url = f"mqtt://127.0.0.1:{port}"
    config, source = write_config(workdir / "gateway", block_url, police_url)
    access = workdir / "access"
    passwords = secure(side, config, access, port)
    out: dict[str, Any] = {
        "config_source": source,
        "block_conf": (access / ba.CONF_FILE).read_text(),
    }
    with Mosquitto(port=port, workdir=workdir / "block-broker", include_dir=access) as broker:
        b = make_bench(
            s, workdir, started, broker=side, block_url=block_url, police_url=police_url,
            config=config,
        )  # fmt: skip
        if broker.process is not None:
            b.broker_pids["block_broker"] = broker.process.pid
        b.block = LoggedInBlock(block_url, b.shop_ids, passwords if side == "secured" else None)
        await b.block.connect()
        b.say(f"{len(b.shop_ids)} shop panels connected")
        try:
            out["floor"] = await _floor(b, side, access)
            out["gateway"] = await _gateway(b)
        finally:
            await b.block.close()
    return out


async def _floor(b: Bench, side: str, access: Path) -> dict[str, Any]:
    client_id = f"bench-relay-{side}"
    cfg = load_config(b.config)
    login = (
        (ba.gateway_username(cfg), access / ba.GATEWAY_PASSWORD_FILE) if side == "secured" else None
    )
    relay = b.started.add(
        RelayProcess(
            block_url=b.block_url,
            police_url=b.police_url,
            neighbours=b.table_file,
            log=b.workdir / "relay.log",
            client_id=client_id,
            login=login,
        )
    )
    await asyncio.to_thread(relay.start)
    latency = await latency_run(b, f"floor-{side}", relay)
    b.say(f"relay: notify p99 {latency['notify_10th_ms']['p99']} ms")
    stop(relay)
    await asyncio.to_thread(forget_session, b.police_url, f"{client_id}-police")
    return latency


async def _gateway(b: Bench) -> dict[str, Any]:
    gateway = b.started.add(GatewayProcess(b.config, log=b.workdir / "gateway.log"))
    await asyncio.to_thread(gateway.start)
    latency = await latency_run(b, f"gateway-{b.broker}", gateway)
    b.say(f"gateway: notify p99 {latency['notify_10th_ms']['p99']} ms")
    stop(gateway)
    return latency


def ratios(sides: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """secured/open for the gateway and the floor, and gateway/floor on each broker."""

    def at(side: str, who: str, figure: tuple[str, str]) -> float | None:
        value = sides[side][who][figure[0]].get(figure[1])
        return float(value) if value else None

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a is not None and b else None

    out: dict[str, float | None] = {}
    for figure in FIGURES:
        name = f"{figure[0].removesuffix('_ms')}_{figure[1]}"
        for who in ("gateway", "floor"):
            out[f"{who}_secured_over_open.{name}"] = ratio(
                at("secured", who, figure), at("open", who, figure)
            )
        for side in SIDES:
            out[f"gateway_over_floor_{side}.{name}"] = ratio(
                at(side, "gateway", figure), at(side, "floor", figure)
            )
    return out


def show(sides: dict[str, dict[str, Any]], found: dict[str, float | None]) -> None:
    """One table: each figure, open and secured, for the floor and the gateway."""
    table = Table(title="Panic latency, block broker open vs secured (logins + ACL), ms")
    for column in ("figure", "floor open", "floor secured", "gateway open", "gateway secured",
                   "gateway secured/open"):  # fmt: skip
        table.add_column(column, justify="left" if column == "figure" else "right")
    for figure in FIGURES:
        name = f"{figure[0].removesuffix('_ms')}_{figure[1]}"
        cells = [
            str(sides[side][who][figure[0]].get(figure[1]))
            for who in ("floor", "gateway")
            for side in SIDES
        ]
        table.add_row(name, *cells, str(found[f"gateway_secured_over_open.{name}"]))
    console.print(table)


def run(s: Settings, *, keep: bool, order: tuple[str, ...] = SIDES) -> dict[str, Any]:
    """One run: both block brokers in turn (``order``) against one police broker; written."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-bench-auth-"))
    began = time.monotonic()
    started = Started()
    result: dict[str, Any] = {
        "started_utc": stamp,
        "machine": machine_info(),
        "settings": asdict(s),
        "police_broker": "stock Mosquitto",
        "order": list(order),
    }

    async def measure() -> dict[str, dict[str, Any]]:
        with Mosquitto(workdir=workdir / "police-broker") as police:
            return {
                side: await measure_side(side, s, workdir / side, started, police.url)
                for side in order
            }

    ok = False
    try:
        sides = asyncio.run(measure())
        ok = True
    finally:
        started.stop_all()
        if keep or not ok:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    found = ratios(sides)
    result |= {"sides": sides, "ratios": found, "duration_s": round(time.monotonic() - began, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"auth-{stamp}.json"
    path.write_text(json.dumps(finite(result), indent=2, allow_nan=False, default=str) + "\n")
    show(sides, found)
    console.print(f"written: {path}")
    return result


def main() -> None:
    """Command line: ``python -m bench.auth [--presses N] [--full] [--keep]``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--presses", type=int, help="panic presses measured per consumer")
    ap.add_argument("--full", action="store_true", help="bench.latency's full counts (400 presses)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, configs)")
    ap.add_argument("--secured-first", action="store_true", help="measure the secured broker first")
    args = ap.parse_args()
    s = Settings() if args.full else QUICK
    if args.presses:
        s = replace(s, presses=args.presses)
    run(s, keep=args.keep, order=SIDES[::-1] if args.secured_first else SIDES)


if __name__ == "__main__":
    main()
