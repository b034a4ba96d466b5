"""What the local status page costs the gateway: RSS and CPU with pages open, against the page off.

``python -m bench.status_page [--seconds 30] [--pages 5] [--rate 20]``

Runs the 87-shop Changping Road gateway twice on a private Mosquitto, each time
with a shop panel sending ``rate`` events/s: once without ``status_page``, once
with it and ``pages`` clients polling ``/api/view?limit=30`` every 0.5 s, as
the page in a browser does. Samples the gateway's VmRSS and reads its CPU
seconds over ``seconds``. With the page on, then presses panic at ``presses``
shops one after the other and times panic -> ``/api/shops`` showing the shop in
alarm (polled every 20 ms; a page in a browser adds up to its own 0.5 s poll).
Writes ``bench/results/status-page-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.procs import RssSampler, cpu_seconds, machine_info
from firmware_stubs.mqtt_panel import ShopPanel
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto, free_port
from lab.process import GatewayProcess

REPO = Path(__file__).resolve().parent.parent
SURVEY = REPO / "gateway" / "data" / "changping-road.csv"
RESULTS = REPO / "bench" / "results"
POLL_S = 0.5
"""The page's own polling period (gateway/data/status-page.html)."""
WATCH_S = 0.02
"""How often the bench asks whether a pressed shop shows red."""


def write_config(work: Path, block_url: str, page_port: int | None) -> Path:
    """The Changping Road config from ``lianfang init``, with the page on ``page_port`` if given."""
    cmd = [sys.executable, "-m", "gateway", "init", "--survey", str(SURVEY), "--gateway"]
    cmd += ["GW-001", "--broker", block_url, "--dir", str(work), "--force"]
    subprocess.run(cmd, check=True, capture_output=True)
    path = work / "lianfang.yaml"
    data = yaml.safe_load(path.read_text())
    if page_port is not None:
        data["status_page"] = {"listen": f"127.0.0.1:{page_port}"}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def poll_page(url: str, stop_at: float) -> int:
    """GET ``url`` every ``POLL_S`` until ``stop_at``; the answers received."""
    answers = 0
    while time.monotonic() < stop_at:
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
        answers += 1
        time.sleep(POLL_S)
    return answers


async def measure(
    gateway: GatewayProcess, block_url: str, page_url: str | None, args: argparse.Namespace
) -> dict[str, Any]:
    """Load the gateway for ``args.seconds``; its CPU and RSS meanwhile."""
    panel = ShopPanel(BrokerConfig(url=block_url), "S00011")
    async with asyncio.TaskGroup() as tg:
        panel_task = tg.create_task(panel.run(), name="panel")
        await asyncio.wait_for(panel.ready.wait(), 10)
        pid = gateway.pid
        assert pid is not None
        sampler = RssSampler(lambda: pid, interval_s=0.2).start()
        cpu_before, started = cpu_seconds(pid), time.monotonic()
        stop_at = started + args.seconds
        pollers = [
            tg.create_task(asyncio.to_thread(poll_page, page_url, stop_at), name=f"page[{i}]")
            for i in range(args.pages if page_url else 0)
        ]
        sent = 0
        while time.monotonic() < stop_at:
            await panel.send("door_close", zone="1")
            sent += 1
            await asyncio.sleep(1 / args.rate)
        answers = [await p for p in pollers]
        cpu = cpu_seconds(pid) - cpu_before
        elapsed = time.monotonic() - started
        sampler.stop()
        panel_task.cancel()
    rss = sampler.kb()
    return {
        "events_sent": sent,
        "page_answers": sum(answers),
        "seconds": round(elapsed, 1),
        "cpu_percent": round(100 * cpu / elapsed, 2),
        "rss_mean_mb": round(statistics.mean(rss) / 1024, 1),
        "rss_max_mb": round(max(rss) / 1024, 1),
    }


async def panic_to_page(block_url: str, shops_url: str, presses: int) -> list[float]:
    """Seconds from each panic to ``/api/shops`` showing its shop in alarm, one shop per press."""
    shop_ids = [s["id"] for s in await asyncio.to_thread(_shops_at, shops_url)]
    took = []
    for shop_id in shop_ids[:presses]:
        panel = ShopPanel(BrokerConfig(url=block_url), shop_id)
        async with asyncio.TaskGroup() as tg:
            panel_task = tg.create_task(panel.run(), name=f"panel[{shop_id}]")
            await asyncio.wait_for(panel.ready.wait(), 10)
            started = time.monotonic()
            await panel.send("panic", zone="1")
            took.append(await asyncio.to_thread(_wait_red, shops_url, shop_id, started))
            panel_task.cancel()
    return took


def _wait_red(shops_url: str, shop_id: str, started: float, timeout_s: float = 10.0) -> float:
    while time.monotonic() - started < timeout_s:
        if any(s["id"] == shop_id and s["state"] == "alarm" for s in _shops_at(shops_url)):
            return time.monotonic() - started
        time.sleep(WATCH_S)
    raise TimeoutError(f"{shop_id} not shown in alarm {timeout_s} s after its panic")


def _shops_at(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(url, timeout=10) as answer:
        shops: list[dict[str, Any]] = json.loads(answer.read())
        return shops


def one_run(work: Path, *, page: bool, args: argparse.Namespace) -> dict[str, Any]:
    """The gateway with the page on or off, on a broker of its own."""
    with Mosquitto(workdir=work / "broker") as broker:
        port = free_port() if page else None
        config = write_config(work, broker.url, port)
        gateway = GatewayProcess(config, log=work / f"gateway-{'on' if page else 'off'}.log")
        gateway.start()
        try:
            url = f"http://127.0.0.1:{port}/api/view?limit=30" if port else None
            figures = asyncio.run(measure(gateway, broker.url, url, args))
            if port:
                shops_url = f"http://127.0.0.1:{port}/api/shops"
                took = asyncio.run(panic_to_page(broker.url, shops_url, args.presses))
                figures["panic_to_api_ms"] = {
                    "p50": round(1000 * statistics.median(took), 1),
                    "max": round(1000 * max(took), 1),
                    "presses": len(took),
                }
            return figures
        finally:
            gateway.stop()


def main() -> None:
    """Measure the page off, then on; print and save the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--pages", type=int, default=5, help="Open pages polling the gateway.")
    parser.add_argument("--rate", type=float, default=20.0, help="Events/s from a shop panel.")
    parser.add_argument("--presses", type=int, default=10, help="Panics timed to the page.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-status-page-") as tmp:
        off = one_run(Path(tmp) / "off", page=False, args=args)
        on = one_run(Path(tmp) / "on", page=True, args=args)
    result = {
        "bench": "status_page",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "args": vars(args),
        "page_off": off,
        "page_on": on,
        "cpu_percent_added": round(on["cpu_percent"] - off["cpu_percent"], 2),
        "rss_mean_mb_added": round(on["rss_mean_mb"] - off["rss_mean_mb"], 1),
        "machine": machine_info(),
    }
    for name, run in (("page off", off), ("page on", on)):
        print(
            f"{name:9} CPU {run['cpu_percent']:5.2f} %  RSS mean {run['rss_mean_mb']:5.1f} MB"
            f" max {run['rss_max_mb']:5.1f} MB  ({run['events_sent']} events,"
            f" {run['page_answers']} page answers in {run['seconds']} s)"
        )
    shown = on["panic_to_api_ms"]
    print(
        f"panic -> shop in alarm at /api/shops: p50 {shown['p50']} ms, max {shown['max']} ms"
        f" over {shown['presses']} presses (a page adds up to {POLL_S * 1000:.0f} ms, its poll)"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"status-page-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {out}")


if __name__ == "__main__":
    main()
