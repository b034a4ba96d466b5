"""SMS to the nearest shops: how long the 10th SMS takes, and that MQTT notices do not wait for it.

    python -m bench.sms                  # 40 presses a run, 1 alert timed to its 10th SMS
    python -m bench.sms --presses 100 --sms-alerts 3

Two runs of the real daemon (``lianfang run``) on private Mosquitto brokers and
the 87-shop Changping Road config from ``lianfang init``, with a panel for every
shop and the GSM modem emulator on a pty answering each ``AT+CMGS`` in 1-3 s
(``--send-s``, a real network):

- **SMS off** (``neighbour_alert.channels: [mqtt]``, no modem) and **SMS on**
  (``[mqtt, sms]``): panics at successive shops every ``--gap-s`` (cool-down
  0), each timed from its publish to the 10th neighbour notice received. The
  figures are compared as ratios on/off (p50, p95), measured in the same run.
- In the SMS-on run, first (the modem's queue empty), each of
  ``--sms-alerts`` panics is timed from its publish to the 10th SMS the modem
  was handed; the presses' SMS then fill the queue while notices are timed.

Every process is started and stopped by its PID. Figures go to
``bench/results/sms-<UTC>.json``.
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
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from firmware_stubs.mqtt_panel import ShopPanel
from firmware_stubs.process import StubProcess
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.process import GatewayProcess

REPO = Path(__file__).resolve().parent.parent
SURVEY = REPO / "gateway" / "data" / "changping-road.csv"
RESULTS = REPO / "bench" / "results"


def write_config(work: Path, block_url: str, modem: Path | None) -> Path:
    """The Changping Road config from ``lianfang init``; texting through ``modem`` if given."""
    cmd = [sys.executable, "-m", "gateway", "init", "--survey", str(SURVEY), "--gateway"]
    cmd += ["GW-001", "--broker", block_url, "--dir", str(work)]
    if modem is not None:
        cmd += ["--sms", str(modem)]
    subprocess.run(cmd, check=True, capture_output=True)
    path = work / "lianfang.yaml"
    data = yaml.safe_load(path.read_text())
    data["neighbour_alert"]["cooldown_s"] = 0
    data["status_interval_s"] = 1
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


async def until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Wait (bounded) for ``predicate``; the ``perf_counter`` when it held."""
    deadline = time.perf_counter() + timeout_s
    while not predicate():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.perf_counter()


def tenth_notice(panels: dict[str, ShopPanel], origin: str) -> Callable[[], float | None]:
    """When the 10th shop got ``origin``'s alert, or None while fewer have."""

    def at() -> float | None:
        times = sorted(
            n.at
            for p in panels.values()
            for n in list(p.notices)
            if n.body.get("from_shop_id") == origin
        )
        return times[9] if len(times) >= 10 else None

    return at


async def press_series(
    panels: dict[str, ShopPanel], shops: list[str], presses: int, gap_s: float
) -> list[float]:
    """Panic at ``presses`` shops in turn; each press's seconds to its 10th notice."""
    latencies = []
    for i in range(presses):
        origin = shops[i % len(shops)]
        for panel in panels.values():
            panel.notices.clear()
        started = time.perf_counter()
        await panels[origin].send("panic")
        tenth = tenth_notice(panels, origin)
        await until(lambda tenth=tenth: tenth() is not None, 10, f"10 notices of {origin}")
        latencies.append(tenth() - started)  # type: ignore[operator]
        await asyncio.sleep(gap_s)
    return latencies


async def sms_series(
    panels: dict[str, ShopPanel], modem: StubProcess, shops: list[str], alerts: int
) -> list[float]:
    """Panic at shops in turn, each after the last one's SMS; each one's seconds to its 10th SMS."""
    times = []
    for origin in shops[:alerts]:
        before = modem.count("SMS ")
        started = time.perf_counter()
        await panels[origin].send("panic")
        done = await until(lambda before=before: modem.count("SMS ") >= before + 10, 120, "10 SMS")
        times.append(done - started)
    return times


async def one_run(
    config: Path,
    shops: list[str],
    block_url: str,
    args: argparse.Namespace,
    modem: StubProcess | None,
) -> dict[str, Any]:
    """One gateway on ``config``: the press series, and with a modem the SMS series."""
    gateway = GatewayProcess(config, log=config.parent / "gateway.log")
    gateway.start()
    try:
        panels = {s: ShopPanel(BrokerConfig(url=block_url), s) for s in shops}
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
            for panel in panels.values():
                await asyncio.wait_for(panel.ready.wait(), 10)
            if modem is not None:
                await until(lambda: _registered(config), 30, "the modem registered")
            result: dict[str, Any] = {}
            if modem is not None:  # first, while the modem's queue is empty
                result["tenth_sms_s"] = await sms_series(panels, modem, shops, args.sms_alerts)
            # Shops not yet alerted, so their cool-down cannot matter.
            rest = shops[args.sms_alerts :] if modem is not None else shops
            result["notice_s"] = await press_series(panels, rest, args.presses, args.gap_s)
            for task in tasks:
                task.cancel()
        return result
    finally:
        gateway.stop()


def _registered(config: Path) -> bool:
    status = config.parent / "state" / "status.json"
    try:
        return json.loads(status.read_text()).get("sms", {}).get("registration") == "home"
    except (OSError, ValueError):
        return False


def quantiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 in ms."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"p50_ms": statistics.median(ordered) * 1000, "p95_ms": p95 * 1000}


def main() -> None:
    """Run both, print the table, write the JSON."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--presses", type=int, default=40, help="panics per run for notice latency")
    ap.add_argument("--gap-s", type=float, default=0.2, help="between presses")
    ap.add_argument("--sms-alerts", type=int, default=1, help="alerts timed to their 10th SMS")
    ap.add_argument("--send-s", type=float, nargs=2, default=(1.0, 3.0), help="AT+CMGS time range")
    args = ap.parse_args()
    results: dict[str, Any] = {"presses": args.presses, "send_s": list(args.send_s)}
    with tempfile.TemporaryDirectory(prefix="lianfang-bench-sms-") as folder:
        work = Path(folder)
        for name, texting in (("sms_off", False), ("sms_on", True)):
            run_dir = work / name
            run_dir.mkdir()
            with Mosquitto(workdir=run_dir / "broker") as broker:
                modem = None
                if texting:
                    link = run_dir / "ttyGSM"
                    modem = StubProcess(
                        "gsm_modem", "--pty", "--link", str(link), "--send-s",
                        str(args.send_s[0]), "--send-s-max", str(args.send_s[1]),
                        log=run_dir / "modem.log",
                    )  # fmt: skip
                    modem.start()
                try:
                    config = write_config(run_dir, broker.url, link if texting else None)
                    shops = [s["id"] for s in yaml.safe_load(config.read_text())["shops"]]
                    results[name] = asyncio.run(one_run(config, shops, broker.url, args, modem))
                finally:
                    if modem is not None:
                        modem.stop()
    off, on = quantiles(results["sms_off"]["notice_s"]), quantiles(results["sms_on"]["notice_s"])
    results["notice_off"], results["notice_on"] = off, on
    results["notice_ratio_on_off"] = {k: on[k] / off[k] for k in off}
    results["tenth_sms_s"] = results["sms_on"]["tenth_sms_s"]
    print(f"panic -> 10th notice, SMS off: p50 {off['p50_ms']:.1f} ms, p95 {off['p95_ms']:.1f} ms")
    print(f"panic -> 10th notice, SMS on:  p50 {on['p50_ms']:.1f} ms, p95 {on['p95_ms']:.1f} ms")
    ratio = results["notice_ratio_on_off"]
    print(f"on/off ratio: p50 {ratio['p50_ms']:.2f}, p95 {ratio['p95_ms']:.2f}")
    tenth = ", ".join(f"{t:.1f} s" for t in results["tenth_sms_s"])
    print(
        f"panic -> 10th SMS handed to the modem ({args.send_s[0]:g}-{args.send_s[1]:g} s each):"
        f" {tenth}"
    )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"sms-{stamp}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
