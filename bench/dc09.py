"""DC-09 forwarder benchmark: events/s and event → ACK latency to `lianfang receiver` over TCP.

    .venv/bin/python -m bench.dc09            # about a minute on 2 cores
    .venv/bin/python -m bench.dc09 --quick    # about 20 s

One run starts the real `lianfang receiver --dc09 0` (once clear, once with an
AES-256 key) in its own process and measures, against it:

* **gateway**: events appended to a real journal (SQLite, WAL, synchronous=FULL)
  and forwarded by `Dc09Forwarder` through its outbox cursor, one message in
  flight, each acknowledged in the journal on the receiver's ACK;
* **floor**: a bare asyncio TCP loop in this process that writes ready-made
  DC-09 frames to the same receiver and waits for each ACK (no journal, no
  encoding on the clock).

Figures: events/s with a backlog of N events, and p50/p99 event → ACK at 50
events/s. Results go to ``bench/results/dc09-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from bench.stats import RESULTS, summary_ms
from gateway.config import kinds
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.forwarders.base import ForwarderContext, ShopCard
from gateway.forwarders.dc09 import Dc09Forwarder
from gateway.journal import Journal
from gateway.outbox import OutboxCursor
from lab.process import ReceiverProcess
from protocols.dc09 import EventData, Message, Token, contact_id, encode, split_frame

KEY_HEX = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
RATE = 50.0


def panic(zone: str) -> Event:
    now = utc_now()
    return Event(
        id=new_event_id(),
        gateway_id="GW",
        shop_id="S00011",
        device_id="panel-1",
        zone=zone,
        kind=EventKind.PANIC,
        occurred_at=now,
        received_at=now,
        source=Source(driver="bench", ref="bench"),
    )


async def gateway_run(
    work: Path, port: int, key: str | None, *, count: int, rate: float | None
) -> tuple[float, list[float]]:
    """Events/s (backlog of ``count``) or latencies (at ``rate``) through the forwarder."""
    settings = {"kind": "dc09", "name": "centre", "url": f"tcp://127.0.0.1:{port}"}
    settings |= {"account": "9999", "null_interval_s": 0} | ({"key": key} if key else {})
    cfg = TypeAdapter(kinds.forwarder_settings()).validate_python(settings)
    journal = Journal(
        work / f"journal-{time.monotonic_ns()}.sqlite3",
        route=lambda _: ["centre"],
        max_size_bytes=10**10,
    )
    cursor = OutboxCursor(journal, "centre")
    shops = {"S00011": ShopCard("S00011", "shop", 0, 0, "L", "M", "s")}
    forwarder = Dc09Forwarder(
        cfg, context=ForwarderContext("GW", "L", shops, dict, 60), cursor=cursor
    )
    acked: dict[int, float] = {}
    plain_ack = cursor.ack
    done = asyncio.Event()

    def ack(row: Any) -> None:  # noqa: ANN401 - an OutboxRow
        acked[row.seq] = time.perf_counter()
        plain_ack(row)
        if len(acked) == count:
            done.set()

    cursor.ack = ack  # type: ignore[method-assign]
    sent: list[float] = []
    async with asyncio.TaskGroup() as tg:
        writer = tg.create_task(journal.run(), name="journal")
        runner = tg.create_task(forwarder.run(), name="forwarder")
        await forwarder.link_up.wait()
        start = time.perf_counter()
        for i in range(count):
            if rate is not None:
                await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            sent.append(time.perf_counter())
            await journal.append(panic(zone=str(i % 999)))
        await done.wait()
        elapsed = max(acked.values()) - start
        runner.cancel()
        writer.cancel()
    cursor.close()
    return count / elapsed, [acked[i + 1] - sent[i] for i in range(count)]


async def floor_run(
    port: int, key: str | None, *, count: int, rate: float | None
) -> tuple[float, list[float]]:
    """The same, for ready-made frames written by a bare TCP loop."""
    aes = bytes.fromhex(key) if key else None
    now = utc_now()
    frames = [
        encode(
            Message(
                Token.ADM_CID,
                i % 9999 + 1,
                "777",
                data=contact_id("777", EventData(1, 120, 1, i % 999, "PA")),
                timestamp=now,
            ),
            aes,
        )
        for i in range(count)
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    buffer = bytearray()
    latencies = []
    start = time.perf_counter()
    for i, frame in enumerate(frames):
        if rate is not None:
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        writer.write(frame)
        while (reply := split_frame(buffer)) is None:
            buffer += await reader.read(4096)
        if b"ACK" not in reply:
            raise RuntimeError(f"floor frame {i} not acknowledged: {reply!r}")
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    writer.close()
    return count / elapsed, latencies


async def measure(work: Path, *, backlog: int, paced: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode, key in (("clear", None), ("aes256", KEY_HEX)):
        figures: dict[str, Any] = {}
        for who in ("floor", "gateway"):
            receiver = ReceiverProcess(work / f"receiver-{mode}-{who}.sqlite3", key=key)
            receiver.start()
            try:
                if who == "floor":
                    rate, _ = await floor_run(receiver.port, key, count=backlog, rate=None)
                    _, lat = await floor_run(receiver.port, key, count=paced, rate=RATE)
                else:
                    rate, _ = await gateway_run(work, receiver.port, key, count=backlog, rate=None)
                    _, lat = await gateway_run(work, receiver.port, key, count=paced, rate=RATE)
            finally:
                receiver.stop()
            figures[who] = {"events_per_s": round(rate, 1), "ack_latency_ms_at_50": summary_ms(lat)}
        figures["ratio"] = {
            "events_per_s": round(
                figures["gateway"]["events_per_s"] / figures["floor"]["events_per_s"], 2
            ),
            "p99": round(
                figures["gateway"]["ack_latency_ms_at_50"]["p99"]
                / figures["floor"]["ack_latency_ms_at_50"]["p99"],
                2,
            ),
        }
        out[mode] = figures
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    args = ap.parse_args()
    backlog, paced = (500, 150) if args.quick else (2000, 500)
    with tempfile.TemporaryDirectory(prefix="lianfang-bench-dc09-") as tmp:
        figures = asyncio.run(measure(Path(tmp), backlog=backlog, paced=paced))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "bench": "dc09",
        "at": stamp,
        "backlog_events": backlog,
        "paced_events": paced,
        "rate_per_s": RATE,
        "figures": figures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"dc09-{stamp}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    for mode, f in figures.items():
        print(
            f"{mode:7} gateway {f['gateway']['events_per_s']:8.1f} ev/s"
            f" (floor {f['floor']['events_per_s']:8.1f}, x{f['ratio']['events_per_s']});"
            f" p99 event→ACK at 50/s {f['gateway']['ack_latency_ms_at_50']['p99']:.2f} ms"
            f" (floor {f['floor']['ack_latency_ms_at_50']['p99']:.2f} ms, x{f['ratio']['p99']})"
        )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
