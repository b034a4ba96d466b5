"""The webhook forwarder against a real HTTPS server on loopback, its certificate from a test PKI."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gateway.events import EventKind
from tests.certs import make_pki
from tests.clients import wait_until
from tests.forwarder_rig import aio, event, forwarding

SECRET = "a shared secret of the platform"


@dataclass
class Platform:
    """What the HTTPS server answers, in turn (then 200), and what it received."""

    script: list[tuple[int, str] | float | str] = field(default_factory=list)
    """(status, body) answers; a float: that long silent first; "drip": a body byte every 0.3 s."""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    """The status of each answer, in the order of ``received``."""


@contextmanager
def https_platform(tmp_path: Path, platform: Platform) -> Iterator[tuple[int, Path]]:
    pki = make_pki(tmp_path / "pki")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            platform.received.append((dict(self.headers), body))
            step = platform.script.pop(0) if platform.script else (200, "{}")
            if step == "drip":
                with contextlib.suppress(OSError):
                    self.send_response(200)
                    self.send_header("Content-Length", "10")
                    self.end_headers()
                    for _ in range(10):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                        time.sleep(0.3)
                return
            if isinstance(step, float):
                time.sleep(step)  # slower than the client's timeout
                step = (200, "{}")
            assert isinstance(step, tuple)
            status, text = step
            platform.answered.append(status)
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                self.end_headers()
                self.wfile.write(text.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, name="https-platform", daemon=True)
    thread.start()
    try:
        yield server.server_address[1], pki.ca
    finally:
        server.shutdown()
        server.server_close()


def webhook(port: int, ca: Path, **extra: object) -> dict[str, object]:
    return {
        "kind": "webhook",
        "url": f"https://127.0.0.1:{port}/alarms",
        "secret": SECRET,
        "ca_file": str(ca),
        "timeout_s": 2,
    } | extra


@aio
async def test_signed_posts_acknowledged(tmp_path: Path) -> None:
    """Each event is one POST: HMAC-SHA256 over the body verifies, Idempotency-Key is the id."""
    platform = Platform()
    sent = [event(EventKind.PANIC), event(EventKind.INTRUSION, zone="3")]
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca)) as rig:
            await rig.send(*sent)
            await wait_until(lambda: len(platform.received) == 2, 20, "two POSTs")
            await wait_until(lambda: rig.all_closed(2), 10, "both acknowledged")
    for ev, (headers, body) in zip(sent, platform.received, strict=True):
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Lianfang-Signature"] == f"sha256={expected}"
        assert headers["Idempotency-Key"] == ev.id
        payload = json.loads(body)
        assert (payload["id"], payload["kind"], payload["shop"]["name"]) == (
            ev.id,
            ev.kind.value,
            "Tea house",
        )


@pytest.mark.parametrize("status", [400, 409, 413, 422])
@aio
async def test_4xx_about_the_event_is_given_up_with_the_body(tmp_path: Path, status: int) -> None:
    """A 400, 409, 413 or 422 refuses that event for good, with the platform's words; the next goes on."""
    platform = Platform(script=[(status, '{"error": "unknown shop"}')])
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca)) as rig:
            await rig.send(event(EventKind.PANIC), event(EventKind.FIRE))
            await wait_until(lambda: rig.all_closed(2), 20, "both closed")
            rows = rig.delivery_rows()
    assert len(platform.received) == 2  # the refused one was not sent again
    (_, acked1, error1), (_, acked2, error2) = rows
    assert acked1 is not None
    assert error1 == f'given up: HTTP {status}: {{"error": "unknown shop"}}'
    assert (acked2 is not None, error2) == (True, None)
    assert rig.forwarder.refused == 1


@aio
async def test_5xx_and_timeouts_are_retried(tmp_path: Path) -> None:
    """A 503, then a response slower than the timeout: the event is sent again until a 200."""
    platform = Platform(script=[(503, "busy"), 3.0])
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca, timeout_s=1)) as rig:
            panic = event(EventKind.PANIC)
            await rig.send(panic)
            await wait_until(lambda: rig.all_closed(1), 30, "delivered at last")
            rows = rig.delivery_rows()
    keys = {headers["Idempotency-Key"] for headers, _ in platform.received}
    assert keys == {panic.id}
    assert len(platform.received) == 3
    assert rows[0][1] is not None
    assert rig.changes[0][0] is False  # the failures were reported as a link fault


@aio
async def test_a_dripping_answer_counts_as_a_timeout(tmp_path: Path) -> None:
    """timeout_s bounds the whole POST: an answer dripped over 3 s is a timeout, sent again."""
    platform = Platform(script=["drip"])
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca, timeout_s=1)) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: rig.all_closed(1), 30, "delivered at last")
    assert len(platform.received) == 2
    assert rig.changes[0][0] is False


@aio
async def test_a_refused_secret_or_url_is_retried_not_given_up(tmp_path: Path) -> None:
    """401 and 404 would meet every alarm alike: the event waits, reported as a link fault."""
    platform = Platform(script=[(401, "bad signature"), (404, "no such path")])
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca)) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: rig.all_closed(1), 30, "delivered at last")
            rows = rig.delivery_rows()
    assert len(platform.received) == 3
    assert rows[0][2] is None or not rows[0][2].startswith("given up")
    assert rig.forwarder.refused == 0
    assert rig.changes[0] == (False, f"https://127.0.0.1:{port}/alarms: HTTP 401 bad signature")


@pytest.mark.parametrize("status", [403, 429])
@aio
async def test_a_forbidden_or_too_many_requests_is_retried(tmp_path: Path, status: int) -> None:
    """403 and 429 speak of us, not of the event: it waits, reported as a link fault, then goes."""
    platform = Platform(script=[(status, "not now")])
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca)) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: rig.all_closed(1), 30, "delivered at last")
            rows = rig.delivery_rows()
    assert platform.answered == [status, 200]
    assert rows[0][1] is not None
    assert not (rows[0][2] or "").startswith("given up")
    assert rig.forwarder.refused == 0
    assert rig.changes[0] == (False, f"https://127.0.0.1:{port}/alarms: HTTP {status} not now")


@aio
async def test_after_a_429_each_alarm_is_delivered_once(tmp_path: Path) -> None:
    """Three alarms meet a 429, then 200s: the platform accepts each exactly once."""
    platform = Platform(script=[(429, "slow down")])
    alarms = [event(EventKind.PANIC), event(EventKind.FIRE), event(EventKind.INTRUSION, zone="2")]
    with https_platform(tmp_path, platform) as (port, ca):
        async with forwarding(tmp_path, **webhook(port, ca)) as rig:
            await rig.send(*alarms)
            await wait_until(lambda: rig.all_closed(3), 30, "all three delivered")
            rows = rig.delivery_rows()
    accepted = [
        headers["Idempotency-Key"]
        for (headers, _), status in zip(platform.received, platform.answered, strict=True)
        if status == 200
    ]
    assert sorted(accepted) == sorted(ev.id for ev in alarms)
    assert platform.answered.count(429) == 1
    assert [acked is not None for _, acked, _ in rows] == [True, True, True]
    assert not [error for _, _, error in rows if (error or "").startswith("given up")]


@aio
async def test_untrusted_certificate_fails_closed(tmp_path: Path) -> None:
    """A server whose CA is not trusted gets nothing: the event waits in the outbox."""
    platform = Platform()
    other_ca = make_pki(tmp_path / "other").ca
    with https_platform(tmp_path, platform) as (port, _ca):
        async with forwarding(tmp_path, **webhook(port, other_ca)) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: bool(rig.changes), 20, "a link fault")
            assert rig.pending() == 1
    assert platform.received == []
    assert "CERTIFICATE_VERIFY_FAILED" in rig.changes[0][1]
