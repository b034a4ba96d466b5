"""`lianfang receiver` as a real process: it answers DC-09 and prints each alarm."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import aiomqtt

from gateway.events import utc_now
from lab.process import ReceiverProcess
from protocols.dc09 import Message, Token, decode, encode
from tests.clients import wait_until
from tests.harness import READY_S


def test_receiver_command_acks_and_shows_alarms(tmp_path: Path) -> None:
    """A panic sent to `lianfang receiver --dc09 0 --key ...` is ACKed (encrypted) and listed."""
    key = "00112233445566778899AABBCCDDEEFF"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "receiver",
            "--dc09",
            "0",
            "--key",
            key,
            "--db",
            str(tmp_path / "r.sqlite3"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        port = int(re.search(r"tcp://127\.0\.0\.1:(\d+)", first)[1])  # type: ignore[index]
        message = Message(Token.ADM_CID, 12, "1234", data="#1234|1120 01 003", timestamp=utc_now())
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(encode(message, bytes.fromhex(key)))
            reply = decode(sock.recv(1024), {"": bytes.fromhex(key)})
        assert (reply.token, reply.sequence, reply.account, reply.encrypted) == (
            Token.ACK,
            12,
            "1234",
            True,
        )
        line = proc.stdout.readline()
        assert "account=1234 code=1120 zone=3" in line
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_receiver_stores_the_mqtt_feed_once_per_event(tmp_path: Path, police_broker) -> None:
    """With --mqtt the receiver stores police-feed events, each id once however often it comes."""
    db = tmp_path / "feed.sqlite3"
    receiver = ReceiverProcess(db, mqtt=police_broker.url)
    receiver.start(READY_S)
    try:
        body = {
            "id": "01J00000000000000000000001",
            "kind": "panic",
            "shop_id": "S00011",
            "zone": "1",
        }

        def stored() -> list[tuple[str, str]]:
            with sqlite3.connect(db) as conn:
                return conn.execute("SELECT event_id, kind FROM alarms WHERE via='mqtt'").fetchall()

        async def publish() -> None:
            async with aiomqtt.Client(police_broker.host, police_broker.port) as client:
                # READY=1 comes before the subscription: publish again until one is
                # stored (a retry cadence, bounded), then a few copies.
                deadline = time.monotonic() + 30
                while not stored() and time.monotonic() < deadline:
                    await client.publish("police/v1/L1/GW-001/events", json.dumps(body), qos=1)
                    await asyncio.sleep(0.2)
                for _ in range(3):
                    await client.publish("police/v1/L1/GW-001/events", json.dumps(body), qos=1)
                await client.publish("police/v1/L1/GW-001/events", b"not json", qos=1)
                await client.publish(
                    "police/v1/L1/GW-001/events", json.dumps({**body, "id": "other"}), qos=1
                )
                await wait_until(lambda: len(stored()) == 2, 10, "the second event")

        asyncio.run(publish())
        assert stored() == [(body["id"], "panic"), ("other", "panic")]
    finally:
        receiver.stop()
