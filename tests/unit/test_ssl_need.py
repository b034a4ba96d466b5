"""Whether the daemon needs ``ssl``: the launcher's look at the text, the config's own answer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.launch import SSL_WORDS, may_need_ssl
from gateway.config.file import load_config
from tests.field import MODBUS_DOOR, bind_field_devices
from tests.harness import init_config, spelled_in_escapes

BLOCK = "mqtt://127.0.0.1:1883"
TLS_POLICE = {
    "kind": "police_mqtt",
    "name": "police",
    "broker": {"url": "mqtts://police.example:8883", "tls": {"ca_file": "ca.pem"}},
}
WEBHOOK = {
    "kind": "webhook",
    "name": "hook",
    "url": "https://platform.example/in",
    "secret": "0123456789abcdef",
}
USING_SSL: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {
    "a police broker over TLS": ({"forwarders": [TLS_POLICE]}, []),
    "a webhook": ({"forwarders": [WEBHOOK]}, []),
    "the status page": ({"status_page": {"listen": "127.0.0.1:8080"}}, []),
    "a Modbus bus (pymodbus imports ssl)": ({}, [MODBUS_DOOR]),
}
"""Overrides of the default config, and field drivers added to it."""


def test_the_default_config_needs_no_ssl(tmp_path: Path) -> None:
    path = init_config(tmp_path, block_url=BLOCK, police_url="mqtt://127.0.0.1:1884")
    assert not may_need_ssl(path)
    assert not load_config(path).needs_ssl()


def config_using(tmp_path: Path, using: tuple[dict[str, Any], list[dict[str, Any]]]) -> Path:
    overrides, drivers = using
    path = init_config(tmp_path, block_url=BLOCK, police_url=None, **overrides)
    bind_field_devices(path, {"S00012": [("io-1", "io_module")]}, drivers)
    path.chmod(0o600)  # a webhook's secret is in it
    return path


@pytest.mark.parametrize("using", USING_SSL.values(), ids=USING_SSL.keys())
def test_a_config_using_ssl_says_so_in_its_text_and_its_model(
    tmp_path: Path, using: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    path = config_using(tmp_path, using)
    assert may_need_ssl(path)
    assert load_config(path).needs_ssl()


@pytest.mark.parametrize("using", USING_SSL.values(), ids=USING_SSL.keys())
def test_words_in_escapes_hide_from_the_text_not_from_the_model(
    tmp_path: Path, using: tuple[dict[str, Any], list[dict[str, Any]]]
) -> None:
    # What the daemon's second look, after validation, is for (decision 921).
    path = config_using(tmp_path, using)
    spelled_in_escapes(path, tuple(word.decode() for word in SSL_WORDS))
    assert not may_need_ssl(path)
    assert load_config(path).needs_ssl()


def test_an_unreadable_config_may_need_ssl(tmp_path: Path) -> None:
    assert may_need_ssl(tmp_path / "missing.yaml")


WOULD_BLOCK_WITHOUT_SSL = """
import socket, sys
from gateway.cli.launch import leave_out_ssl
leave_out_ssl()
import paho.mqtt.client as mqtt
assert "_ssl" not in sys.modules
client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
client._sock, _ = socket.socketpair()
client._sock.setblocking(False)
try:
    client._sock_recv(1)
except BlockingIOError:
    print("would block")
"""


def test_paho_without_ssl_reads_an_empty_socket_as_would_block() -> None:
    # paho's read names ssl.SSLWantReadError in an except clause: looked up on every
    # would-block, it made the link fail (and come back) without a stand-in.
    out = subprocess.run(
        [sys.executable, "-c", WOULD_BLOCK_WITHOUT_SSL], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "would block"
