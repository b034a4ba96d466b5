"""Start-up, idle memory and sustained rate of the gateway at district scale, beside the floor.

    python -m bench.scale                    # 87 / 500 / 4,736 shops; steps 100 ... 10,000 ev/s
    python -m bench.scale --quick            # fewer, shorter steps
    python -m bench.scale --shops 87,500     # some sizes only; --rates 500,1000 some steps only

For each size, one gateway is given that many shops (87: the Changping Road
survey; 500 and 4,736: the first shops of ``tests/fixtures/city-60-blocks.csv``,
all under one gateway, as a district gateway or the police's own ``neighbours``
over a city would hold them): spawn -> ``READY=1`` and resident memory after an
idle pause, for the gateway (``lianfang run``, config by ``lianfang init``) and
for the floor (``bench.relay``, a bare paho relay given the same shops'
neighbour table), in the same run on a stock Mosquitto pair.

Then, at 87 shops, sustained rate steps: door events published at a fixed rate
for a few seconds and 1,000 events at least (QoS 1, every shop in turn); a step
holds when every event reached the police within a grace period after the last
was published (nothing left behind). The highest step held is the sustained
rate. CPU per event is the process's CPU seconds from before the first event
until it is quiet again after the last delivery (its acknowledgements written),
over the events sent: the same span for the gateway and the floor. The 100/s
step is issue 14's figure, where what batching amortizes at high rates is paid
per event.

Ratios are gateway / floor from the same run. Figures go to
``bench/results/scale-<UTC>.json``. Every process is started and stopped by its PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bench.procs import CLOCK_TICKS, RelayProcess, cpu_seconds, machine_info, proc_status
from bench.stats import RESULTS
from firmware_stubs.police_platform import Delivery, PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import Mosquitto
from lab.flood import RatePublisher, door_events
from lab.process import GatewayProcess, NotifyingProcess
from rules.geo import neighbour_table

REPO = Path(__file__).resolve().parent.parent
CHANGPING = REPO / "gateway" / "data" / "changping-road.csv"
CITY = REPO / "tests" / "fixtures" / "city-60-blocks.csv"
GATEWAY_ID = "GW-001"
NEIGHBOURS = 10
RADIUS_M = 300.0
CHANGPING_SHOPS = 87
SIZES = (CHANGPING_SHOPS, 500, 4736)
RATES = (100, 500, 1000, 2000, 5000, 10000)
READY_TIMEOUT_S = 300.0  # the quadratic start-up took 210 s at 4,736 shops
SEQ_BASE = 3_000_000_000  # door events' sequence numbers: never seen by a gateway before
# A process is quiet again after a step when its CPU time stands still this long
# (several clock ticks), or at the latest after QUIET_MAX_S.
QUIET_S = 0.3
QUIET_MAX_S = 5.0

console = Console(width=120)


@dataclass(frozen=True)
class Settings:
    """How much one run measures."""

    sizes: tuple[int, ...] = SIZES
    rates: tuple[int, ...] = RATES
    idle_s: float = 3.0
    step_s: float = 5.0
    # CPU time comes in 10 ms ticks: 300 events at 100/s cost the floor about 8.
    step_events: int = 1000
    grace_s: float = 5.0


QUICK = Settings(sizes=(CHANGPING_SHOPS, 500), rates=(100, 500, 1000, 2000), idle_s=2.0, step_s=3.0)


@dataclass(frozen=True)
class Place:
    """A shop's id and position."""

    id: str
    lat: float
    lon: float


def write_survey(shops: int, path: Path) -> Path:
    """A survey sheet of ``shops`` shops, all under ``GATEWAY_ID``."""
    source = CHANGPING if shops <= CHANGPING_SHOPS else CITY
    with source.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or ())
        rows = [r | {"gateway_id": GATEWAY_ID} for r in reader][:shops]
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_config(
    directory: Path,
    survey: Path,
    block_url: str,
    police_url: str,
    *,
    uncapped: bool = False,
) -> tuple[Path, tuple[float, float]]:
    """``lianfang init`` for ``survey``, and its wall and CPU seconds; no neighbour cool-down.

    The journal goes in ``state``.

    ``uncapped`` lifts the per-shop cap on routine events: the sustained steps
    send many events per shop to measure throughput, not the cap that protects a
    block from one noisy panel.
    """
    directory.mkdir(parents=True, exist_ok=True)
    cmd = [
        "python", "-m", "gateway", "init", "--survey", str(survey), "--gateway", GATEWAY_ID,
        "--broker", block_url, "--police", police_url, "--dir", str(directory),
    ]  # fmt: skip
    init_s = run_module(cmd)
    path = directory / "lianfang.yaml"
    data = yaml.safe_load(path.read_text())
    data["state_dir"] = "state"
    data.setdefault("neighbour_alert", {})["cooldown_s"] = 0
    for driver in data["drivers"] if uncapped else []:
        if driver["kind"] == "mqtt_ingest":
            driver["shop_event_cap"] = 10**9
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path, init_s


def run_module(cmd: list[str]) -> tuple[float, float]:
    """Run ``python -m ...`` with this interpreter; its wall and CPU seconds (raises on failure)."""
    started, cpu = time.monotonic(), _children_cpu_s()
    subprocess.run([sys.executable, *cmd[1:]], check=True, capture_output=True, timeout=600)
    return time.monotonic() - started, _children_cpu_s() - cpu


def _children_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def neighbours_file(config: Path, path: Path) -> Path:
    """The relay's neighbour table for ``config``'s shops."""
    shops = yaml.safe_load(config.read_text())["shops"]
    places = [Place(s["id"], float(s["lat"]), float(s["lon"])) for s in shops]
    table = neighbour_table(places, places, count=NEIGHBOURS, radius_m=RADIUS_M)
    path.write_text(json.dumps({k: [n.shop_id for n in v] for k, v in table.items()}))
    return path


def start_and_idle(process: NotifyingProcess, idle_s: float) -> dict[str, float]:
    """Spawn -> READY=1 seconds (and CPU seconds), VmRSS (MB) after ``idle_s`` idle; stopped.

    The CPU seconds (its own and its config child's) hold still on a shared
    machine, where the wall seconds wait for a core.
    """
    try:
        ready_s = process.start(timeout_s=READY_TIMEOUT_S)
        pid = process.pid
        assert pid is not None
        ready_cpu_s = cpu_seconds(pid, children=True)
        time.sleep(idle_s)  # idle memory is what is left once start-up work has settled
        status = proc_status(pid)
        return {
            "ready_s": round(ready_s, 3),
            "ready_cpu_s": round(ready_cpu_s, 3),
            "rss_idle_mb": round(status.get("VmRSS", 0) * 1024 / 1e6, 1),
            "rss_peak_mb": round(status.get("VmHWM", 0) * 1024 / 1e6, 1),
        }
    finally:
        if process.pid is not None:
            process.stop()


def startup_row(shops: int, s: Settings, work: Path) -> dict[str, Any]:
    """Gateway and floor start-up and idle memory at ``shops`` shops."""
    work.mkdir(parents=True, exist_ok=True)
    with Mosquitto(workdir=work / "block") as block, Mosquitto(workdir=work / "police") as police:
        survey = write_survey(shops, work / "survey.csv")
        config, init_s = write_config(work / "gateway", survey, block.url, police.url)
        out: dict[str, Any] = {"shops": len(yaml.safe_load(config.read_text())["shops"])}
        out["init_s"], out["init_cpu_s"] = (round(x, 3) for x in init_s)
        check = ["python", "-m", "gateway", "check", "--config", str(config)]
        out["check_s"], out["check_cpu_s"] = (round(x, 3) for x in run_module(check))
        first = yaml.safe_load(config.read_text())["shops"][0]["id"]
        nearest = ["python", "-m", "gateway", "neighbours", first, "--config", str(config)]
        out["neighbours_s"], out["neighbours_cpu_s"] = (round(x, 3) for x in run_module(nearest))
        table = neighbours_file(config, work / "neighbours.json")
        relay = RelayProcess(
            block_url=block.url, police_url=police.url, neighbours=table,
            log=work / "relay.log", client_id="scale-relay",
        )  # fmt: skip
        out["floor"] = start_and_idle(relay, s.idle_s)
        out["gateway"] = start_and_idle(GatewayProcess(config, log=work / "gateway.log"), s.idle_s)
    return out


# --- sustained rate -----------------------------------------------------------------------


@dataclass(frozen=True)
class Wires:
    """The brokers and shops a load runs over."""

    block_url: str
    police_url: str
    shops: list[str]


async def one_step(wires: Wires, rate: int, s: Settings, step: int) -> dict[str, Any]:
    """``rate`` door events/s for ``step_s``: how many reached the police within the grace.

    A slow step lasts until it has sent ``step_events``.
    """
    count = max(round(rate * s.step_s), s.step_events)
    seq_base = SEQ_BASE + step * 10_000_000
    arrived: set[int] = set()
    everything = asyncio.Event()

    def on_event(delivery: Delivery) -> None:
        # The gateway keeps a panel's seq in attrs; the relay forwards the message as it came.
        body = delivery.body
        seq = body.get("seq", (body.get("attrs") or {}).get("seq"))
        if isinstance(seq, int) and seq_base <= seq < seq_base + count:
            arrived.add(seq)
            if len(arrived) == count:
                everything.set()

    platform = PolicePlatform(
        BrokerConfig(url=wires.police_url), client_id=f"scale-police-{step}", on_event=on_event
    )
    publisher = RatePublisher(
        wires.block_url, f"scale-load-{step}", rate, count, door_events(wires.shops, seq_base)
    )
    async with asyncio.TaskGroup() as tg:
        receiving = tg.create_task(platform.run(), name="police")
        await asyncio.wait_for(platform.ready.wait(), 10)
        started = time.monotonic()
        publisher.start()
        await asyncio.to_thread(publisher.join, count / rate + 60)
        published_s = time.monotonic() - started
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(everything.wait(), s.grace_s)
        receiving.cancel()
    return {
        "rate": rate,
        "sent": publisher.published,
        "published_per_s": round(publisher.published / published_s),
        "delivered": len(arrived),
        "held": len(arrived) == count and publisher.published == count,
    }


@dataclass(frozen=True)
class ThreadTimes:
    """A process's CPU seconds, in its main thread and in the others, and how often it slept."""

    main_s: float
    others_s: float
    sleeps: int
    """Voluntary context switches of all its threads: each is a sleep and a wake-up."""

    def per_event(self, before: ThreadTimes, events: int) -> dict[str, float]:
        """What the span since ``before`` cost per event: CPU us per thread kind, sleeps."""
        n = max(events, 1)
        return {
            "main_thread_cpu_us_per_event": round((self.main_s - before.main_s) / n * 1e6, 1),
            "other_threads_cpu_us_per_event": round((self.others_s - before.others_s) / n * 1e6, 1),
            "sleeps_per_event": round((self.sleeps - before.sleeps) / n, 2),
        }


def thread_times(pid: int) -> ThreadTimes:
    """``pid``'s threads so far (a thread that ended meanwhile is no longer counted)."""
    main_s = others_s = 0.0
    sleeps = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue  # ended since the listing
        fields = stat.rsplit(")", 1)[1].split()
        cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        if task.name == str(pid):
            main_s += cpu_s
        else:
            others_s += cpu_s
        sleeps += next(
            int(line.split()[1])
            for line in status.splitlines()
            if line.startswith("voluntary_ctxt_switches")
        )
    return ThreadTimes(main_s, others_s, sleeps)


def sustained(
    consumer: NotifyingProcess, wires: Wires, s: Settings, *, first_step: int
) -> dict[str, Any]:
    """Rate steps through ``consumer`` until one is not held; CPU seconds per event.

    Also per event: the CPU of the main thread (the gateway's event loop) and of
    the others (its journal writer, executor threads), and the sleeps: at low
    rates the wake-ups are much of the cost (decision 111).
    """
    consumer.start(timeout_s=READY_TIMEOUT_S)
    steps: list[dict[str, Any]] = []
    try:
        pid = consumer.pid
        assert pid is not None
        for i, rate in enumerate(s.rates):
            cpu_before = quiet_cpu_seconds(pid)
            threads_before = thread_times(pid)
            step = asyncio.run(one_step(wires, rate, s, first_step + i))
            step["cpu_us_per_event"] = round(
                (quiet_cpu_seconds(pid) - cpu_before) / max(step["sent"], 1) * 1e6, 1
            )
            step |= thread_times(pid).per_event(threads_before, step["sent"])
            steps.append(step)
            console.log(f"{type(consumer).__name__} {rate}/s: {step}")
            if not step["held"]:
                break
    finally:
        consumer.stop()
    held = [st["rate"] for st in steps if st["held"]]
    return {"steps": steps, "highest_held_per_s": max(held, default=0)}


def quiet_cpu_seconds(pid: int) -> float:
    """``pid``'s CPU seconds once it has used none for ``QUIET_S`` (at most ``QUIET_MAX_S``).

    The last delivery is not the end of a step's work: the gateway still
    journals the police's acknowledgements. Waiting for quiet, before and after
    a step, counts all of it, for the floor and the gateway alike.
    """
    deadline = time.monotonic() + QUIET_MAX_S
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(QUIET_S)
        now = cpu_seconds(pid)
        if now == last:
            break
        last = now
    return last


def rate_row(s: Settings, work: Path) -> dict[str, Any]:
    """Sustained rate steps at 87 shops, floor then gateway, on one stock Mosquitto pair."""
    work.mkdir(parents=True, exist_ok=True)
    with Mosquitto(workdir=work / "block") as block, Mosquitto(workdir=work / "police") as police:
        survey = write_survey(CHANGPING_SHOPS, work / "survey.csv")
        config, _ = write_config(work / "gateway", survey, block.url, police.url, uncapped=True)
        shops = [x["id"] for x in yaml.safe_load(config.read_text())["shops"]]
        relay = RelayProcess(
            block_url=block.url, police_url=police.url,
            neighbours=neighbours_file(config, work / "neighbours.json"),
            log=work / "relay.log", client_id="scale-relay",
        )  # fmt: skip
        wires = Wires(block.url, police.url, shops)
        floor = sustained(relay, wires, s, first_step=0)
        gateway = GatewayProcess(config, log=work / "gateway.log")
        return {"floor": floor, "gateway": sustained(gateway, wires, s, first_step=100)}


# --- the run --------------------------------------------------------------------------------


def ratio(gateway: float | None, floor: float | None) -> float | None:
    """The gateway's figure over the floor's; None when either is missing or the floor is 0."""
    if gateway is None or not floor:
        return None
    return round(gateway / floor, 2)


def report(result: dict[str, Any]) -> None:
    """One line per figure: gateway, floor, ratio."""
    for row in result["startup"]:
        gw, fl = row["gateway"], row["floor"]
        console.print(
            f"{row['shops']:>5} shops: ready {gw['ready_s']} s (floor {fl['ready_s']} s, "
            f"x{ratio(gw['ready_s'], fl['ready_s'])}; CPU {gw['ready_cpu_s']} s, floor "
            f"{fl['ready_cpu_s']} s, x{ratio(gw['ready_cpu_s'], fl['ready_cpu_s'])}); "
            f"idle RSS {gw['rss_idle_mb']} MB "
            f"(floor {fl['rss_idle_mb']} MB, x{ratio(gw['rss_idle_mb'], fl['rss_idle_mb'])}); "
            f"init {row['init_s']} s (CPU {row['init_cpu_s']} s), check {row['check_s']} s "
            f"(CPU {row['check_cpu_s']} s), neighbours {row['neighbours_s']} s "
            f"(CPU {row['neighbours_cpu_s']} s)"
        )
    rates = result.get("rates")
    if rates:
        gw, fl = rates["gateway"], rates["floor"]
        console.print(
            f"sustained: gateway {gw['highest_held_per_s']}/s, floor {fl['highest_held_per_s']}/s"
            f" (x{ratio(gw['highest_held_per_s'], fl['highest_held_per_s'])})"
        )
        for g, f in zip(gw["steps"], fl["steps"], strict=False):
            console.print(
                f"  {g['rate']}/s: CPU per event {g['cpu_us_per_event']} us "
                f"(floor {f['cpu_us_per_event']} us, "
                f"x{ratio(g['cpu_us_per_event'], f['cpu_us_per_event'])})\n"
                f"    main thread {g['main_thread_cpu_us_per_event']} us + other threads "
                f"{g['other_threads_cpu_us_per_event']} us "
                f"(floor {f['main_thread_cpu_us_per_event']} + "
                f"{f['other_threads_cpu_us_per_event']}); "
                f"sleeps {g['sleeps_per_event']} (floor {f['sleeps_per_event']})"
            )


def main() -> None:
    """Command line: ``python -m bench.scale [--quick] [--shops 87,500] [--rates 500,1000]``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer sizes and shorter steps")
    ap.add_argument("--shops", help="comma-separated sizes (default 87,500,4736)")
    ap.add_argument("--rates", help="comma-separated events/s steps; 0 skips the steps")
    args = ap.parse_args()
    s = QUICK if args.quick else Settings()
    if args.shops:
        s = Settings(**{**asdict(s), "sizes": tuple(int(x) for x in args.shops.split(","))})
    if args.rates:
        rates = tuple(int(x) for x in args.rates.split(",") if int(x) > 0)
        s = Settings(**{**asdict(s), "rates": rates})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result: dict[str, Any] = {"settings": asdict(s), "machine": machine_info()}
    with tempfile.TemporaryDirectory(prefix="lianfang-scale-") as folder:
        work = Path(folder)
        result["startup"] = []
        for shops in s.sizes:
            console.log(f"start-up at {shops} shops")
            result["startup"].append(startup_row(shops, s, work / f"shops-{shops}"))
        if s.rates:
            result["rates"] = rate_row(s, work / "rates")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"scale-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    report(result)
    console.print(f"figures in {path}")


if __name__ == "__main__":
    main()
