"""Wired buttons and keypads: stub processes on real ptys, the gateway as a real process."""

from __future__ import annotations

import asyncio
import time

from protocols.line_frames import LineFrame, LineReader
from tests.clients import expected_nearest, running, wait_until
from tests.field import cli_json, stub

SHOP = "S00011"
KEYPAD_SHOP = "S00040"


def line_driver(port: str, **extra: object) -> dict[str, object]:
    return {
        "kind": "line_serial",
        "name": "bus-1",
        "port": port,
        "devices": [
            {"address": 3, "shop_id": SHOP, "device_id": "pb-1"},
            {"address": 5, "shop_id": KEYPAD_SHOP, "device_id": "kp-1"},
        ],
        **extra,
    }


DEVICES = {SHOP: [("pb-1", "panic_button")], KEYPAD_SHOP: [("kp-1", "keypad")]}


def test_wired_panic_reaches_the_police_and_the_nearest_shops(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """A press on a wired button on a pty alerts exactly the 10 nearest shops and reaches the police; the button gets its ACK."""
    with stub("panic_button", "--address", "3", "--address", "5", "--heartbeat-s", "0") as bus:
        start_field_gateway(DEVICES, [line_driver(bus.port)])
        near = expected_nearest(SHOP)

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=[*near, SHOP]
            ) as (panels, platform):
                assert platform is not None
                bus.send("press 3 2")
                await wait_until(
                    lambda: platform.by_id and all(panels[s].notices for s in near),
                    10,
                    "the police event and 10 notices",
                )
                [police] = platform.unique
                assert police.body["shop_id"] == SHOP
                assert police.body["device_id"] == "pb-1"
                assert police.body["kind"] == "panic"
                assert police.body["zone"] == "2"
                assert police.body["source"]["driver"] == "bus-1"
                assert not panels[SHOP].notices
                await asyncio.to_thread(bus.expect, "ACKED 3", 10)

        asyncio.run(scenario())


def test_keypad_9_hash_is_a_panic_and_a_stray_9_is_not(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """'9' alone, and '9' then '#' after the sequence timeout, raise nothing; '9#' raises one panic, to the police and the 10 nearest shops."""
    with stub("keypad", "--address", "5", "--address", "3", "--heartbeat-s", "0") as bus:
        start_field_gateway(DEVICES, [line_driver(bus.port, sequence_timeout_s=1.0)])

        near = expected_nearest(KEYPAD_SHOP)

        async def scenario() -> None:
            async with running(
                block_url=block_broker.url, police_url=police_broker.url, shops=near
            ) as (panels, platform):
                assert platform is not None
                bus.send("keys 5 9")
                await asyncio.to_thread(bus.expect, "ACKED 5", 10)
                await asyncio.sleep(1.5)  # past the sequence timeout
                bus.send("keys 5 #")
                await asyncio.to_thread(bus.expect, "ACKED 5", 10)
                bus.send("keys 5 19#")
                await wait_until(lambda: platform.by_id, 10, "the keypad panic at the police")
                await asyncio.to_thread(bus.expect, "ACKED 5", 10)
                await asyncio.sleep(0.5)  # room for a wrong second panic
                [police] = platform.unique
                assert police.body["shop_id"] == KEYPAD_SHOP
                assert police.body["device_id"] == "kp-1"
                assert police.body["kind"] == "panic"
                assert police.body["attrs"]["keys"] == "9#"
                await wait_until(
                    lambda: all(len(panels[s].notices) == 1 for s in near), 10, "10 notices"
                )
                assert {p.notices[0].body["event_id"] for p in panels.values()} == {
                    police.body["id"]
                }

        asyncio.run(scenario())


def test_lost_acks_make_retransmissions_that_are_journalled_once(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """With the gateway's ACKs ignored for 2 s the button repeats its frame; one event is journalled and forwarded."""
    with stub("panic_button", "--address", "3", "--heartbeat-s", "0") as bus:
        gw = start_field_gateway(DEVICES, [line_driver(bus.port)], status_interval_s=0.2)

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                bus.send("drop-acks 2")
                bus.send("press")
                await asyncio.to_thread(bus.expect, "ACKED 3", 15)
                assert bus.count("SENT 3") >= 3
                await wait_until(lambda: platform.by_id, 10, "the panic at the police")
                await asyncio.sleep(0.5)
                assert len(platform.unique) == 1
                await wait_until(lambda: gw.status()["events"] >= 1, 10, "the status file")

        asyncio.run(scenario())
        assert gw.stop() == 0
        listed = cli_json("events", gw.config)
        assert [(e["device_id"], e["kind"]) for e in listed if e["shop_id"]] == [("pb-1", "panic")]


def test_a_press_after_a_power_cut_is_never_taken_for_a_repeat(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """The button numbers from 0 again after a power cut; its next panic (seq 0 or 1 again) still reaches the police."""
    with stub("panic_button", "--address", "3", "--heartbeat-s", "0", "--seq", "0") as bus:
        start_field_gateway(DEVICES, [line_driver(bus.port)])

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                bus.send("press")
                await wait_until(lambda: len(platform.by_id) == 1, 10, "the first panic")
                bus.send("power off")
                bus.send("power on")
                bus.send("press")
                await wait_until(lambda: len(platform.by_id) == 2, 10, "the panic after the cut")
                await asyncio.to_thread(bus.expect, "SENT 3 1 PANIC", 10)

        asyncio.run(scenario())


def test_low_battery_is_raised_once_and_restored_once(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """Heartbeats under low_battery_v raise one low_battery, not one per heartbeat; a new battery, one restore."""
    with stub("panic_button", "--address", "3", "--heartbeat-s", "0") as bus:
        start_field_gateway(DEVICES, [line_driver(bus.port)])

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                bus.send("battery 3 2.41")
                for _ in range(3):
                    bus.send("hb 3")
                    await asyncio.to_thread(bus.expect, "ACKED 3", 10)
                bus.send("battery 3 3.05")
                for _ in range(2):
                    bus.send("hb 3")
                    await asyncio.to_thread(bus.expect, "ACKED 3", 10)
                await wait_until(lambda: len(platform.by_id) == 2, 10, "low_battery and restore")
                await asyncio.sleep(0.5)
                kinds = [(d.body["kind"], d.body["attrs"]["battery_v"]) for d in platform.unique]
                assert kinds == [("low_battery", 2.41), ("restore", 3.05)]

        asyncio.run(scenario())


def test_noise_is_counted_and_a_panic_after_it_gets_through(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """Random bytes and a frame from an unknown address are counted; the gateway keeps serving."""
    with stub("panic_button", "--address", "3", "--address", "9", "--heartbeat-s", "0") as bus:
        gw = start_field_gateway(DEVICES, [line_driver(bus.port)], status_interval_s=0.2)

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                for _ in range(5):
                    bus.send("noise 200")
                bus.send("press 9")
                bus.send("press 3")
                await wait_until(lambda: platform.by_id, 10, "the panic at the police")
                [police] = platform.unique
                assert police.body["device_id"] == "pb-1"
                await wait_until(
                    lambda: (
                        gw.status()["rejected"].get("bus-1.unknown_address", 0) >= 1
                        and sum(gw.status()["rejected"].values()) >= 2
                    ),
                    10,
                    "noise and the unknown address counted",
                )

        asyncio.run(scenario())
        assert gw.process is not None
        assert gw.process.poll() is None


def test_silent_button_raises_supervision_lost_then_restore(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """Heartbeats stopped: supervision_lost within the interval plus one period; resumed: restore; status shows the device."""
    with stub("panic_button", "--address", "3", "--heartbeat-s", "0.5") as bus:
        driver = line_driver(bus.port)
        driver["devices"][0]["supervision_s"] = 3  # type: ignore[index]
        gw = start_field_gateway(DEVICES, [driver], status_interval_s=0.2)

        async def scenario() -> None:
            async with running(police_url=police_broker.url) as (_, platform):
                assert platform is not None
                await asyncio.to_thread(bus.expect, "ACKED 3", 10)
                bus.send("heartbeats off")
                stopped = time.monotonic()
                await wait_until(
                    lambda: any(d.body["kind"] == "supervision_lost" for d in platform.unique),
                    15,
                    "supervision_lost at the police",
                )
                # the last heartbeat may have been up to one period before 'off'
                assert time.monotonic() - stopped < 3 + 0.5 + 2.0
                [lost] = [d.body for d in platform.unique if d.body["kind"] == "supervision_lost"]
                assert (lost["shop_id"], lost["device_id"]) == (SHOP, "pb-1")
                await wait_until(
                    lambda: gw.status()["device_faults"] == {f"{SHOP}/pb-1": "supervision_lost"},
                    10,
                    "the fault in the status",
                )
                for _ in range(20):  # the device_state table is flushed every 2 s
                    shown = await asyncio.to_thread(cli_json, "status", gw.config)
                    if any(d["fault"] == "supervision_lost" for d in shown["devices"]):
                        break
                    await asyncio.sleep(0.5)
                [device] = [d for d in shown["devices"] if d["device_id"] == "pb-1"]
                assert device["fault"] == "supervision_lost"
                bus.send("heartbeats on")
                await wait_until(
                    lambda: any(d.body["kind"] == "restore" for d in platform.unique),
                    10,
                    "restore at the police",
                )
                kinds = [d.body["kind"] for d in platform.unique]
                assert kinds == ["supervision_lost", "restore"]

        asyncio.run(scenario())
        assert gw.stop() == 0
        shown = cli_json("status", gw.config)
        [device] = [d for d in shown["devices"] if d["device_id"] == "pb-1"]
        assert device["shop_id"] == SHOP
        assert device["fault"] is None
        assert device["battery_v"] == 3.02
        assert device["last_seen"] > time.time() - 60


def test_bus_behind_a_socket_converter_and_its_reconnect(
    tmp_path, block_broker, police_broker, start_field_gateway
):
    """port: socket://... (an RS-485-to-Ethernet converter, here a loopback TCP server): frames in, ACKs out; after the converter drops the link, the gateway reconnects."""

    async def scenario() -> None:
        connections: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        server = await asyncio.start_server(
            lambda r, w: connections.put_nowait((r, w)), "127.0.0.1", 0
        )
        port = server.sockets[0].getsockname()[1]
        await asyncio.to_thread(
            start_field_gateway, DEVICES, [line_driver(f"socket://127.0.0.1:{port}")]
        )

        async def press(seq: int) -> None:
            reader, writer = await asyncio.wait_for(connections.get(), 30)
            frame = LineFrame(3, seq, "PANIC", "1")
            writer.write(frame.encode())
            acks = LineReader()
            got: list[LineFrame] = []
            while not got:
                got = acks.feed(await asyncio.wait_for(reader.read(100), 10))
            assert got == [frame.ack()]
            writer.close()  # the converter drops the link

        async with running(police_url=police_broker.url) as (_, platform):
            assert platform is not None
            await press(40)
            await press(41)  # on the gateway's new connection
            await wait_until(
                lambda: [d.body["kind"] for d in platform.unique].count("panic") == 2,
                10,
                "both panics",
            )
            # the dropped link is a trouble of the gateway's own, and its return a restore
            links = [(d.body["device_id"], d.body["kind"]) for d in platform.unique]
            assert ("link:driver[bus-1]", "device_fault") in links
        server.close()

    asyncio.run(scenario())
