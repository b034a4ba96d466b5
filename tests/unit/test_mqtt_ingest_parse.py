"""The MQTT ingest parser: every accepted shape becomes the right event, every bad one a named rejection."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from drivers.base import DriverContext
from drivers.mqtt_ingest import MqttIngestDriver, Rejected
from drivers.mqtt_ingest_config import MqttIngestConfig
from gateway.events import EventKind
from gateway.mqtt.client import BrokerConfig

TOPIC = "lianfang/v1/shop/S00001/event"


@pytest.fixture
def driver() -> MqttIngestDriver:
    context = DriverContext(
        "GW-T", BrokerConfig(url="mqtt://127.0.0.1:1883"), {"S00001": frozenset({"panel-1"})}
    )
    return MqttIngestDriver(MqttIngestConfig(kind="mqtt_ingest", name="shops"), context=context)


def test_a_full_message_becomes_an_event_with_an_origin_key(driver):
    """Device time, zone, seq and extra attributes are kept; the origin key names the device message."""
    # An hour ago: a device time more than a day old is not believed (see test_clock.py).
    ts = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0).isoformat()
    body = {
        "device_id": "panel-1",
        "kind": "panic",
        "zone": 2,
        "seq": 17,
        "ts": ts,
        "battery": 3.02,
    }
    event, origin = driver.parse(TOPIC, json.dumps(body).encode())
    assert (event.shop_id, event.device_id, event.kind, event.zone) == (
        "S00001",
        "panel-1",
        EventKind.PANIC,
        "2",
    )
    assert event.occurred_at.isoformat() == ts
    assert event.attrs == {"battery": 3.02, "seq": 17}
    assert origin == f"shops/S00001/panel-1/17/{ts}"
    assert len(event.id) == 26


def test_a_device_clock_far_ahead_keeps_gateway_time(driver):
    """An alarm is never dropped for a wrong device clock; the raw reading is kept for audit."""
    body = {"device_id": "panel-1", "kind": "panic", "ts": "2099-01-01T00:00:00Z"}
    event, _ = driver.parse(TOPIC, json.dumps(body).encode())
    assert event.occurred_at == event.received_at
    assert event.attrs["device_ts"] == "2099-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("topic", "payload", "reason", "says"),
    [
        (TOPIC, b"{nope", "malformed", "payload: Invalid JSON"),
        (TOPIC, b"\xff\xfe", "malformed", "payload: Invalid JSON"),
        (TOPIC, b"[]", "invalid", "payload: Input should be an object"),
        (
            TOPIC,
            b'{"device_id": 1, "kind": "panic"}',
            "invalid",
            "device_id: Input should be a valid string",
        ),
        (
            TOPIC,
            b'{"device_id": "panel-1", "kind": "boom"}',
            "invalid",
            "kind: Input should be 'panic'",
        ),
        (
            TOPIC,
            b'{"device_id": "panel-1", "kind": "panic", "seq": -1}',
            "invalid",
            "seq: Input should be greater than or equal to 0",
        ),
        (
            TOPIC,
            b'{"device_id": "panel-1", "kind": "supervision_lost"}',
            "invalid",
            "kind supervision_lost is the gateway's own",
        ),
        (
            TOPIC,
            b'{"device_id": "panel-2", "kind": "panic"}',
            "unknown_device",
            "shop S00001 has no device 'panel-2'",
        ),
        (
            "lianfang/v1/shop/S77777/event",
            b'{"device_id": "panel-1", "kind": "panic"}',
            "unknown_shop",
            "shop 'S77777' is not served by this gateway",
        ),
        (TOPIC, b"{" + b" " * 5000 + b"}", "oversize", "5002 bytes, limit 4096"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(driver, topic, payload, reason, says):
    """Each bad message raises Rejected with its counter and words naming what and where."""
    with pytest.raises(Rejected) as caught:
        driver.parse(topic, payload)
    assert caught.value.reason == reason
    assert str(caught.value).startswith(says), str(caught.value)


def test_a_panel_that_restarts_its_seq_is_not_taken_for_a_repeat(driver):
    """Same seq, new device time: a new key, so a panic after a power cut is never dropped."""
    before = {"device_id": "panel-1", "kind": "panic", "seq": 0, "ts": "2026-11-22T01:00:00+00:00"}
    after = {**before, "ts": "2026-11-22T02:00:00+00:00"}
    _, key_before = driver.parse(TOPIC, json.dumps(before).encode())
    _, key_after = driver.parse(TOPIC, json.dumps(after).encode())
    assert key_before != key_after


def test_without_a_device_clock_only_a_broker_redelivery_is_compared_by_seq(driver):
    """No ts: a first delivery has no key (never dropped); a DUP redelivery is keyed by seq."""
    body = json.dumps({"device_id": "panel-1", "kind": "panic", "seq": 5}).encode()
    assert driver.parse(TOPIC, body)[1] is None
    assert driver.parse(TOPIC, body, redelivered=True)[1] == "shops/S00001/panel-1/5/"


def test_a_receive_window_a_storage_shortage_could_stop_is_refused_with_its_reason():
    """Refused messages stay unacked through a shortage; reading resumes at half the window."""
    with pytest.raises(ValidationError) as caught:
        MqttIngestConfig.model_validate(
            {"kind": "mqtt_ingest", "name": "shops", "receive_maximum": 150}
        )
    [error] = caught.value.errors()
    assert error["loc"] == ("receive_maximum",)
    assert "400" in error["msg"]
    taken = MqttIngestConfig.model_validate(
        {"kind": "mqtt_ingest", "name": "shops", "receive_maximum": 400}
    )
    assert taken.receive_maximum == 400
