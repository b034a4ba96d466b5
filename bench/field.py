"""Field devices: wired panic latency, Modbus door latency and polling CPU, against floors.

    python -m bench.field                   # about 5 minutes on 2 cores, stock and tuned
    python -m bench.field --quick           # about 3 minutes
    python -m bench.field --broker stock    # one broker only (stock or tuned)

1. **Wired panic → neighbours.** The bench is the wired bus: it holds the
   device end of a pty pair and writes a ``PANIC`` frame for one of 8 probe
   shops every 100 ms; it times (``time.perf_counter``) until the 10th
   neighbour's panel has the notice, and until the frame's ACK comes back (the
   event is journalled). Floor: ``bench.field_floor line``, the same parser
   relaying each panic to the same 10 notify topics with paho and acking at once.
2. **Modbus door edge → event.** 16 IO modules (``firmware_stubs.modbus_io``,
   one TCP endpoint, units 1-16, 8 door contacts each) polled every 200 ms by
   one driver. A door is opened or shut through the stub's control socket; the
   latency runs to the police platform's receipt of the event (so it includes
   the journal's fsync and the forwarder). Floor: ``bench.field_floor modbus``,
   a bare pymodbus loop polling the same units at the same period, timed to
   the moment it sees the change.
3. **CPU while polling 16 modules.** User+system CPU of the gateway process
   over an idle window, as % of one core (target < 5 %). Floor: the bare
   poller's CPU over the same window.

Each phase runs on Mosquitto's stock configuration and on the tuned one
(``bench.brokers``), each gateway figure against the floor on the same broker.
Results: ``bench/results/field-<UTC>.json`` and ``bench/results/field-latest.json``.
Every process is started and stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import tempfile
import time
import tty
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.brokers import add_broker_option, broker_pair, chosen
from bench.latency import Place, write_config
from bench.procs import cpu_seconds, machine_info
from bench.stats import RESULTS, Row, finite, print_table, summary_ms
from firmware_stubs.mqtt_panel import ReceivedNotice, ShopPanel
from firmware_stubs.police_platform import Delivery, PolicePlatform
from firmware_stubs.process import StubProcess
from gateway.mqtt.client import BrokerConfig
from lab.broker import free_port
from lab.process import GatewayProcess
from protocols.line_frames import LineFrame, LineReader
from rules.geo import neighbour_table

PROBES = 8
NEIGHBOURS = 10
MODULES = 16
INPUTS = 8
POLL_S = 0.2
PRESS_GAP_S = 0.1
EDGE_GAP_S = 0.45
SETTLE_S = 1.5


@dataclass(frozen=True)
class Settings:
    """How much one run measures."""

    presses: int = 300
    edges: int = 60
    idle_s: float = 20.0


QUICK = Settings(presses=80, edges=20, idle_s=8.0)


# --- the wired bus ------------------------------------------------------------------------


class DeviceEnd:
    """The bench's end of the wired bus: writes frames, stamps ACKs (perf_counter)."""

    def __init__(self) -> None:
        """Make the pty pair; ``port`` is the consumer's end."""
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self._slave)
        self.acks: dict[tuple[int, int], float] = {}
        self._reader = LineReader()
        asyncio.get_running_loop().add_reader(self.master, self._readable)

    def _readable(self) -> None:
        with contextlib.suppress(OSError):
            data = os.read(self.master, 4096)
            now = time.perf_counter()
            for frame in self._reader.feed(data):
                self.acks.setdefault((frame.addr, frame.seq), now)

    def send(self, frame: LineFrame) -> float:
        """Write ``frame``; return when it was written."""
        os.write(self.master, frame.encode())
        return time.perf_counter()

    def close(self) -> None:
        """Close both ends."""
        asyncio.get_running_loop().remove_reader(self.master)
        os.close(self.master)
        os.close(self._slave)


@dataclass
class Press:
    """One press and the notices it brought."""

    shop: str
    addr: int
    seq: int
    at: float
    notices: list[float] = field(default_factory=list)


async def wired_run(
    device: DeviceEnd, block: str, probes: dict[int, str], near: dict[str, list[str]], count: int
) -> tuple[list[float], list[float]]:
    """Press ``count`` times; panic -> 10th notice, and panic -> ACK (seconds)."""
    latest: dict[str, Press] = {}
    presses: list[Press] = []

    def noticed(notice: ReceivedNotice) -> None:
        press = latest.get(notice.body.get("from_shop_id", ""))
        if press is not None:
            press.notices.append(notice.at)

    shops = sorted({s for ns in near.values() for s in ns})
    panels = {s: ShopPanel(BrokerConfig(url=block), s, on_notice=noticed) for s in shops}
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(p.run(), name=f"panel[{s}]") for s, p in panels.items()]
        for panel in panels.values():
            await asyncio.wait_for(panel.ready.wait(), 20)
        addrs = sorted(probes)
        for i in range(count):
            addr = addrs[i % len(addrs)]
            press = Press(probes[addr], addr, (i // len(addrs)) % 256, 0.0)
            latest[press.shop] = press
            press.at = device.send(LineFrame(addr, press.seq, "PANIC", "1"))
            presses.append(press)
            await asyncio.sleep(PRESS_GAP_S)
        await asyncio.sleep(SETTLE_S)
        for task in tasks:
            task.cancel()
    notify = [max(p.notices) - p.at for p in presses if len(p.notices) >= NEIGHBOURS]
    acks = [device.acks[p.addr, p.seq] - p.at for p in presses if (p.addr, p.seq) in device.acks]
    return notify, acks


# --- the Modbus bus -------------------------------------------------------------------------


class Doors:
    """Opens and shuts doors on the IO module stub through its control socket."""

    def __init__(self, control: int) -> None:
        """Talk to the stub's control port."""
        self._control = control
        self._open: set[tuple[int, int]] = set()
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def toggle(self, unit: int, number: int) -> tuple[str, float]:
        """Flip one door; the event kind it should make, and when the stub had it."""
        if self._stream is None:
            self._stream = await asyncio.open_connection("127.0.0.1", self._control)
        reader, writer = self._stream
        opening = (unit, number) not in self._open
        self._open.symmetric_difference_update({(unit, number)})
        writer.write(f"{'open' if opening else 'close'} {unit} {number}\n".encode())
        sent = time.perf_counter()
        await reader.readline()  # "ok": queued at the stub
        return ("door_open" if opening else "door_close"), sent

    async def close(self) -> None:
        """Close the control connection."""
        if self._stream is not None:
            self._stream[1].close()


Edge = tuple[int, int, str]
"""Unit, input and the kind of event a door move should make."""


async def move_doors(doors: Doors, count: int) -> list[tuple[Edge, float]]:
    """Flip ``count`` random doors, at uneven gaps; each move and when the stub had it."""
    rng = random.Random(7)
    sent = []
    for _ in range(count):
        unit, number = rng.randint(1, MODULES), rng.randrange(INPUTS)
        kind, at = await doors.toggle(unit, number)
        sent.append(((unit, number, kind), at))
        await asyncio.sleep(EDGE_GAP_S + rng.uniform(0, POLL_S))
    await asyncio.sleep(SETTLE_S)
    return sent


def latencies(sent: list[tuple[Edge, float]], seen: list[tuple[Edge, float]]) -> list[float]:
    """For each move, the time to the first unused sighting of the same edge after it."""
    used: set[int] = set()
    out = []
    for edge, at in sent:
        for i, (key, when) in enumerate(seen):
            if i not in used and key == edge and when >= at:
                used.add(i)
                out.append(when - at)
                break
    return out


def floor_sightings(floor: StubProcess) -> list[tuple[Edge, float]]:
    """The bare poller's ``EDGE unit input value t`` lines (NC doors: 1 is shut)."""
    found = []
    for line in list(floor.lines):
        if line.startswith("EDGE "):
            _, unit, number, value, at = line.split()
            kind = "door_close" if value == "1" else "door_open"
            found.append(((int(unit), int(number), kind), float(at)))
    return found


async def idle_cpu_pct(pid: int, seconds: float) -> float:
    """CPU of ``pid`` over ``seconds`` of wall time, as % of one core."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)


# --- the run ------------------------------------------------------------------------------


def read_shops(config: Path) -> list[dict[str, Any]]:
    """The shops of a config file."""
    shops: list[dict[str, Any]] = yaml.safe_load(config.read_text())["shops"]
    return shops


def field_config(
    base: Path, directory: Path, drivers: list[dict[str, Any]], devices: dict[str, tuple[str, str]]
) -> Path:
    """``base`` with ``drivers`` added and each shop in ``devices`` given that (id, kind)."""
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml.safe_load(base.read_text())
    for shop in data["shops"]:
        if shop["id"] in devices:
            shop.setdefault("devices", [{"id": "panel-1", "kind": "alarm_panel"}])
            device_id, kind = devices[shop["id"]]
            shop["devices"].append({"id": device_id, "kind": kind})
    data["drivers"] = [*data["drivers"], *drivers]
    path = directory / "lianfang.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path


async def wired_phase(
    base: Path, workdir: Path, block: str, settings: Settings
) -> dict[str, list[float]]:
    """Wired panic latencies through the floor, then the gateway."""
    shops = read_shops(base)
    places = [Place(s["id"], float(s["lat"]), float(s["lon"])) for s in shops]
    table = neighbour_table(places, places, count=NEIGHBOURS, radius_m=300)
    full = [s for s, ns in sorted(table.items()) if len(ns) == NEIGHBOURS][:PROBES]
    probes = {i + 1: shop for i, shop in enumerate(full)}
    near = {s: [n.shop_id for n in table[s]] for s in full}
    neighbours = workdir / "line-neighbours.json"
    neighbours.write_text(
        json.dumps(
            {
                "origin": {str(a): s for a, s in probes.items()},
                "neighbours": {str(a): near[s] for a, s in probes.items()},
            }
        )
    )

    def floor(port: str) -> StubProcess:
        return StubProcess(
            "field_floor", "line", "--port", port, "--block", block,
            "--neighbours", str(neighbours), package="bench", log=workdir / "floor-line.log",
        )  # fmt: skip

    def gateway(port: str) -> GatewayProcess:
        driver = {
            "kind": "line_serial",
            "name": "bus-1",
            "port": port,
            "devices": [
                {"address": a, "shop_id": s, "device_id": "pb-1"} for a, s in probes.items()
            ],
        }
        config = field_config(
            base, workdir / "wired", [driver], dict.fromkeys(full, ("pb-1", "panic_button"))
        )
        return GatewayProcess(config, log=workdir / "wired" / "gateway.log")

    results: dict[str, list[float]] = {}
    for name, consumer in (("floor", floor), ("gateway", gateway)):
        device = DeviceEnd()
        process = consumer(device.port)
        try:
            if isinstance(process, StubProcess):
                process.start(ready="READY")
            else:
                process.start()
            try:
                notify, acks = await wired_run(device, block, probes, near, settings.presses)
            finally:
                process.stop()
        finally:
            device.close()
        results[f"{name}_notify"], results[f"{name}_ack"] = notify, acks
    return results


async def modbus_phase(
    base: Path, workdir: Path, police: str, settings: Settings
) -> dict[str, Any]:
    """Door edge latency and idle CPU: the bare poller, then the gateway."""
    shops = [s["id"] for s in read_shops(base)][:MODULES]
    tcp = f"127.0.0.1:{free_port()}"
    control = free_port()
    io = StubProcess(
        "modbus_io", "--tcp", tcp, "--units", f"1-{MODULES}", "--control", f"127.0.0.1:{control}",
        log=workdir / "modbus-io.log",
    )  # fmt: skip
    io.start(ready="READY")
    doors = Doors(control)
    out: dict[str, Any] = {}
    try:
        floor = StubProcess(
            "field_floor", "modbus", "--host", tcp, "--units", f"1-{MODULES}",
            "--period", str(POLL_S), package="bench", log=workdir / "floor-modbus.log",
        )  # fmt: skip
        floor.start(ready="READY")
        try:
            assert floor.process is not None
            await asyncio.sleep(2)
            out["floor_cpu_pct"] = await idle_cpu_pct(floor.process.pid, settings.idle_s)
            sent = await move_doors(doors, settings.edges)
            out["floor_edges"] = latencies(sent, floor_sightings(floor))
        finally:
            floor.stop()

        modules = [
            {
                "unit": u,
                "shop_id": shops[u - 1],
                "device_id": "io-1",
                "poll_interval_s": POLL_S,
                "inputs": [{"zone": str(n + 1), "address": n} for n in range(INPUTS)],
            }
            for u in range(1, MODULES + 1)
        ]
        driver = {"kind": "modbus", "name": "io-bus", "host": tcp, "modules": modules}
        devices = dict.fromkeys(shops, ("io-1", "io_module"))
        config = field_config(base, workdir / "modbus", [driver], devices)
        stamps: list[tuple[Edge, float]] = []
        unit_of = {s: i + 1 for i, s in enumerate(shops)}

        def arrived(delivery: Delivery) -> None:
            body = delivery.body
            if body["kind"] in ("door_open", "door_close") and body["shop_id"] in unit_of:
                key = (unit_of[body["shop_id"]], int(body["zone"]) - 1, body["kind"])
                stamps.append((key, delivery.at))

        platform = PolicePlatform(
            BrokerConfig(url=police), client_id="bench-field", on_event=arrived
        )
        gateway = GatewayProcess(config, log=workdir / "modbus" / "gateway.log")
        async with asyncio.TaskGroup() as tg:
            listener = tg.create_task(platform.run(), name="police")
            await asyncio.wait_for(platform.ready.wait(), 10)
            gateway.start()
            try:
                await asyncio.sleep(2)  # first polls settle
                assert gateway.pid is not None
                out["gateway_cpu_pct"] = await idle_cpu_pct(gateway.pid, settings.idle_s)
                sent = await move_doors(doors, settings.edges)
                out["gateway_edges"] = latencies(sent, stamps)
            finally:
                gateway.stop()
                listener.cancel()
    finally:
        await doors.close()
        io.stop()
    return out


async def run_on(broker: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Both phases on a pair of ``broker`` Mosquittos; the results."""
    with broker_pair(broker, workdir) as (block, police):
        base, source = write_config(workdir / "base", block.url, police.url)
        wired = await wired_phase(base, workdir, block.url, settings)
        modbus = await modbus_phase(base, workdir, police.url, settings)
    return {"config": source, "wired": wired, "modbus": modbus}


async def run(settings: Settings, keep: bool, brokers: tuple[str, ...]) -> dict[str, Any]:
    """One whole run on each of ``brokers``; the results by broker."""
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-bench-field-"))
    try:
        return {b: await run_on(b, settings, workdir / b) for b in brokers}
    finally:
        if keep:
            print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# key, label, phase, the gateway's and the floor's samples
LATENCIES = (
    ("wired_notify", "wired panic → 10th neighbour", "wired", "gateway_notify", "floor_notify"),
    ("wired_ack", "wired panic → ACK (journalled)", "wired", "gateway_ack", "floor_ack"),
    ("modbus_edge", "door edge → event, 16 modules", "modbus", "gateway_edges", "floor_edges"),
)


def figures(result: dict[str, Any], broker: str) -> list[Row]:
    """The comparison rows of one broker's run."""
    rows = [
        Row(
            f"{key}_{q}_ms",
            f"{label}, {q}",
            "ms",
            summary_ms(result[phase][ours])[q] if result[phase][ours] else None,
            summary_ms(result[phase][floor])[q] if result[phase][floor] else None,
            broker,
        )
        for key, label, phase, ours, floor in LATENCIES
        for q in ("p50", "p99")
    ]
    modbus = result["modbus"]
    cpu = "CPU while polling 16 modules at 200 ms"
    rows.append(
        Row(
            "modbus_cpu_pct", cpu, "% core", modbus["gateway_cpu_pct"], modbus["floor_cpu_pct"],
            broker,
        )
    )  # fmt: skip
    return rows


def counts(result: dict[str, Any], settings: Settings) -> dict[str, int]:
    """How many presses and door moves were made, and how many arrived, for one broker."""
    return {
        "wired_presses": settings.presses,
        "wired_notified": len(result["wired"]["gateway_notify"]),
        "wired_notified_floor": len(result["wired"]["floor_notify"]),
        "modbus_edges": settings.edges,
        "modbus_edges_seen": len(result["modbus"]["gateway_edges"]),
        "modbus_edges_seen_floor": len(result["modbus"]["floor_edges"]),
    }


def main() -> None:
    """Command line: ``python -m bench.field [--quick] [--keep] [--broker ...]``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (about a minute a broker)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    add_broker_option(ap)
    args = ap.parse_args()
    settings = QUICK if args.quick else Settings()
    brokers = chosen(args.broker)
    by_broker = asyncio.run(run(settings, args.keep, brokers))
    # Figure by figure, stock above tuned.
    per_broker = [figures(by_broker[b], b) for b in brokers]
    rows = [row for same_figure in zip(*per_broker, strict=True) for row in same_figure]
    print_table(rows, f"Field devices: gateway against floor, on {' and '.join(brokers)} Mosquitto")
    tally = {b: counts(result, settings) for b, result in by_broker.items()}
    print(json.dumps(tally))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = finite({
        "when": stamp, "machine": machine_info(), "settings": asdict(settings),
        "brokers_measured": list(brokers), "counts": tally,
        "config": {b: result["config"] for b, result in by_broker.items()},
        "figures": [r.as_dict() for r in rows],
        "distributions_ms": {
            b: {
                f"{phase}.{key}": summary_ms(values)
                for phase in ("wired", "modbus")
                for key, values in result[phase].items()
                if isinstance(values, list)
            }
            for b, result in by_broker.items()
        },
    })  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(out, indent=2, allow_nan=False, default=str) + "\n"
    (RESULTS / f"field-{stamp}.json").write_text(text)
    (RESULTS / "field-latest.json").write_text(text)


if __name__ == "__main__":
    main()
