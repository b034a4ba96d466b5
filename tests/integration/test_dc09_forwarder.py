"""The DC-09 forwarder against our own receiving centre on loopback: ACK, NAK, faults, failover."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from gateway.events import EventKind, utc_now
from protocols.dc09 import Token, decode, encode
from receiver.centre import AlarmStore, Dc09Centre, listen
from tests.clients import wait_until
from tests.forwarder_rig import Proxy, aio, centre, event, forwarding, stored

KEY_HEX = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"


@pytest.mark.parametrize(
    ("udp", "key"),
    [(False, None), (False, KEY_HEX), (True, None), (True, KEY_HEX[:32])],
    ids=["tcp", "tcp-aes256", "udp", "udp-aes128"],
)
@aio
async def test_events_reach_the_centre(tmp_path: Path, udp: bool, key: str | None) -> None:
    """Panic, intrusion with zone and its restore arrive with the shop's account, code and zone."""
    async with centre(tmp_path, udp=udp, key=bytes.fromhex(key) if key else None) as (cen, lis):
        scheme = "udp" if udp else "tcp"
        async with forwarding(tmp_path, url=f"{scheme}://127.0.0.1:{lis.port}", key=key) as rig:
            await rig.send(
                event(EventKind.PANIC),
                event(EventKind.INTRUSION, shop="S00012", zone="zone-5"),
                event(EventKind.RESTORE, shop="S00012", zone="zone-5", restores="intrusion"),
                event(EventKind.HEARTBEAT),
                event(EventKind.DOOR_OPEN),
            )
            await wait_until(lambda: len(stored(cen.store)) == 3, 20, "three alarms stored")
            await wait_until(lambda: rig.pending() == 0, 10, "all acknowledged")
    rows = stored(cen.store)
    assert [(a, code, zone) for a, _, code, zone in rows] == [
        ("00011", "1120", 0),
        ("BEEF", "1130", 5),
        ("BEEF", "3130", 5),
    ]
    assert [seq for _, seq, _, _ in rows] == [1, 2, 3]  # journal order; door and heartbeat unsent
    assert "9999" in cen.supervision  # the gateway's NULL on connecting
    # The link came up at once and never went down: no fault was reported.
    assert rig.forwarder.link_up.is_set()
    assert rig.changes == []


@aio
async def test_sia_dcs_format(tmp_path: Path) -> None:
    """With format SIA-DCS the centre gets SIA DC-03 letters: PA for a panic, zone kept."""
    async with (
        centre(tmp_path) as (cen, lis),
        forwarding(tmp_path, url=f"tcp://127.0.0.1:{lis.port}", format="SIA-DCS") as rig,
    ):
        await rig.send(event(EventKind.PANIC, zone="7"))
        await wait_until(lambda: len(stored(cen.store)) == 1, 20, "the panic stored")
    assert stored(cen.store)[0][2:] == ("PA", 7)


@aio
async def test_nak_resynchronises_the_clock(tmp_path: Path) -> None:
    """A centre whose clock is 5 minutes ahead NAKs once; the gateway adopts its time and is ACKed."""
    ahead = timedelta(minutes=5)
    async with (
        centre(tmp_path, key=bytes.fromhex(KEY_HEX[:48]), clock=lambda: utc_now() + ahead) as (
            cen,
            lis,
        ),
        forwarding(tmp_path, url=f"tcp://127.0.0.1:{lis.port}", key=KEY_HEX[:48]) as rig,
    ):
        await rig.send(event(EventKind.PANIC))
        await wait_until(lambda: len(stored(cen.store)) == 1, 20, "the panic stored")
    assert cen.rejected["timestamp"] == 1
    assert rig.forwarder.naks == 1
    assert abs(rig.forwarder.clock_offset_s - ahead.total_seconds()) < 5


@aio
async def test_lost_acks_and_a_cut_message_lose_nothing(tmp_path: Path) -> None:
    """ACKs lost and a connection cut mid-message: every event stored once, in order."""
    async with centre(tmp_path) as (cen, lis):
        proxy = Proxy(lis.port)
        await proxy.start()
        async with forwarding(
            tmp_path, url=f"tcp://127.0.0.1:{proxy.port}", ack_timeout_s=0.5
        ) as rig:
            await wait_until(rig.forwarder.link_up.is_set, 10, "link up")
            proxy.drop_replies = 2
            await rig.send(*(event(EventKind.PANIC, zone=str(i)) for i in range(1, 6)))
            await wait_until(lambda: len(stored(cen.store)) >= 5, 20, "five stored")
            proxy.cut_next_message = True
            await rig.send(*(event(EventKind.INTRUSION, zone=str(i)) for i in range(6, 11)))
            await wait_until(lambda: len(stored(cen.store)) >= 10, 30, "ten stored")
            await wait_until(lambda: rig.pending() == 0, 30, "all acknowledged")
        proxy.close()
    rows = stored(cen.store)
    assert [zone for *_, zone in rows] == list(range(1, 11))
    assert cen.store.duplicates >= 1  # the copies sent after lost ACKs were dropped


@aio
async def test_receiver_down_then_back(tmp_path: Path) -> None:
    """The centre is down while alarms come in: they wait in the outbox and arrive in order."""
    async with centre(tmp_path) as (cen, lis):
        port = lis.port
    async with forwarding(tmp_path, url=f"tcp://127.0.0.1:{port}", ack_timeout_s=0.5) as rig:
        await rig.send(*(event(EventKind.PANIC, zone=str(i)) for i in range(1, 8)))
        await wait_until(lambda: bool(rig.changes), 10, "the link reported down")
        assert rig.pending() == 7
        async with centre(tmp_path, port=port) as (cen, _):
            await wait_until(lambda: rig.pending() == 0, 30, "backlog delivered")
            assert [zone for *_, zone in stored(cen.store)] == list(range(1, 8))
    assert rig.changes[0][0] is False


@aio
async def test_failover_to_backup_and_back(tmp_path: Path) -> None:
    """With nothing on the primary port alarms go to the backup; once the primary is back, to it."""
    async with centre(tmp_path) as (_, dead_lis):
        primary = dead_lis.port
    async with (
        centre(tmp_path, udp=True) as (backup, lis),
        forwarding(
            tmp_path,
            url=f"tcp://127.0.0.1:{primary}",
            backup_url=f"udp://127.0.0.1:{lis.port}",
            ack_timeout_s=0.5,
            primary_retry_s=1,
        ) as rig,
    ):
        await rig.send(event(EventKind.FIRE, zone="2"))
        await wait_until(lambda: len(stored(backup.store)) == 1, 20, "stored at the backup")
        async with centre(tmp_path, port=primary) as (main, _):
            await wait_until(lambda: "9999" in main.supervision, 20, "back on the primary")
            await rig.send(event(EventKind.PANIC, zone="3"))
            await wait_until(lambda: len(stored(main.store)) == 1, 20, "stored at the primary")
    assert stored(backup.store) == [("00011", 1, "1110", 2)]
    assert stored(main.store) == [("00011", 2, "1120", 3)]
    assert rig.changes == []  # one path answered all along: no trouble


@aio
async def test_centre_that_stops_acknowledging_raises_trouble(tmp_path: Path) -> None:
    """NULL supervision unanswered: the link goes down and the gateway is told (its trouble event)."""
    async with centre(tmp_path) as (cen, lis):
        proxy = Proxy(lis.port)
        await proxy.start()
        async with forwarding(
            tmp_path,
            url=f"tcp://127.0.0.1:{proxy.port}",
            null_interval_s=0.3,
            ack_timeout_s=1,  # a loaded machine must not make a live centre look dead
            attempts=2,
        ) as rig:
            await wait_until(rig.forwarder.link_up.is_set, 10, "link up")
            first = cen.supervision["9999"]
            await wait_until(lambda: cen.supervision["9999"] > first, 10, "a periodic NULL")
            assert rig.changes == []
            proxy.drop_replies = 10**6  # the centre still reads but no longer acknowledges
            await wait_until(lambda: bool(rig.changes), 15, "a trouble report")
        proxy.close()
    up, detail = rig.changes[0]
    assert up is False
    assert "no ACK for NULL" in detail


class RefusingCentre(Dc09Centre):
    """Our centre, except that it answers DUH to everything from account BEEF."""

    def answer(self, frame: bytes) -> bytes:
        message = decode(frame, self.keys)
        if message.account == "BEEF":
            return encode(message.reply(Token.DUH, None))
        return super().answer(frame)


@aio
async def test_duh_gives_the_event_up_and_moves_on(tmp_path: Path) -> None:
    """A DUH closes that one delivery with its reason; the events after it are delivered."""
    store = AlarmStore(tmp_path / "refusing.sqlite3")
    listener = await listen(RefusingCentre(store), "127.0.0.1", 0)
    try:
        async with forwarding(tmp_path, url=f"tcp://127.0.0.1:{listener.port}") as rig:
            await rig.send(event(EventKind.PANIC, shop="S00012"), event(EventKind.PANIC, zone="4"))
            await wait_until(lambda: rig.all_closed(2), 20, "both deliveries closed")
    finally:
        listener.close()
    (_, acked1, error1), (_, acked2, error2) = rig.delivery_rows()
    assert acked1 is not None
    assert error1.startswith("given up: ")
    assert error1.endswith("answered DUH")
    assert (acked2 is not None, error2) == (True, None)
    assert stored(store) == [("00011", 2, "1120", 4)]
    assert rig.forwarder.refused == 1


@aio
async def test_gateway_account_in_lower_case_is_matched(tmp_path: Path) -> None:
    """The gateway's own events go under its account, upper-cased as the centre echoes it."""
    async with (
        centre(tmp_path) as (cen, lis),
        forwarding(tmp_path, url=f"tcp://127.0.0.1:{lis.port}", account="ab12") as rig,
    ):
        await rig.send(event(EventKind.DEVICE_FAULT, shop=None))
        await wait_until(lambda: rig.all_closed(1), 20, "the trouble acknowledged")
    assert stored(cen.store) == [("AB12", 1, "1380", 0)]
    assert "AB12" in cen.supervision


class ClearAckCentre(Dc09Centre):
    """Answers every message with a clear ACK, even an encrypted one (as a spoofer could)."""

    def answer(self, frame: bytes) -> bytes:
        message = decode(frame, self.keys)
        return encode(message.reply(Token.ACK, utc_now()))


@aio
async def test_clear_ack_to_an_encrypted_message_is_not_an_ack(tmp_path: Path) -> None:
    """A clear ACK to an encrypted message never marks an alarm delivered."""
    store = AlarmStore(tmp_path / "spoof.sqlite3")
    listener = await listen(ClearAckCentre(store, key=bytes(16)), "127.0.0.1", 0)
    try:
        async with forwarding(
            tmp_path, url=f"tcp://127.0.0.1:{listener.port}", key="00" * 16, ack_timeout_s=0.3
        ) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: bool(rig.changes), 20, "the link reported down")
            assert rig.pending() == 1
    finally:
        listener.close()
    assert "no ACK for NULL" in rig.changes[0][1]


class StrayAckCentre(Dc09Centre):
    """ACKs alarms without the account (``None``) or with another one ("ABC")."""

    stray_account: str | None = None

    def answer(self, frame: bytes) -> bytes:
        message = decode(frame, self.keys)
        if message.token is Token.NULL:
            return super().answer(frame)
        return encode(replace(message, account=self.stray_account).reply(Token.ACK, utc_now()))


@pytest.mark.parametrize("stray_account", [None, "ABC"], ids=["no-account", "other-account"])
@aio
async def test_an_ack_for_another_account_is_not_an_ack(
    tmp_path: Path, stray_account: str | None
) -> None:
    """An ACK with the right sequence but not our account never marks an alarm delivered."""
    receiving = StrayAckCentre(AlarmStore(tmp_path / "stray.sqlite3"))
    receiving.stray_account = stray_account
    listener = await listen(receiving, "127.0.0.1", 0)
    try:
        async with forwarding(
            tmp_path, url=f"tcp://127.0.0.1:{listener.port}", ack_timeout_s=0.3
        ) as rig:
            await rig.send(event(EventKind.PANIC))
            await wait_until(lambda: bool(rig.changes), 20, "the link reported down")
            assert rig.pending() == 1
    finally:
        listener.close()
    assert "no ACK for ADM-CID 0001" in rig.changes[0][1]


class DoubleAckCentre(Dc09Centre):
    """ACKs each NULL twice (a late copy, as after a resend) and ignores an alarm's first send."""

    def __init__(self, store: AlarmStore) -> None:
        super().__init__(store)
        self.ignored: set[bytes] = set()

    def answer(self, frame: bytes) -> bytes:
        message = decode(frame, self.keys)
        if message.token is Token.NULL:
            return super().answer(frame) * 2
        if message.data.encode() not in self.ignored:
            self.ignored.add(message.data.encode())
            return b""
        return super().answer(frame)


@aio
async def test_a_late_ack_of_the_null_is_not_taken_for_the_next_alarm(tmp_path: Path) -> None:
    """The gateway's own event after its NULL: only the centre's ACK of that event delivers it."""
    receiving = DoubleAckCentre(AlarmStore(tmp_path / "double.sqlite3"))
    listener = await listen(receiving, "127.0.0.1", 0)
    try:
        async with forwarding(
            tmp_path, url=f"tcp://127.0.0.1:{listener.port}", ack_timeout_s=0.5
        ) as rig:
            await wait_until(rig.forwarder.link_up.is_set, 10, "link up")
            await rig.send(event(EventKind.DEVICE_FAULT, shop=None))
            await wait_until(lambda: rig.all_closed(1), 20, "the trouble acknowledged")
    finally:
        listener.close()
    assert receiving.ignored  # its first send went unanswered...
    assert stored(receiving.store) == [("9999", 1, "1380", 0)]  # ...and it was stored on a resend


@aio
async def test_a_centre_closing_the_idle_connection_is_not_a_trouble(tmp_path: Path) -> None:
    """The centre hangs up while the link is idle: the next alarm reconnects, no trouble raised."""
    async with (
        centre(tmp_path) as (cen, lis),
        forwarding(tmp_path, url=f"tcp://127.0.0.1:{lis.port}") as rig,
    ):
        await wait_until(rig.forwarder.link_up.is_set, 10, "link up")
        cen.hang_up()
        await wait_until(lambda: not cen._connections, 10, "the centre hung up")
        await rig.send(event(EventKind.PANIC, zone="6"))
        await wait_until(lambda: rig.all_closed(1), 20, "the panic acknowledged")
    assert stored(cen.store) == [("00011", 1, "1120", 6)]
    assert rig.changes == []
