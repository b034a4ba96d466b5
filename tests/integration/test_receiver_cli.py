"""`lianfang receiver` as a real process: it answers DC-09 and prints each alarm."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from gateway.dc09 import Message, Token, decode, encode
from gateway.events import utc_now


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
