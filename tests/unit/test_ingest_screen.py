"""The ingest's screen: junk dropped as it is read, alarms urgent, a noisy shop's excess throttled."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime, timedelta

import aiomqtt
from paho.mqtt.client import MQTTMessage

from drivers.base import DriverContext
from drivers.mqtt_ingest import MqttIngestDriver, PanelMessage
from drivers.mqtt_ingest_config import MqttIngestConfig
from gateway.events import Event, utc_now
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import Lane, MessageLanes
from gateway.ratelimit import WindowCap
from gateway.storage import StorageReserve
from tests.clients import wait_until

CAP = 3


def message(shop: str, payload: bytes) -> MQTTMessage:
    """A message as paho hands it to the link."""
    received = MQTTMessage(mid=1, topic=f"lianfang/v1/shop/{shop}/event".encode())
    received.payload = payload
    received.qos = 1
    return received


def event(kind: str) -> bytes:
    return json.dumps({"device_id": "panel-1", "kind": kind}).encode()


def driver() -> MqttIngestDriver:
    context = DriverContext(
        "GW-T",
        BrokerConfig(url="mqtt://127.0.0.1:1883"),
        {"S1": frozenset({"panel-1"}), "S2": frozenset({"panel-1"})},
    )
    config = MqttIngestConfig(kind="mqtt_ingest", name="shops", shop_event_cap=CAP)
    return MqttIngestDriver(config, context=context)


def test_junk_is_dropped_and_counted_by_reason() -> None:
    """Not JSON, an unknown shop, an unknown device: no lane, each counted under its reason."""
    ingest = driver()
    assert ingest.screen(message("S1", b"\x00\xff")) is None
    assert ingest.screen(message("S9", event("panic"))) is None
    unknown_device = json.dumps({"device_id": "nope", "kind": "panic"}).encode()
    assert ingest.screen(message("S1", unknown_device)) is None
    assert ingest.rejected == {"malformed": 1, "unknown_shop": 1, "unknown_device": 1}


def test_alarms_are_urgent_and_never_throttled() -> None:
    """Past its cap a shop's door events are dropped; its panics and tamper still pass."""
    ingest = driver()
    lanes = [ingest.screen(message("S1", event("door_open"))) for _ in range(CAP + 2)]
    assert lanes == [Lane.ROUTINE] * CAP + [None, None]
    assert ingest.rejected["throttled"] == 2
    assert ingest.screen(message("S1", event("panic"))) is Lane.URGENT
    assert ingest.screen(message("S1", event("duress"))) is Lane.URGENT
    assert ingest.screen(message("S1", event("tamper"))) is Lane.ROUTINE
    assert ingest.screen(message("S2", event("door_open"))) is Lane.ROUTINE  # another shop


def door_at(when: datetime) -> bytes:
    return json.dumps(
        {"device_id": "panel-1", "kind": "door_open", "ts": when.isoformat()}
    ).encode()


def doors_at(
    ingest: MqttIngestDriver, start: datetime, step: timedelta, n: int
) -> list[Lane | None]:
    """``n`` door events of shop S1 stamped ``step`` apart from ``start``, read at once."""
    return [ingest.screen(message("S1", door_at(start + i * step))) for i in range(n)]


def test_a_backlog_read_at_once_passes_whole_after_a_link_drop() -> None:
    """The broker's backlog for a gateway that was down: sent over minutes, read in a burst.

    Ten door events of one shop a minute apart, all inside the outage, pass a cap
    of 3 per 10 s (decisions 97 and 105); counted by arrival alone, 7 were dropped.
    """
    ingest = driver()
    lost = utc_now() - timedelta(minutes=20)
    ingest.outages.lost(lost.timestamp())
    ingest.outages.up(utc_now().timestamp())
    assert doors_at(ingest, lost, timedelta(minutes=1), 10) == [Lane.ROUTINE] * 10
    assert ingest.rejected["throttled"] == 0


def test_a_forged_clock_walking_through_the_past_day_is_held_to_the_cap() -> None:
    """The review's flood: stamps from a day ago, a window further every cap events.

    With no outage the device times count for nothing: the cap holds. Before
    decision 105 all 3,000 passed.
    """
    ingest = driver()
    window = timedelta(seconds=ingest.config.shop_event_window_s)
    day_ago = utc_now() - timedelta(hours=23, minutes=59)
    lanes = [
        ingest.screen(message("S1", door_at(day_ago + (i // CAP) * window))) for i in range(3000)
    ]
    assert lanes.count(Lane.ROUTINE) == CAP


def test_after_an_outage_a_forged_clock_gets_no_more_than_the_outage_could_hold() -> None:
    """A one-minute outage: the walk passes what a minute of fair traffic could be, no more."""
    ingest = driver()
    up = utc_now()
    ingest.outages.lost((up - timedelta(minutes=1)).timestamp())
    ingest.outages.up(up.timestamp())
    config, keepalive_s = ingest.config, BrokerConfig(url="mqtt://127.0.0.1:1883").keepalive_s
    window = timedelta(seconds=config.shop_event_window_s)
    outage_s = 60 + 2 * keepalive_s + config.shop_event_window_s  # with the slack before it
    day_ago = up - timedelta(hours=23, minutes=59)
    lanes = [
        ingest.screen(message("S1", door_at(day_ago + (i // CAP) * window)))
        for i in range(CAP * 8640)
    ]
    most = CAP + CAP * (outage_s / config.shop_event_window_s + 1)
    assert CAP < lanes.count(Lane.ROUTINE) <= most


def test_stamps_in_the_future_or_before_the_outage_count_by_arrival_only() -> None:
    """Only a device time inside an outage is a backlog's; the rest is live traffic."""
    ingest = driver()
    up = utc_now()
    ingest.outages.lost((up - timedelta(minutes=10)).timestamp())
    ingest.outages.up(up.timestamp())
    before = up - timedelta(hours=2)
    assert doors_at(ingest, before, timedelta(minutes=1), 5) == [Lane.ROUTINE] * CAP + [None] * 2
    ingest = driver()
    ingest.outages.lost((up - timedelta(minutes=10)).timestamp())
    ingest.outages.up(up.timestamp())
    # Up to five minutes ahead is a plausible clock; still after the link came up.
    later = up + timedelta(seconds=30)
    assert doors_at(ingest, later, timedelta(seconds=30), 5) == [Lane.ROUTINE] * CAP + [None] * 2


def test_a_backlog_kept_while_the_gateway_was_stopped_passes_whole_after_the_restart(
    tmp_path, block_broker
) -> None:
    """Over a real broker, persistent session: stopped, the backlog published, a new process.

    The stopped ingest's state file says when its link was last up; the next one
    counts door events stamped in its outage (which starts a little before the
    stop: a link may be dead before anyone notices) at their device times: six,
    5 s apart, pass a cap of 3 per 10 s. A new gateway (no such file) knows of no
    outage and passes 3.
    """
    config = MqttIngestConfig(kind="mqtt_ingest", name="shops", shop_event_cap=CAP)

    def ingest(gateway_id: str, state_dir) -> MqttIngestDriver:
        context = DriverContext(
            gateway_id,
            BrokerConfig(url=block_broker.url),
            {"S1": frozenset({"panel-1"})},
            state_dir=state_dir,
        )
        return MqttIngestDriver(config, context=context)

    async def run_until_drained(running: MqttIngestDriver, emitted: list[Event] | None) -> None:
        async def emit(event: Event, *, on_durable=None, origin_key=None) -> None:
            if emitted is not None:
                emitted.append(event)
            on_durable()

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(running.run(emit), name="ingest")
            await asyncio.wait_for(running.link_up.wait(), 10)
            if emitted is not None:
                await wait_until(
                    lambda: len(emitted) + running.rejected["throttled"] >= 6, 10, "the backlog"
                )
            task.cancel()

    async def publish_backlog(stopped_at: datetime) -> None:
        async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="panel") as panel:
            for i in range(6):
                body = door_at(stopped_at + timedelta(seconds=5 * i - 25))
                await panel.publish("lianfang/v1/shop/S1/event", body, qos=1)

    async def scenario(gateway_id: str, state_dir, restarted_dir) -> tuple[int, int]:
        # A session of its own (the client id has the gateway's): no copy of another
        # scenario's messages is sent again into this one.
        first = ingest(gateway_id, state_dir)
        await run_until_drained(first, None)  # subscribes: the broker keeps the session
        emitted: list[Event] = []
        await publish_backlog(utc_now())
        second = ingest(gateway_id, restarted_dir)
        await run_until_drained(second, emitted)
        return len(emitted), second.rejected["throttled"]

    state, new = tmp_path / "state", tmp_path / "new"
    state.mkdir()
    new.mkdir()
    assert asyncio.run(scenario("GW-A", state, state)) == (6, 0)
    assert asyncio.run(scenario("GW-B", state, new)) == (3, 3)


def test_a_device_whose_clock_stands_still_is_held_to_the_cap() -> None:
    """A burst with one timestamp is a burst whatever the clock: the cap holds it."""
    ingest = driver()
    frozen = utc_now() - timedelta(minutes=20)
    lanes = [ingest.screen(message("S1", door_at(frozen))) for _ in range(CAP + 2)]
    assert lanes == [Lane.ROUTINE] * CAP + [None, None]


def test_the_cap_opens_again_in_the_next_window() -> None:
    """A fixed window per key: used up, refused, then a fresh window."""
    now = [0.0]
    cap = WindowCap(2, 10.0, clock=lambda: now[0])
    assert [cap.allow("S1"), cap.allow("S1"), cap.allow("S1")] == [True, True, False]
    assert cap.allow("S2")
    now[0] = 10.0
    assert cap.allow("S1")


def test_urgent_messages_overtake_routine_ones_in_arrival_order() -> None:
    """The reader takes every urgent message first, each lane first in, first out."""

    async def scenario() -> list[int]:
        lanes = MessageLanes()
        for mid, lane in [(1, Lane.ROUTINE), (2, Lane.URGENT), (3, Lane.ROUTINE), (4, Lane.URGENT)]:
            lanes.put_nowait((MQTTMessage(mid=mid), 0), lane)
        taken = [(await lanes.get())[0].mid for _ in range(4)]
        waiter = asyncio.create_task(lanes.get(), name="reader")
        await asyncio.sleep(0)
        lanes.put_nowait((MQTTMessage(mid=5), 0), Lane.URGENT)
        taken.append((await asyncio.wait_for(waiter, 5))[0].mid)
        return taken

    assert asyncio.run(scenario()) == [2, 4, 1, 3, 5]


def test_one_filter_per_shop_served() -> None:
    """The gateway subscribes to its own shops' event topics, not the whole block's wildcard."""
    assert driver().filters() == ["lianfang/v1/shop/S1/event", "lianfang/v1/shop/S2/event"]


def test_each_message_is_validated_once_and_a_copy_sent_again_is_not_counted_again(
    tmp_path, block_broker, monkeypatch
) -> None:
    """Over a real broker: the screen's event is the one emitted (one validation a message).

    Two doors are refused during a storage shortage (never acknowledged); its end
    reconnects on purpose (the driver keeps running: no link fault), and the broker's
    second copies pass a cap of 2 that they already counted against. A third door is over it.
    """
    validations = Counter[str]()
    validate = PanelMessage.model_validate_json

    def counted(payload: bytes) -> PanelMessage:
        validations[payload.decode()] += 1
        return validate(payload)

    monkeypatch.setattr(PanelMessage, "model_validate_json", counted)
    storage = StorageReserve(tmp_path, 64 * 1024)
    assert storage.ensure()
    context = DriverContext(
        "GW-T",
        BrokerConfig(url=block_broker.url),
        {"S1": frozenset({"panel-1"})},
        storage=storage,
    )
    config = MqttIngestConfig(
        kind="mqtt_ingest", name="shops", shop_event_cap=2, shop_event_window_s=3600
    )
    ingest = MqttIngestDriver(config, context=context)
    emitted: list[tuple[int, bool]] = []

    async def emit(event: Event, *, on_durable=None, origin_key=None) -> None:
        assert origin_key is not None
        emitted.append((event.attrs["seq"], storage.short))
        if not storage.short:  # refused while short, as the intake does
            on_durable()

    def door(seq: int) -> bytes:
        body = {
            "device_id": "panel-1",
            "kind": "door_open",
            "seq": seq,
            "ts": utc_now().isoformat(),
        }
        return json.dumps(body).encode()

    async def scenario() -> None:
        async with asyncio.TaskGroup() as tg:
            running = tg.create_task(ingest.run(emit), name="ingest")
            await asyncio.wait_for(ingest.link_up.wait(), 10)
            storage.release("a test says the disk is full")
            async with aiomqtt.Client("127.0.0.1", block_broker.port, identifier="panel") as panel:
                first, second = door(1), door(2)
                await panel.publish("lianfang/v1/shop/S1/event", first, qos=1)
                await panel.publish("lianfang/v1/shop/S1/event", second, qos=1)
                await wait_until(lambda: len(emitted) == 2, 10, "two refused doors")
                assert await asyncio.to_thread(storage.try_resume)
                await wait_until(lambda: len(emitted) == 4, 10, "the broker's second copies")
                third = door(3)
                await panel.publish("lianfang/v1/shop/S1/event", third, qos=1)
                await wait_until(lambda: ingest.rejected["throttled"] == 1, 10, "the third door")
            assert not running.done()
            running.cancel()

        assert emitted == [(1, True), (2, True), (1, False), (2, False)]
        assert validations == {first.decode(): 2, second.decode(): 2, third.decode(): 1}

    asyncio.run(scenario())


def test_live_events_read_with_a_backlog_keep_the_whole_arrival_count() -> None:
    """A backlog passing by its device times spends none of the count the live events pass by.

    Read in one burst: a minute's backlog at a fair pace, then the shop's live events.
    Before, the backlog used the arrival count up and every live event was dropped.
    """
    ingest = driver()
    up = utc_now()
    ingest.outages.lost((up - timedelta(minutes=1)).timestamp())
    ingest.outages.up(up.timestamp())
    fair = timedelta(seconds=ingest.config.shop_event_window_s / CAP + 0.01)
    lost = up - timedelta(minutes=1)
    backlog = [ingest.screen(message("S1", door_at(lost + i * fair))) for i in range(3 * CAP)]
    live = [ingest.screen(message("S1", door_at(up + timedelta(seconds=1)))) for _ in range(CAP)]
    assert backlog.count(Lane.ROUTINE) == len(backlog)
    assert live.count(Lane.ROUTINE) == CAP
