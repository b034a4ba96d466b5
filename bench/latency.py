"""Latency, backlog drain, memory and start-up of the gateway, side by side with a bare relay.

    python -m bench.latency                   # full run, stock and tuned brokers
    python -m bench.latency --quick           # short run, about 2 minutes
    python -m bench.latency --broker stock    # one broker only (stock or tuned)
    python -m bench.latency --broker tuned --only drain --backlog 100000   # issue 14's drain alone
    python -m bench.latency --background-rate 1000 --background-shops 79   # issue 14's load

For each broker (``bench.brokers``: Mosquitto's stock configuration, then the
tuned one) one run starts two private Mosquitto brokers on loopback (the
block's and the police's), writes a config for the 87-shop Changping Road
survey (through ``lianfang init`` when it works), connects a panel for every
shop, and measures the same load twice: once through ``bench.relay`` (a bare
paho subscribe -> republish relay, the floor) and once through the real daemon
``lianfang run``:

1. panic -> 10th neighbour notice received, and panic -> police delivery
   received, for presses every 100 ms while 20 other shops send 50 events/s;
2. a backlog published to the consumer's persistent session while it is down,
   then drained: events/s until the police receiver has all of them (unique
   ids), and the consumer's peak RSS meanwhile;
3. resident memory idle and under load, and spawn -> READY=1 over cold starts.

The drain (2) runs on the tuned brokers only: a stock Mosquitto keeps at most
1,000 messages for an offline client and drops the rest itself.

Publishers and receivers share this process and ``time.perf_counter``. Figures
go to ``bench/results/latency-<UTC>.json`` and ``bench/results/latest.json``.
Every process is started and stopped by its PID; nothing is left behind.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from rich.console import Console

from bench.brokers import add_broker_option, broker_pair, broker_settings, chosen
from bench.procs import (
    Profiler,
    RelayProcess,
    RssSampler,
    cpu_seconds,
    machine_info,
    proc_status,
    self_frames,
    top_frames,
)
from bench.relay import host_port
from bench.stats import Row, finite, print_table, summary_ms, write_results
from firmware_stubs.mqtt_client import client_for
from firmware_stubs.mqtt_panel import ReceivedNotice, ShopPanel
from firmware_stubs.police_platform import Delivery, PolicePlatform
from gateway.mqtt.client import BrokerConfig
from lab.broker import terminate
from lab.process import GatewayProcess
from rules.geo import neighbour_table

REPO = Path(__file__).resolve().parent.parent
SURVEY = REPO / "gateway" / "data" / "changping-road.csv"
GATEWAY_ID = "GW-001"
BACKGROUND_KINDS = ("door_open", "door_close", "test")
POLICE_TOPICS = "police/v1/+/+/events"
NEIGHBOURS = 10
RADIUS_M = 300.0
GATEWAY_SEQ_BASE = 1_000_000_000  # backlog sequence numbers: never seen by the gateway before
RELAY_SEQ_BASE = 2_000_000_000
SETTLE_S = 5.0
BACKLOG_SENT_PER_S = 1000  # the pace the backlog's events were sent at, by their device times
PER_CLIENT_RATE = 250  # background events/s per publishing client
DRAIN_BROKER = "tuned"
# What one run can measure; ``--only`` picks some. Memory comes with latency (its load).
PHASES = ("latency", "drain", "startup")
DRAIN_SKIPPED = (
    "skipped on the stock broker: it keeps at most 1,000 queued messages for an offline "
    "client (max_queued_messages 1000) and drops the rest itself, so a larger backlog "
    "measures the broker's limit, not the consumer"
)

console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True)
class Settings:
    """How much of everything one run measures."""

    presses: int = 400
    press_interval_s: float = 0.1
    warmup_presses: int = 10
    probe_shops: int = 8
    background_rate: float = 50.0
    background_shops: int = 20
    backlog: int = 100_000
    drain_timeout_s: float = 100.0
    cold_starts: int = 5
    idle_s: float = 2.0
    quick: bool = False
    phases: tuple[str, ...] = PHASES


QUICK = Settings(
    presses=100, warmup_presses=5, backlog=10_000, drain_timeout_s=20, cold_starts=3, idle_s=1,
    quick=True,
)  # fmt: skip


# --- the block: config, neighbours, panels -----------------------------------------------


@dataclass(frozen=True)
class Place:
    """A shop's id and position, for the neighbour table."""

    id: str
    lat: float
    lon: float


def fallback_config(block_url: str, police_url: str) -> dict[str, Any]:
    """The config ``lianfang init`` would write, built from the survey CSV by hand."""
    with SURVEY.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["gateway_id"] == GATEWAY_ID]
    return {
        "gateway": {"id": GATEWAY_ID, "large_grid": rows[0]["large_grid"]},
        "state_dir": "state",
        "broker": {"url": block_url},
        "drivers": [{"kind": "mqtt_ingest", "name": "shops"}],
        "forwarders": [{"kind": "police_mqtt", "name": "police", "broker": {"url": police_url}}],
        "shops": [
            {
                "id": r["shop_id"],
                "name": r["name"],
                "lat": float(r["lat"]),
                "lon": float(r["lon"]),
                "grid": {
                    "large": r["large_grid"],
                    "medium": r["medium_grid"],
                    "small": r["small_grid"],
                },
            }
            for r in rows
        ],
    }


def write_config(directory: Path, block_url: str, police_url: str) -> tuple[Path, str]:
    """Write ``directory/lianfang.yaml`` with the real ``lianfang init``, else by hand.

    Neighbour alerts get no cool-down, so that every press is alerted; the
    journal lives in ``directory/state``. Returns the path and how it was made.
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "lianfang.yaml"
    cmd = [
        sys.executable, "-m", "gateway", "init", "--survey", str(SURVEY), "--gateway", GATEWAY_ID,
        "--broker", block_url, "--police", police_url, "--dir", str(directory),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 0 and path.exists():
        data = yaml.safe_load(path.read_text())
        source = "lianfang init"
    else:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1].strip(" │")
        data = fallback_config(block_url, police_url)
        source = f"bench fallback (lianfang init failed: {why[:120]})"
    data["state_dir"] = "state"
    data.setdefault("neighbour_alert", {})["cooldown_s"] = 0
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return path, source


def copy_config(config: Path, directory: Path) -> Path:
    """The same config in a fresh ``directory`` (its own empty journal)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "lianfang.yaml"
    shutil.copy(config, target)
    return target


def press_key(body: dict[str, Any]) -> datetime | None:
    """The device timestamp an event, notice or relayed message carries (identifies a press)."""
    text = body.get("occurred_at") or body.get("ts")
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


@dataclass
class Probe:
    """One panic press and what came of it (perf_counter seconds)."""

    shop: str
    expected: int
    pressed_at: float = 0.0
    notices: dict[str, float] = field(default_factory=dict)
    police_at: float | None = None

    @property
    def notified(self) -> bool:
        """Every neighbour got its notice."""
        return len(self.notices) >= self.expected

    @property
    def complete(self) -> bool:
        """Every neighbour and the police have it."""
        return self.notified and self.police_at is not None


@dataclass
class Tracker:
    """Matches neighbour notices and police deliveries to the presses that caused them."""

    probes: dict[datetime, Probe] = field(default_factory=dict)
    background_kinds: frozenset[str] = frozenset(BACKGROUND_KINDS)
    background_police: int = 0
    stray_notices: int = 0

    def on_notice(self, notice: ReceivedNotice) -> None:
        """A panel received a neighbour alert."""
        key = press_key(notice.body)
        probe = self.probes.get(key) if key else None
        if probe is None:
            self.stray_notices += 1
        elif notice.shop_id not in probe.notices:
            probe.notices[notice.shop_id] = notice.at

    def on_police(self, delivery: Delivery) -> None:
        """The police receiver got an event (first copy of its id)."""
        if delivery.body.get("kind") in self.background_kinds:
            self.background_police += 1
            return
        key = press_key(delivery.body)
        probe = self.probes.get(key) if key else None
        if probe is not None and probe.police_at is None:
            probe.police_at = delivery.at


class Block:
    """A panel for every shop on the block broker, connected for the whole run."""

    def __init__(self, url: str, shops: list[str]) -> None:
        """Panels for ``shops`` on ``url``; notices go to the current ``tracker``."""
        self.tracker = Tracker()
        broker = BrokerConfig(url=url)
        self.panels = {
            s: ShopPanel(broker, s, device_id="panel-1", on_notice=self._notice) for s in shops
        }
        self._tasks: list[asyncio.Task[None]] = []

    def _notice(self, notice: ReceivedNotice) -> None:
        self.tracker.on_notice(notice)

    async def connect(self, timeout_s: float = 20.0) -> None:
        """Connect every panel and wait until each is subscribed."""
        self._tasks = [
            asyncio.create_task(p.run(), name=f"panel[{s}]") for s, p in self.panels.items()
        ]
        async with asyncio.timeout(timeout_s):
            for panel in self.panels.values():
                await panel.ready.wait()

    async def close(self) -> None:
        """Disconnect every panel."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- MQTT helpers ---------------------------------------------------------------------------


def forget_session(url: str, client_id: str) -> None:
    """Delete ``client_id``'s persistent session, so the broker stops queueing for it."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    host, port = host_port(url)
    client.connect(host, port, keepalive=10, clean_start=True, properties=props)
    deadline = time.monotonic() + 5
    while not client.is_connected() and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    client.disconnect()
    client.loop(timeout=0.05)


def publish_backlog(
    url: str, shops: list[str], count: int, seq_base: int, down_since: datetime
) -> dict[str, float]:
    """Publish ``count`` routine events (QoS 1) over ``shops``; wait for every PUBACK.

    The consumer has been down since ``down_since``: the events are stamped and sent
    as a real outage's would be, at most ``BACKLOG_SENT_PER_S`` from then on.
    """
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"bench-backlog-{seq_base}",
        protocol=mqtt.MQTTv5,
    )  # fmt: skip
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    connected, done = threading.Event(), threading.Event()
    # paho rescans its whole in-flight table for each PUBACK once messages queue
    # behind the in-flight limit, so keep at most that many outstanding.
    window = threading.BoundedSemaphore(1000)
    acked = [0]

    def on_connect(*_: object) -> None:
        connected.set()

    def on_publish(*_: object) -> None:
        acked[0] += 1
        window.release()
        if acked[0] >= count:
            done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    host, port = host_port(url)
    client.connect(host, port, keepalive=30, clean_start=True)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("backlog publisher could not connect")
        # Device times of events sent during the outage at issue 14's rate, never
        # ahead of the clock, as a real backlog's are: the gateway's shop cap counts
        # device times inside its outage (decision 105).
        started = time.perf_counter()
        for i in range(count):
            if not window.acquire(timeout=30):
                break
            sent_at = down_since + timedelta(seconds=i / BACKLOG_SENT_PER_S)
            ahead_s = (sent_at - datetime.now(UTC)).total_seconds()
            if ahead_s > 0.05:
                time.sleep(ahead_s)
            ts = sent_at.isoformat()
            body = (
                f'{{"device_id":"panel-1","kind":"{BACKGROUND_KINDS[i % 3]}",'
                f'"seq":{seq_base + i},"ts":"{ts}"}}'
            )
            client.publish(f"lianfang/v1/shop/{shops[i % len(shops)]}/event", body, qos=1)
        done.wait(max(30.0, count / 2000))
        seconds = time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()
    if acked[0] < count:
        raise RuntimeError(f"backlog: only {acked[0]} of {count} PUBACKs")
    return {"published": count, "seconds": round(seconds, 3), "per_s": round(count / seconds)}


class DrainTally:
    """Unique ids of backlog events (seq at least ``seq_min``), first and last arrival."""

    def __init__(self, *, seq_min: int, target: int) -> None:
        """Count until ``target`` unique events."""
        self.seq_min = seq_min
        self.target = target
        self.seen: set[str] = set()
        self.duplicates = 0
        self.first_at: float | None = None
        self.last_at: float | None = None

    def record(self, body: dict[str, Any]) -> bool:
        """Count one delivery; True once ``target`` unique events have arrived."""
        seq = body.get("seq", body.get("attrs", {}).get("seq"))
        if not isinstance(seq, int) or seq < self.seq_min:
            return False
        if body["id"] in self.seen:
            self.duplicates += 1
            return False
        now = time.perf_counter()
        self.first_at = self.first_at or now
        self.last_at = now
        self.seen.add(body["id"])
        return len(self.seen) >= self.target


class DrainCounter(DrainTally):
    """A police receiver that only counts: unique ids of backlog events, first and last arrival.

    Lean on purpose (the stub platform keeps every body), so that holding
    100,000 deliveries does not slow the receiver down; the same for both cases.
    """

    def __init__(self, url: str, client_id: str, *, seq_min: int, target: int) -> None:
        """Count events with a sequence number of at least ``seq_min`` until ``target``."""
        super().__init__(seq_min=seq_min, target=target)
        self.url = url
        self.client_id = client_id
        self.ready = asyncio.Event()
        self.done = asyncio.Event()

    async def run(self) -> None:
        """Receive until cancelled."""
        client = client_for(BrokerConfig(url=self.url), client_id=self.client_id, persistent=True)
        async with client:
            await client.subscribe(POLICE_TOPICS, qos=1)
            self.ready.set()
            async for message in client.messages:
                if self.record(json.loads(message.payload)):
                    self.done.set()


class SubCounter(DrainTally):
    """The same counting, by ``mosquitto_sub`` (C) in a child process, read in a thread.

    Python MQTT receivers (aiomqtt, paho) top out near 2,000 messages/s on the
    development VM, below what the drain should reach; a C receiver does not
    hide the consumer's own rate. Used when ``mosquitto_sub`` is installed.
    """

    def __init__(self, url: str, client_id: str, *, seq_min: int, target: int) -> None:
        """Count events with a sequence number of at least ``seq_min`` until ``target``."""
        host, port = host_port(url)
        # stdbuf: one line per message as it comes, not a 4 KiB block at a time.
        line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
        self.args = [
            *line_buffered,
            shutil.which("mosquitto_sub") or "mosquitto_sub", "-h", host, "-p", str(port),
            "-t", POLICE_TOPICS, "-q", "1", "-i", client_id, "-c", "-V", "mqttv5",
            "-x", "3600", "-d",
        ]  # fmt: skip
        super().__init__(seq_min=seq_min, target=target)
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self._ready = threading.Event()
        self._done = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None

    def _line(self, line: bytes) -> None:
        if not line.startswith(b"{"):
            if b"received SUBACK" in line:
                self._ready.set()
            return
        if self.record(json.loads(line)):
            self._done.set()

    def _read(self, stream: Any) -> None:  # noqa: ANN401 - a binary pipe
        rest = b""
        while chunk := os.read(stream.fileno(), 1 << 16):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                self._line(line)

    async def run(self) -> None:
        """Run ``mosquitto_sub`` until cancelled; stop it by its PID."""
        self.process = subprocess.Popen(  # noqa: ASYNC220 - returns at once; read in a thread
            self.args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        reader = threading.Thread(
            target=self._read, args=(self.process.stdout,), name="sub-reader", daemon=True
        )
        reader.start()
        try:
            while True:
                if self._ready.is_set():
                    self.ready.set()
                if self._done.is_set():
                    self.done.set()
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto_sub exited with {self.process.returncode}")
                await asyncio.sleep(0.005)
        finally:
            terminate(self.process, timeout_s=5)
            reader.join(timeout=5)


# --- the consumers: relay or gateway ---------------------------------------------------------


class Consumer(Protocol):
    """The relay or the gateway: a child process that is ready on ``READY=1``."""

    @property
    def pid(self) -> int | None:
        """PID of the running child."""
        ...

    def start(self, timeout_s: float = 15.0) -> float:
        """Start; seconds from spawn to ready."""
        ...

    def stop(self, timeout_s: float = 10.0) -> object:
        """SIGTERM and wait."""
        ...

    def kill(self) -> None:
        """SIGKILL."""
        ...


FORCED_STOPS: Counter[str] = Counter()


def stop(consumer: Consumer) -> None:
    """Stop ``consumer`` by its PID with SIGTERM (SIGKILL if it hangs; counted)."""
    try:
        consumer.stop()
    except subprocess.TimeoutExpired:
        FORCED_STOPS[type(consumer).__name__] += 1
        log(f"[red]{type(consumer).__name__} ignored SIGTERM for 10 s: killed[/]")
        consumer.kill()


@dataclass
class Started:
    """Every child this run started, so that ``finally`` stops each by its PID."""

    consumers: list[Consumer] = field(default_factory=list)

    def add(self, consumer: Consumer) -> Consumer:
        """Remember ``consumer``."""
        self.consumers.append(consumer)
        return consumer

    def stop_all(self) -> None:
        """Stop every child still running."""
        for consumer in self.consumers:
            if consumer.pid is not None:
                with contextlib.suppress(Exception):
                    stop(consumer)


def log(message: str) -> None:
    """A progress line."""
    console.log(message)


# --- measurements ------------------------------------------------------------------------------


async def press_series(
    block: Block, probes: list[str], table: dict[str, list[str]], count: int, interval_s: float
) -> None:
    """Press panic ``count`` times, one press every ``interval_s``, rotating over ``probes``."""
    tracker = block.tracker
    sends: set[asyncio.Task[None]] = set()

    async def press(shop: str, probe: Probe, ts: str) -> None:
        probe.pressed_at = time.perf_counter()
        await block.panels[shop].send("panic", ts=ts, zone="1")

    started = time.perf_counter()
    for k in range(count):
        delay = started + k * interval_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        shop = probes[k % len(probes)]
        stamp = datetime.now(UTC)
        probe = Probe(shop, expected=len(table[shop]))
        tracker.probes[stamp] = probe
        task = asyncio.create_task(press(shop, probe, stamp.isoformat()), name=f"press[{k}]")
        sends.add(task)
        task.add_done_callback(sends.discard)
    await asyncio.gather(*sends)


class BackgroundLoad:
    """The routine load behind the presses: door events from other processes, at a set rate.

    Each client is a ``python -m lab.flood --doors`` child (one paho client,
    paced, QoS 1, its own window of PUBACKs) serving its share of the shops,
    so that neither this process's event loop, which times the presses, nor
    one client's round trips limit the rate (issue 14: the panels' aiomqtt
    publishes in this loop fell behind 1,000/s and timed out). The floor and
    the gateway get the same load; the rate achieved is measured, not assumed.
    """

    def __init__(self, url: str, shops: list[str], rate: float, max_s: float) -> None:
        """``rate`` events/s from ``shops`` for at most ``max_s``, over enough clients."""
        self.rate = rate
        clients = max(1, min(len(shops), math.ceil(rate / PER_CLIENT_RATE)))
        seq_base = int(time.time()) % 1_000_000 * 1000
        share = max(1, round(rate / clients))
        self.args = [
            [
                sys.executable, "-m", "lab.flood", "--url", url,
                "--doors", ",".join(shops[i::clients]), "--client-id", f"bench-doors-{i}",
                "--seq-base", str(seq_base), "--rate", str(share),
                "--count", str(math.ceil(share * max_s)),
            ]
            for i in range(clients)
        ]  # fmt: skip
        self._children: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        """Start every client."""
        for args in self.args:
            self._children.append(
                await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
            )

    async def stop(self) -> dict[str, Any]:
        """End every client (SIGTERM: each waits for its PUBACKs); what they achieved."""
        figures: list[dict[str, float]] = []
        for child in self._children:
            if child.returncode is None:
                child.terminate()
        for child in self._children:
            output, _ = await asyncio.wait_for(child.communicate(), 60)
            figures.append(json.loads(output or b"{}"))
        self._children.clear()
        return {
            "clients": len(figures),
            "offered_per_s": self.rate,
            "achieved_per_s": round(sum(f.get("rate", 0.0) for f in figures), 1),
            "published": sum(int(f.get("published", 0)) for f in figures),
            "acked": sum(int(f.get("acked", 0)) for f in figures),
            "by_client": figures,
        }


async def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` every 5 ms for at most ``timeout_s``; whether it came true."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


@dataclass
class Bench:
    """What every phase of one run shares."""

    s: Settings
    workdir: Path
    started: Started
    broker: str
    block_url: str
    police_url: str
    config: Path
    table_file: Path
    table: dict[str, list[str]]
    shop_ids: list[str]
    probes: list[str]
    background: list[str]
    block: Block | None = None
    profile_dir: Path | None = None
    broker_pids: dict[str, int] = field(default_factory=dict)

    @property
    def drains(self) -> bool:
        """Whether the backlog drain runs on this run's brokers (see ``DRAIN_SKIPPED``)."""
        return self.broker == DRAIN_BROKER

    def say(self, message: str) -> None:
        """A progress line, labelled with the broker."""
        log(f"{self.broker} broker, {message}")

    def cpu_snapshot(self, consumer: Consumer) -> dict[str, float]:
        """CPU seconds used so far by the consumer, each broker and this process."""
        times = os.times()
        snap = {"bench": times.user + times.system}
        snap.update({name: cpu_seconds(pid) for name, pid in self.broker_pids.items()})
        if consumer.pid is not None:
            snap["consumer"] = cpu_seconds(consumer.pid)
        return snap


def cpu_share(
    before: dict[str, float], after: dict[str, float], seconds: float
) -> dict[str, float]:
    """Cores used by each process between two snapshots (1.0 = one core busy)."""
    return {
        name: round((after[name] - before.get(name, 0.0)) / seconds, 2)
        for name in after
        if seconds > 0
    }


async def latency_run(b: Bench, name: str, consumer: Consumer) -> dict[str, Any]:
    """Panic latencies under background load, and the consumer's memory idle and loaded."""
    s, block, police_url, table, probes = b.s, b.block, b.police_url, b.table, b.probes
    assert block is not None
    platform_id = f"bench-police-{name}"
    block.tracker = tracker = Tracker()
    platform = PolicePlatform(
        BrokerConfig(url=police_url), client_id=platform_id, on_event=tracker.on_police
    )
    platform_task = asyncio.create_task(platform.run(), name=f"police[{name}]")
    sampler = RssSampler(lambda: consumer.pid).start()
    background: BackgroundLoad | None = None
    try:
        await asyncio.wait_for(platform.ready.wait(), 10)
        await asyncio.sleep(s.idle_s)
        idle_kb = sampler.kb()
        pid = consumer.pid
        assert pid is not None
        series_s = (s.warmup_presses + s.presses) * s.press_interval_s
        background = BackgroundLoad(b.block_url, b.background, s.background_rate, series_s + 30)
        await background.start()
        await press_series(block, probes, table, s.warmup_presses, s.press_interval_s)
        await wait_until(lambda: all(p.complete for p in tracker.probes.values()), 2.0)
        tracker.probes.clear()
        tracker.stray_notices = 0
        mark = len(sampler.samples)
        cpu_before, t0 = b.cpu_snapshot(consumer), time.perf_counter()
        await press_series(block, probes, table, s.presses, s.press_interval_s)
        await wait_until(lambda: all(p.complete for p in tracker.probes.values()), SETTLE_S)
        cores = cpu_share(cpu_before, b.cpu_snapshot(consumer), time.perf_counter() - t0)
        load_kb = [kb for _, kb in sampler.samples[mark:]]
        load = await background.stop()
        b.say(
            f"{name}: background {load['achieved_per_s']:,} of {s.background_rate:,g} events/s "
            f"offered, over {load['clients']} clients"
        )
        await wait_until(lambda: tracker.background_police >= load["acked"], SETTLE_S)
    finally:
        if background is not None:
            await background.stop()
        sampler.stop()
        platform_task.cancel()
        await asyncio.gather(platform_task, return_exceptions=True)
        await asyncio.to_thread(forget_session, police_url, platform_id)
    probes_done = list(tracker.probes.values())
    notify = [max(p.notices.values()) - p.pressed_at for p in probes_done if p.notified]
    first = [min(p.notices.values()) - p.pressed_at for p in probes_done if p.notices]
    police = [p.police_at - p.pressed_at for p in probes_done if p.police_at is not None]
    return {
        "presses": len(probes_done),
        "notify_10th_ms": summary_ms(notify),
        "notify_1st_ms": summary_ms(first),
        "police_ms": summary_ms(police),
        "notify_incomplete": sum(not p.notified for p in probes_done),
        "police_missing": sum(p.police_at is None for p in probes_done),
        "stray_notices": tracker.stray_notices,
        "police_duplicates": platform.duplicates,
        "background": load,
        "background_per_s": load["achieved_per_s"],
        "background_delivered": tracker.background_police,
        "cpu_percent_under_load": round(cores.get("consumer", 0.0) * 100, 1),
        "cores_used": cores,
        "rss_idle_mb": mb_summary(idle_kb),
        "rss_load_mb": mb_summary(load_kb),
    }


def mb_summary(kb: list[int]) -> dict[str, float | None]:
    """Median and max of VmRSS samples, MB (10^6 bytes)."""
    if not kb:
        return {"median": None, "max": None, "samples": 0}
    return {
        "median": round(statistics.median(kb) * 1024 / 1e6, 1),
        "max": round(max(kb) * 1024 / 1e6, 1),
        "samples": len(kb),
    }


async def drain_run(b: Bench, name: str, consumer: Consumer, seq_base: int) -> dict[str, Any]:
    """Publish the backlog while ``consumer`` is down, start it, time the drain."""
    block_url, police_url, shops = b.block_url, b.police_url, b.shop_ids
    count, timeout_s = b.s.backlog, b.s.drain_timeout_s
    down_since = datetime.now(UTC)  # the consumer is stopped before this is called
    published = await asyncio.to_thread(
        publish_backlog, block_url, shops, count, seq_base, down_since
    )
    b.say(f"{name}: {count:,} events queued at the block broker ({published['per_s']:,}/s)")
    counter_id = f"bench-drain-{name}"
    kind = SubCounter if shutil.which("mosquitto_sub") else DrainCounter
    counter = kind(police_url, counter_id, seq_min=seq_base, target=count)
    counter_task = asyncio.create_task(counter.run(), name=f"drain-counter[{name}]")
    sampler = RssSampler(lambda: consumer.pid).start()
    progress: list[tuple[float, int]] = []
    hwm_kb = 0
    cores: dict[str, float] = {}
    profiler: Profiler | None = None
    try:
        await asyncio.wait_for(counter.ready.wait(), 10)
        cpu_before = b.cpu_snapshot(consumer)
        spawned = time.perf_counter()
        ready_s = await asyncio.to_thread(consumer.start)
        pid = consumer.pid
        assert pid is not None
        if b.profile_dir is not None:
            profiler = Profiler(pid, b.profile_dir / f"{name}-drain.txt").start()
        deadline = spawned + timeout_s
        while not counter.done.is_set() and time.perf_counter() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(counter.done.wait(), 1.0)
            progress.append((round(time.perf_counter() - spawned, 2), len(counter.seen)))
        finished = counter.last_at or time.perf_counter()
        hwm_kb = proc_status(pid).get("VmHWM", 0)
        cpu = cpu_seconds(pid)
        cores = cpu_share(cpu_before, b.cpu_snapshot(consumer), time.perf_counter() - spawned)
        await asyncio.sleep(0.5)  # duplicates still in flight show up
    finally:
        samples = sampler.stop()
        profile = await asyncio.to_thread(profiler.stop) if profiler else None
        counter_task.cancel()
        await asyncio.gather(counter_task, return_exceptions=True)
        await asyncio.to_thread(forget_session, police_url, counter_id)
    got = len(counter.seen)
    since_spawn = finished - spawned
    since_first = finished - counter.first_at if counter.first_at else float("nan")
    rss = [kb for _, kb in samples]
    thirds = [rss[i * len(rss) // 3 : (i + 1) * len(rss) // 3] for i in range(3)] if rss else []
    return {
        "backlog": count,
        "receiver": "mosquitto_sub"
        if kind is SubCounter
        else "aiomqtt (bench.latency.DrainCounter)",
        "delivered_unique": got,
        "complete": got >= count,
        "duplicates": counter.duplicates,
        "ready_s": round(ready_s, 3),
        "seconds_from_spawn": round(since_spawn, 3),
        "events_per_s_from_spawn": round(got / since_spawn) if since_spawn > 0 else None,
        "events_per_s_from_first": round(got / since_first) if since_first > 0 else None,
        "cpu_s_per_1000": round(cpu / max(got, 1) * 1000, 4),
        "cores_used": cores,
        "rss_peak_sampled_mb": round(max(rss) * 1024 / 1e6, 1) if rss else None,
        "rss_median_by_third_mb": [
            round(statistics.median(t) * 1024 / 1e6, 1) if t else None for t in thirds
        ],
        "vmhwm_mb": round(hwm_kb * 1024 / 1e6, 1),
        "rss_samples": len(rss),
        "publish": published,
        "progress": progress,
        **({"profile_top": profile_summary(profile)} if profile else {}),
    }


def profile_summary(collapsed: Path) -> dict[str, Any]:
    """Where the consumer spent its time: inclusive and self shares of py-spy samples."""
    return {
        "file": str(collapsed),
        "inclusive": top_frames(collapsed, 25),
        "self": self_frames(collapsed, 25),
    }


def cold_starts(make: Callable[[int], Consumer], count: int, started: Started) -> dict[str, Any]:
    """Spawn -> READY=1 seconds over ``count`` fresh starts, and RSS right at ready."""
    seconds: list[float] = []
    rss_kb: list[int] = []
    for i in range(count):
        consumer = started.add(make(i))
        try:
            seconds.append(consumer.start())
            pid = consumer.pid
            assert pid is not None
            rss_kb.append(proc_status(pid).get("VmRSS", 0))
        finally:
            stop(consumer)
    return {
        "runs_s": [round(x, 3) for x in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "max_s": round(max(seconds), 3),
        "rss_at_ready_mb": mb_summary(rss_kb),
    }


# --- the run -------------------------------------------------------------------------------------


def pick(items: list[str], count: int) -> list[str]:
    """``count`` items spread evenly over ``items``."""
    count = min(count, len(items))
    return [items[i * len(items) // count] for i in range(count)]


def log_problems(path: Path, limit: int = 20) -> list[str]:
    """WARNING, ERROR and traceback lines from a child's log."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    hits = [ln for ln in lines if any(w in ln for w in ("WARNING", "ERROR", "Traceback", "rror:"))]
    return hits[:limit]


def make_bench(
    s: Settings,
    workdir: Path,
    started: Started,
    *,
    broker: str,
    block_url: str,
    police_url: str,
    config: Path,
) -> Bench:
    """The run's shared state for ``config``: its neighbour table, probe and background shops."""
    shops_cfg = yaml.safe_load(config.read_text())["shops"]
    places = [Place(x["id"], float(x["lat"]), float(x["lon"])) for x in shops_cfg]
    nearest = neighbour_table(places, places, count=NEIGHBOURS, radius_m=RADIUS_M)
    table = {k: [n.shop_id for n in v] for k, v in nearest.items()}
    table_file = workdir / "neighbours.json"
    table_file.write_text(json.dumps(table))
    shop_ids = [p.id for p in places]
    probes = pick([x for x in shop_ids if len(table[x]) == NEIGHBOURS], s.probe_shops)
    return Bench(
        s=s, workdir=workdir, started=started, broker=broker, block_url=block_url,
        police_url=police_url,
        config=config, table_file=table_file, table=table, shop_ids=shop_ids, probes=probes,
        background=pick([x for x in shop_ids if x not in probes], s.background_shops),
    )  # fmt: skip


async def measure(
    s: Settings, workdir: Path, started: Started, brokers: tuple[str, ...], *, profile: bool
) -> dict[str, dict[str, Any]]:
    """Every phase on each of ``brokers`` in turn; the raw figures by broker."""
    return {
        broker: await measure_on(broker, s, workdir / broker, started, profile=profile)
        for broker in brokers
    }


async def measure_on(
    broker: str, s: Settings, workdir: Path, started: Started, *, profile: bool
) -> dict[str, Any]:
    """Every phase against one pair of ``broker`` Mosquittos, floor then gateway."""
    # Other work on the machine shows in every figure: say how busy it was.
    out: dict[str, Any] = {"settings_added": broker_settings(broker), "loadavg_before": load()}
    with broker_pair(broker, workdir) as (block_broker, police_broker):
        block_url, police_url = block_broker.url, police_broker.url
        config, source = write_config(workdir / "gateway", block_url, police_url)
        b = make_bench(
            s, workdir, started, broker=broker, block_url=block_url, police_url=police_url,
            config=config,
        )  # fmt: skip
        b.say(f"block {block_url}, police {police_url}; config: {source}")
        out["config_source"] = source
        out["drain"] = "measured" if b.drains else DRAIN_SKIPPED
        shop_ids = b.shop_ids
        b.profile_dir = workdir if profile else None
        out["block"] = {
            "shops": len(shop_ids),
            "probe_shops": b.probes,
            "background_shops": b.background,
        }
        for name, running in (("block_broker", block_broker), ("police_broker", police_broker)):
            if running.process is not None:
                b.broker_pids[name] = running.process.pid
        b.block = Block(block_url, shop_ids)
        await b.block.connect()
        b.say(f"{len(shop_ids)} shop panels connected")
        try:
            out["floor"] = await measure_floor(b)
            out["gateway"] = await measure_gateway(b)
        finally:
            await b.block.close()
    out["loadavg_after"] = load()
    return out


def load() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


async def measure_floor(b: Bench) -> dict[str, Any]:
    """The relay's figures: latency, drain, memory, start-up."""
    s = b.s
    out: dict[str, Any] = {}

    def relay(client_id: str) -> RelayProcess:
        return RelayProcess(
            block_url=b.block_url, police_url=b.police_url, neighbours=b.table_file,
            log=b.workdir / "relay.log", client_id=client_id,
        )  # fmt: skip

    # Started even when only the drain is measured: its persistent session must exist
    # for the broker to keep the backlog.
    relay_proc = b.started.add(relay("bench-relay"))
    out["ready_first_s"] = round(await asyncio.to_thread(relay_proc.start), 3)
    b.say(f"relay ready (pid {relay_proc.pid})")
    if "latency" in s.phases:
        out["latency"] = await latency_run(b, "floor", relay_proc)
        b.say(f"relay: notify p99 {out['latency']['notify_10th_ms']['p99']} ms")
    stop(relay_proc)
    if "drain" in s.phases:
        out["drain"] = await drain_if_tuned(b, "floor", relay_proc, RELAY_SEQ_BASE)
    await asyncio.to_thread(forget_session, b.block_url, "bench-relay")
    await asyncio.to_thread(forget_session, b.police_url, "bench-relay-police")
    if "startup" not in s.phases:
        out["log_problems"] = log_problems(b.workdir / "relay.log")
        return out

    def cold_relay(i: int) -> Consumer:
        return relay(f"bench-relay-cold-{i}")

    out["cold_start"] = await asyncio.to_thread(cold_starts, cold_relay, s.cold_starts, b.started)
    for i in range(s.cold_starts):
        await asyncio.to_thread(forget_session, b.block_url, f"bench-relay-cold-{i}")
        await asyncio.to_thread(forget_session, b.police_url, f"bench-relay-cold-{i}-police")
    out["log_problems"] = log_problems(b.workdir / "relay.log")
    return out


async def measure_gateway(b: Bench) -> dict[str, Any]:
    """The gateway's figures: start-up, latency, drain, memory."""
    s = b.s
    out: dict[str, Any] = {}

    def cold_gateway(i: int) -> Consumer:
        cfg = copy_config(b.config, b.workdir / f"cold-{i}")
        return GatewayProcess(cfg, log=b.workdir / "gateway-cold.log")

    if "startup" in s.phases:
        b.say(f"gateway: {s.cold_starts} cold starts")
        out["cold_start"] = await asyncio.to_thread(
            cold_starts, cold_gateway, s.cold_starts, b.started
        )
        b.say(f"gateway: ready in {out['cold_start']['median_s']} s (median)")
    gateway = b.started.add(GatewayProcess(b.config, log=b.workdir / "gateway.log"))
    out["ready_first_s"] = round(await asyncio.to_thread(gateway.start), 3)
    b.say(f"gateway ready (pid {gateway.pid})")
    if "latency" in s.phases:
        out["latency"] = await latency_run(b, "gateway", gateway)
        b.say(f"gateway: notify p99 {out['latency']['notify_10th_ms']['p99']} ms")
    stop(gateway)
    if "drain" in s.phases:
        out["drain"] = await drain_if_tuned(b, "gateway", gateway, GATEWAY_SEQ_BASE)
    out["log_problems"] = log_problems(b.workdir / "gateway.log") + log_problems(
        b.workdir / "gateway-cold.log"
    )
    out["journal_bytes"] = sum(
        p.stat().st_size for p in (b.config.parent / "state").glob("journal.sqlite3*")
    )
    return out


async def drain_if_tuned(b: Bench, name: str, consumer: Consumer, seq_base: int) -> dict[str, Any]:
    """The backlog drain on the tuned brokers; on stock, why it was skipped."""
    if not b.drains:
        b.say(f"{name}: no backlog drain (a stock broker queues at most 1,000)")
        return {"skipped": DRAIN_SKIPPED}
    out = await drain_run(b, name, consumer, seq_base)
    b.say(f"{name}: drain {out['events_per_s_from_spawn']} events/s")
    stop(consumer)
    return out


# key, label, unit, and the path to the figure in a consumer's results
FIGURES: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("notify_p50_ms", "panic → 10th notice p50", "ms", ("latency", "notify_10th_ms", "p50")),
    ("notify_p99_ms", "panic → 10th notice p99", "ms", ("latency", "notify_10th_ms", "p99")),
    ("notify_max_ms", "panic → 10th notice max", "ms", ("latency", "notify_10th_ms", "max")),
    ("notify1_p50_ms", "panic → 1st notice p50", "ms", ("latency", "notify_1st_ms", "p50")),
    ("police_p50_ms", "panic → police p50", "ms", ("latency", "police_ms", "p50")),
    ("police_p99_ms", "panic → police p99", "ms", ("latency", "police_ms", "p99")),
    ("police_max_ms", "panic → police max", "ms", ("latency", "police_ms", "max")),
    ("notify_incomplete", "presses short of 10 notices", "events",
     ("latency", "notify_incomplete")),
    ("police_missing", "presses not at police", "events", ("latency", "police_missing")),
    ("background_per_s", "background load achieved", "ev/s", ("latency", "background_per_s")),
    ("cpu_load", "consumer CPU under that load + 10 panics/s", "%",
     ("latency", "cpu_percent_under_load")),
    ("drain_events_per_s", "backlog drain, spawn → all", "ev/s",
     ("drain", "events_per_s_from_spawn")),
    ("drain_first_per_s", "backlog drain, 1st → all", "ev/s",
     ("drain", "events_per_s_from_first")),
    ("drain_cpu", "CPU per 1,000 drained events", "s", ("drain", "cpu_s_per_1000")),
    ("drain_rss_peak_mb", "RSS peak during drain (VmHWM)", "MB", ("drain", "vmhwm_mb")),
    ("drain_delivered", "backlog delivered (unique)", "events", ("drain", "delivered_unique")),
    ("rss_idle_mb", "RSS idle after ready (median)", "MB", ("latency", "rss_idle_mb", "median")),
    ("rss_load_mb", "RSS under load (max)", "MB", ("latency", "rss_load_mb", "max")),
    ("ready_median_s", "spawn → READY=1 (median)", "s", ("cold_start", "median_s")),
    ("ready_max_s", "spawn → READY=1 (max)", "s", ("cold_start", "max_s")),
)  # fmt: skip


def figure(side: dict[str, Any], path: tuple[str, ...]) -> float | None:
    """The number at ``path`` in one consumer's results, or None."""
    value: Any = side
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, int | float) else None


def comparison(by_broker: dict[str, dict[str, Any]]) -> list[Row]:
    """The rows of the table: every figure on each broker, gateway against that broker's floor.

    Figure by figure, so that stock and tuned sit one above the other; a phase
    skipped on a broker (the drain on stock) or not asked for (``--only``) has no rows there.
    """
    return [
        Row(key, label, unit, figure(result["gateway"], path), figure(result["floor"], path),
            broker=broker)
        for key, label, unit, path in FIGURES
        for broker, result in by_broker.items()
        if "skipped" not in result["gateway"].get(path[0], {"skipped": "not measured"})
    ]  # fmt: skip


def verdicts(rows: list[Row]) -> dict[str, dict[str, str]]:
    """PASS/MISS per broker and target."""
    out: dict[str, dict[str, str]] = {}
    for row in rows:
        verdict = row.as_dict().get("verdict")
        if verdict is not None:
            out.setdefault(row.broker, {})[row.key] = verdict
    return out


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so that ``finally`` blocks stop every child."""

    def handler(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(
    s: Settings, brokers: tuple[str, ...], *, keep: bool = False, profile: bool = False
) -> dict[str, Any]:
    """One whole benchmark run on ``brokers``; returns the result written to ``bench/results``."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="lianfang-bench-"))
    began = time.monotonic()
    started = Started()
    result: dict[str, Any] = {
        "schema": 2,
        "started_utc": stamp,
        "mode": "quick" if s.quick else "full",
        "brokers_measured": list(brokers),
        "machine": machine_info(),
        "settings": asdict(s),
    }
    ok = False
    try:
        with sigterm_as_interrupt():
            result["brokers"] = asyncio.run(measure(s, workdir, started, brokers, profile=profile))
        ok = True
    finally:
        started.stop_all()
        if keep or not ok:
            console.print(f"work folder kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    result["duration_s"] = round(time.monotonic() - began, 1)
    result["sigterm_ignored"] = dict(FORCED_STOPS)
    rows = comparison(result["brokers"])
    result["comparison"] = [r.as_dict() for r in rows]
    result["verdicts"] = verdicts(rows)
    result = finite(result)
    dated, _ = write_results(result, stamp)
    print_table(
        rows,
        f"Lianfang gateway vs bare relay on {' and '.join(brokers)} Mosquitto, each against "
        f"the floor on the same broker — {result['mode']} run, {s.presses} presses, "
        f"{s.backlog:,}-event backlog, {result['duration_s']} s",
        console,
    )
    if "stock" in brokers:
        console.print(f"backlog drain {DRAIN_SKIPPED}.")
    console.print(f"written: {dated.relative_to(REPO)} and bench/results/latest.json")
    return result


def main() -> None:
    """Command line: ``python -m bench.latency [--quick] [--broker stock|tuned|both]``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short run (about a minute a broker)")
    add_broker_option(ap)
    ap.add_argument("--presses", type=int, help="panic presses measured per consumer")
    ap.add_argument("--backlog", type=int, help="events in the backlog to drain")
    ap.add_argument(
        "--background-rate",
        type=float,
        help="routine events/s behind the presses (issue 14's load: 1000, over every other shop)",
    )
    ap.add_argument("--background-shops", type=int, help="shops sending the background load")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs, journal)")
    ap.add_argument(
        "--only",
        action="append",
        choices=PHASES,
        help="measure only this phase (repeatable); the drain alone: --broker tuned --only drain",
    )
    ap.add_argument(
        "--profile", action="store_true", help="py-spy the drains (needs py-spy; implies --keep)"
    )
    args = ap.parse_args()
    s = QUICK if args.quick else Settings()
    given = (
        ("presses", args.presses),
        ("backlog", args.backlog),
        ("background_rate", args.background_rate),
        ("background_shops", args.background_shops),
    )
    overrides: dict[str, Any] = {k: v for k, v in given if v}
    if args.only:
        overrides["phases"] = tuple(p for p in PHASES if p in args.only)
    if args.backlog:
        # A drain at the gateway's rate of about 3,000 events/s on a busy machine, and more.
        overrides["drain_timeout_s"] = max(s.drain_timeout_s, args.backlog / 1000)
    if overrides:
        s = Settings(**{**asdict(s), **overrides})
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("LIANFANG_LOG_LEVEL", "INFO")
    try:
        run(s, chosen(args.broker), keep=args.keep or args.profile, profile=args.profile)
    except KeyboardInterrupt:
        console.print("[red]interrupted; every process stopped[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
