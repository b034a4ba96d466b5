"""The local status page: the real daemon serving it, urllib on its API, headless Chromium on the page."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
import yaml

from lab.broker import free_port
from tests.certs import make_pki
from tests.clients import expected_nearest, running, survey_rows, wait_until
from tests.harness import SURVEY, init_config

SHOP = "S00011"
WAIT_S = 30.0
"""How long a wait on the page may take: far above a quiet machine's, for a loaded CI runner."""
FIELDS = {"id", "name", "lat", "lon", "state", "reason"}


def get(
    url: str, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, bytes]:
    """GET ``url``; its status and body, errors included."""
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(url: str, token: str | None = None) -> Any:
    status, body = get(url, token)
    assert status == 200, body
    return json.loads(body)


def raw(port: int, data: bytes) -> bytes:
    """Send ``data`` as it is on a fresh connection; the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def serving(base: str, context: ssl.SSLContext | None = None) -> None:
    async def up() -> None:
        def answers() -> bool:
            try:
                return get(base + "/", context=context)[0] == 200
            except OSError:
                return False

        await wait_until(answers, WAIT_S, f"the status page on {base}")

    asyncio.run(up())


def panic_alerts_neighbours_and_police(block_url: str, police_url: str) -> None:
    """A panic at SHOP reaches the police and each of its 10 nearest shops."""
    near = expected_nearest(SHOP)

    async def scenario() -> None:
        async with running(block_url=block_url, police_url=police_url, shops=[SHOP, *near]) as (
            panels,
            platform,
        ):
            assert platform is not None
            await panels[SHOP].send("panic", zone="1")
            await wait_until(
                lambda: bool(platform.by_id) and all(panels[s].notices for s in near),
                WAIT_S,
                "the police event and 10 notices",
            )

    asyncio.run(scenario())


@pytest.fixture
def page_port() -> int:
    return free_port()


def test_api_answers_status_shops_and_events(block_broker, police_broker, start_gateway, page_port):
    """/api/status is status.json's snapshot, /api/shops every shop with a state, /api/events the newest events."""
    gw = start_gateway(status_page={"listen": f"127.0.0.1:{page_port}"})
    base = f"http://127.0.0.1:{page_port}"
    serving(base)
    rows = survey_rows()

    async def panic() -> None:
        async with running(block_url=block_broker.url, shops=[SHOP]) as (panels, _):
            await panels[SHOP].send("panic", zone="1")
            await wait_until(
                lambda: any(e["kind"] == "panic" for e in get_json(base + "/api/events?limit=5")),
                WAIT_S,
                "the panic in /api/events",
            )

    asyncio.run(panic())
    status = get_json(base + "/api/status")
    assert status["gateway_id"] == "GW-001"
    assert set(status) - {"uptime_s"} >= set(gw.status()) - {"uptime_s"}
    assert status["events"] >= 1
    shops = get_json(base + "/api/shops")
    assert [s["id"] for s in shops] == [r["shop_id"] for r in rows]
    assert all(set(s) == FIELDS for s in shops)
    by_id = {s["id"]: s for s in shops}
    assert by_id[SHOP]["state"] == "alarm"
    assert by_id[SHOP]["reason"] == "panic"
    assert by_id[SHOP]["name"] == next(r["name"] for r in rows if r["shop_id"] == SHOP)
    # Nothing was walk-tested: every other shop says so.
    assert {s["state"] for s in shops if s["id"] != SHOP} == {"untested"}
    events = get_json(base + "/api/events?limit=3")
    assert 1 <= len(events) <= 3
    assert events[0]["seq"] > events[-1]["seq"] or len(events) == 1
    assert any(e["kind"] == "panic" and e["shop_id"] == SHOP for e in events)


def test_bad_requests_are_answered_400_and_counted(start_gateway, page_port):
    """Garbage, an oversize head, a POST and a bad limit are refused and counted; the page keeps serving."""
    start_gateway(status_page={"listen": f"127.0.0.1:{page_port}"})
    base = f"http://127.0.0.1:{page_port}"
    serving(base)
    assert raw(page_port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    oversize = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 10_000 + b"\r\n\r\n"
    assert raw(page_port, oversize).startswith(b"HTTP/1.1 400 ")
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(40)) + b"\r\n"
    assert raw(page_port, many).startswith(b"HTTP/1.1 400 ")
    assert raw(page_port, b"POST /api/status HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert get(base + "/api/events?limit=0")[0] == 400
    assert get(base + "/api/events?limit=x")[0] == 400
    assert get(base + "/api/nothing")[0] == 404
    counters = get_json(base + "/api/status")["status_page"]
    assert counters["bad_requests"] == 7


def test_token_is_required_when_set(start_gateway, page_port):
    """With a token, the API answers 401 without it or with a wrong one, 200 with it; the static page needs none."""
    start_gateway(status_page={"listen": f"127.0.0.1:{page_port}", "token": "s3cret-token"})
    base = f"http://127.0.0.1:{page_port}"
    serving(base)
    assert get(base + "/api/status")[0] == 401
    assert get(base + "/api/status", token="s3cret-tokeX")[0] == 401
    assert get(base + "/api/status", token="s3cret-token")[0] == 200
    assert get(base + "/api/map", token="s3cret-token")[0] == 200
    assert get_json(base + "/api/status", token="s3cret-token")["status_page"]["unauthorized"] == 2


@pytest.mark.parametrize(
    ("page", "refused"),
    [
        ({"listen": "0.0.0.0:8080"}, "status_page.token"),
        ({"listen": "0.0.0.0:8080", "token": "t"}, "tls_cert and tls_key, or behind_proxy"),
        (
            {"listen": "0.0.0.0:8443", "token": "t", "tls_cert": "no.pem", "tls_key": "no.key"},
            "no such file",
        ),
    ],
)
def test_check_refuses_an_unsecured_page_off_loopback(tmp_path, page, refused):
    """`lianfang check` names the file, line and key of a non-loopback page without token and TLS, or with TLS files missing."""
    config = init_config(tmp_path, block_url="mqtt://127.0.0.1:1883", police_url=None)
    data = yaml.safe_load(config.read_text())
    data["status_page"] = page
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    line = config.read_text().splitlines().index("status_page:") + 1
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    said = [x for x in (done.stdout + done.stderr).splitlines() if refused in x]
    assert said, done.stdout + done.stderr
    where = re.match(rf"{re.escape(str(config))}:(\d+): status_page", said[0])
    assert where, said[0]
    # The section's line, or the line of its key at fault.
    assert line <= int(where.group(1)) <= line + len(page)


def test_gateway_keeps_alerting_while_50_clients_hold_connections(
    block_broker, police_broker, start_gateway, page_port
):
    """50 connections held open on the page: a panic still reaches its 10 neighbours and the police."""
    start_gateway(status_page={"listen": f"127.0.0.1:{page_port}"})
    base = f"http://127.0.0.1:{page_port}"
    serving(base)
    held = [socket.create_connection(("127.0.0.1", page_port), timeout=10) for _ in range(50)]
    try:
        for sock in held:
            sock.sendall(b"GET /api/status HTTP/1.1\r\n")  # a head never finished
        panic_alerts_neighbours_and_police(block_broker.url, police_broker.url)
        assert get(base + "/api/status")[0] == 200
    finally:
        for sock in held:
            sock.close()


def test_page_in_chromium_shows_a_panic_and_a_driver_fault(
    tmp_path, block_broker, start_field_gateway, page_port, chromium
):
    """Headless Chromium: no console errors, a panic turns its shop red, a driver fault shows its reason, a warning shows."""
    missing = tmp_path / "no-such-tty"
    # A folder where the block link's state file goes: a warning for the page to show.
    (tmp_path / "state" / "shops-link-up.json").mkdir(parents=True)
    start_field_gateway(
        {"S00040": [("pb-9", "panic_button")]},
        [
            {
                "kind": "line_serial",
                "name": "bus-1",
                "port": str(missing),
                "devices": [{"address": 9, "shop_id": "S00040", "device_id": "pb-9"}],
            }
        ],
        status_page={"listen": f"127.0.0.1:{page_port}"},
    )
    base = f"http://127.0.0.1:{page_port}"
    serving(base)
    tab = chromium.open(base + "/")
    chromium.wait_until(
        tab, "document.querySelectorAll('.shop.untested').length > 80", "shops drawn", WAIT_S
    )
    # The driver's link is down with the reason the serial port gave.
    chromium.wait_until(
        tab,
        "document.getElementById('links').textContent.includes('driver[bus-1]')",
        "the driver's link listed",
        WAIT_S,
    )
    links = chromium.evaluate(tab, "document.getElementById('links').textContent")
    assert "down" in links
    assert str(missing) in links
    chromium.wait_until(
        tab,
        "document.getElementById('warnings').textContent.includes('cannot save the link state')",
        "the warning shown",
        WAIT_S,
    )
    assert chromium.evaluate(tab, "document.getElementById('warnings-section').hidden") is False

    async def panic() -> float:
        async with running(block_url=block_broker.url, shops=[SHOP]) as (panels, _):
            await panels[SHOP].send("panic", zone="1")
            return await asyncio.to_thread(
                chromium.wait_until,
                tab,
                f"document.getElementById('shop-{SHOP}').dataset.state === 'alarm'",
                "the shop turning red",
                WAIT_S,
            )

    took = asyncio.run(panic())
    fill = chromium.evaluate(
        tab, f"getComputedStyle(document.querySelector('#shop-{SHOP} circle')).fill"
    )
    assert fill == "rgb(238, 0, 0)"
    shot = chromium.screenshot(tab, tmp_path / "status-page.png")
    print(f"status page screenshot: {shot}; the panic showed in {took:.2f} s")  # noqa: T201
    assert shot.stat().st_size > 10_000
    assert chromium.console_errors(tab) == []
    assert chromium.evaluate(tab, "document.body.dataset.errors || ''") == ""


def test_init_status_page_turns_it_on_on_loopback(tmp_path):
    """`lianfang init --status-page` writes a loopback status page that `lianfang check` accepts."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "init",
            "--survey",
            str(SURVEY),
            "--gateway",
            "GW-001",
            "--dir",
            str(tmp_path),
            "--status-page",
        ],
        check=True,
        capture_output=True,
    )
    config = tmp_path / "lianfang.yaml"
    assert yaml.safe_load(config.read_text())["status_page"] == {"listen": "127.0.0.1:8080"}
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_page_over_tls_with_a_token(tmp_path, start_gateway, page_port):
    """With tls_cert and tls_key the page speaks HTTPS only; a plain-HTTP client gets no answer and the page serves on."""
    pki = make_pki(tmp_path / "pki")
    token = "tls-page-token"
    start_gateway(
        status_page={
            "listen": f"127.0.0.1:{page_port}",
            "token": token,
            "tls_cert": str(pki.server_cert),
            "tls_key": str(pki.server_key),
        }
    )
    context = ssl.create_default_context(cafile=str(pki.ca))
    base = f"https://127.0.0.1:{page_port}"
    serving(base, context)
    assert not raw(page_port, b"GET /api/status HTTP/1.1\r\n\r\n").startswith(b"HTTP/")
    assert get(base + "/api/status", context=context)[0] == 401
    status = get(base + "/api/status", token=token, context=context)
    assert status[0] == 200
    assert json.loads(status[1])["gateway_id"] == "GW-001"


def test_a_page_that_cannot_serve_leaves_the_alarms_working(
    block_broker, police_broker, start_gateway, page_port
):
    """The page's port taken: the panic still reaches neighbours and police, the status says why; the page comes back when the port is free."""
    squatter = socket.create_server(("127.0.0.1", page_port))
    try:
        gw = start_gateway(status_page={"listen": f"127.0.0.1:{page_port}"})
        panic_alerts_neighbours_and_police(block_broker.url, police_broker.url)

        async def trouble() -> None:
            await wait_until(
                lambda: "status-page" in gw.status()["link_errors"], WAIT_S, "the page's trouble"
            )

        asyncio.run(trouble())
        status = gw.status()
        assert status["links"]["status-page"] is False
        assert "address already in use" in status["link_errors"]["status-page"].lower()
    finally:
        squatter.close()
    serving(f"http://127.0.0.1:{page_port}")

    async def recovered() -> None:
        await wait_until(lambda: gw.status()["links"]["status-page"], WAIT_S, "the page back up")

    asyncio.run(recovered())
