"""Neighbour alerts: a second alert never waits for the broker's answer to the first."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiomqtt
import pytest

from gateway.errors import DriverUnavailable
from gateway.mqtt import notify
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.notify import BlockPublisher
from gateway.state_file import StateFile
from lab.broker import Mosquitto
from rules.neighbour_alert import NeighbourAlert, Notice
from tests.clients import wait_until

NEIGHBOURS = ("S00002", "S00003", "S00004")


def alert(alert_id: str) -> NeighbourAlert:
    """An alert to ``NEIGHBOURS``, each notice naming the alert."""
    notices = tuple(
        Notice(shop, json.dumps({"alert_id": alert_id, "to": shop}).encode()) for shop in NEIGHBOURS
    )
    return NeighbourAlert(alert_id, f"E-{alert_id}", notices, time.monotonic() + 60)


def publisher_on(broker: Mosquitto, confirmed: Path | None = None) -> BlockPublisher:
    """A publisher on ``broker`` (confirmations kept in ``confirmed``), status far beyond the test."""
    return BlockPublisher(
        BrokerConfig(url=broker.url),
        gateway_id="GW-T",
        status=dict,
        status_interval_s=600,
        confirmed_file=confirmed,
    )


@contextlib.contextmanager
def frozen(broker: Mosquitto) -> Iterator[None]:
    """The broker stopped (SIGSTOP): it takes packets into its socket but answers none."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        if broker.process is not None:
            os.kill(broker.process.pid, signal.SIGCONT)


async def publish_two_unanswered(publisher: BlockPublisher, second: str = "A2") -> None:
    """Submit A1 then ``second`` to a frozen broker; both are published and await PUBACKs."""
    publisher.submit(alert("A1"))
    publisher.submit(alert(second))
    await wait_until(lambda: publisher.alerts_unconfirmed == 2, 5, "both alerts published")


async def received_alert_ids(broker: Mosquitto, count: int, subscribed: asyncio.Event) -> list[str]:
    """The alert ids of the first ``count`` notices on the neighbours' topics, in arrival order."""
    ids: list[str] = []
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="panels") as sub:
        await sub.subscribe("lianfang/v1/shop/+/notify", qos=1)
        subscribed.set()
        async with asyncio.timeout(10):
            async for message in sub.messages:
                ids.append(json.loads(bytes(message.payload))["alert_id"])
                if len(ids) == count:
                    break
    return ids


@pytest.mark.parametrize("second", ["A2", "A1"], ids=["another-alert", "the-capped-rest"])
def test_a_second_alert_goes_out_while_the_first_awaits_its_pubacks(
    tmp_path: Path, second: str
) -> None:
    """With the broker answering nothing, both alerts are on the link; both confirm after.

    The same alert id twice is the notice cap sending an alert's rest later.
    """
    with Mosquitto(workdir=tmp_path / "broker") as broker:

        async def scenario() -> BlockPublisher:
            publisher = publisher_on(broker)
            async with asyncio.TaskGroup() as tg:
                run = tg.create_task(publisher.run(), name="publisher")
                await wait_until(publisher.link_up.is_set, 10, "the block link")
                with frozen(broker):
                    await publish_two_unanswered(publisher, second)
                await wait_until(
                    lambda: publisher.notices_sent == 2 * len(NEIGHBOURS), 10, "every PUBACK"
                )
                assert publisher.alerts_unconfirmed == 0
                assert not run.done(), "the publisher ended"
                run.cancel()
            return publisher

        publisher = asyncio.run(scenario())
        assert publisher.alerts_expired == publisher.notices_refused == 0


def test_alerts_a_lost_link_left_unconfirmed_go_again_first_and_in_order(tmp_path: Path) -> None:
    """Published but unanswered when the broker died: on the next link, A1 then A2 then A3."""
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        publisher = publisher_on(broker)

        async def lose_the_link() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(publisher.run(), name="publisher")
                    await wait_until(publisher.link_up.is_set, 10, "the block link")
                    with frozen(broker):
                        await publish_two_unanswered(publisher)
                        broker.kill()
            except* DriverUnavailable:
                pass  # the link went, as it should

        async def scenario() -> list[str]:
            await lose_the_link()
            assert publisher.notices_sent == 0
            await asyncio.to_thread(broker.start)
            publisher.link_up.clear()
            publisher.submit(alert("A3"))
            subscribed = asyncio.Event()
            async with asyncio.TaskGroup() as tg:
                listening = tg.create_task(
                    received_alert_ids(broker, 3 * len(NEIGHBOURS), subscribed), name="panels"
                )
                await asyncio.wait_for(subscribed.wait(), 10)
                run = tg.create_task(publisher.run(), name="publisher")
                ids = await listening
                run.cancel()
            return ids

        ids = asyncio.run(scenario())
        assert ids == ["A1"] * 3 + ["A2"] * 3 + ["A3"] * 3


def test_confirmations_are_written_at_a_stop_not_on_the_loop_at_a_link_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lost link leaves the file to the next link's writer; a stop writes what is new, once.

    The stop's write runs on the event loop (it is the last thing the loop does); at a
    link drop the same write would stall the ingest and the police link for an fsync.
    """
    confirmed = tmp_path / "notices-confirmed.json"
    writes_on_the_loop: list[str] = []
    save = StateFile.save

    def save_watched(self: StateFile, text: str) -> None:
        writes_on_the_loop.append(text)
        save(self, text)

    monkeypatch.setattr(StateFile, "save", save_watched)
    with Mosquitto(workdir=tmp_path / "broker") as broker:

        async def drop_the_link() -> None:
            first = publisher_on(broker, confirmed)
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(first.run(), name="publisher")
                    await wait_until(first.link_up.is_set, 10, "the block link")
                    broker.kill()
            except* DriverUnavailable:
                pass

        async def confirm_then_stop() -> BlockPublisher:
            second = publisher_on(broker, confirmed)
            run = asyncio.create_task(second.run(), name="publisher")
            await wait_until(second.link_up.is_set, 10, "the block link")
            # Pause the background writer so that only the stop can write the confirmation.
            monkeypatch.setattr(StateFile, "save_in_thread", _never_done)
            second.submit(alert("A1"))
            await wait_until(lambda: second.notices_sent == len(NEIGHBOURS), 10, "A1 confirmed")
            run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
            return second

        asyncio.run(drop_the_link())
        assert writes_on_the_loop == []
        assert not confirmed.exists()  # nothing was confirmed: nothing to write
        broker.start()
        second = asyncio.run(confirm_then_stop())

    assert len(writes_on_the_loop) == 1
    assert set(json.loads(confirmed.read_text())["A1"][1]) == set(NEIGHBOURS)
    assert second.confirmed("A1") == frozenset(NEIGHBOURS)


async def _never_done(self: StateFile, text: str) -> None:
    await asyncio.Event().wait()


def test_confirmations_since_the_last_write_are_written_when_the_link_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A2, confirmed while the writer waits out its interval, is on disk once the link is gone.

    A stop during the supervisor's pause after the drop runs none of the publisher's
    code: written only at a stop, A2 would be told again after the restart.
    """
    monkeypatch.setattr(notify, "CONFIRMED_SAVE_INTERVAL_S", 60.0)
    confirmed = tmp_path / "notices-confirmed.json"
    with Mosquitto(workdir=tmp_path / "broker") as broker:
        publisher = publisher_on(broker, confirmed)

        async def confirm_two_then_drop() -> None:
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(publisher.run(), name="publisher")
                    await wait_until(publisher.link_up.is_set, 10, "the block link")
                    for alert_id, sent in (("A1", 1), ("A2", 2)):
                        publisher.submit(alert(alert_id))
                        await wait_until(
                            lambda n=sent: publisher.notices_sent == n * len(NEIGHBOURS),
                            10,
                            f"{alert_id} confirmed",
                        )
                        await wait_until(confirmed.exists, 10, "the first write")
                    assert "A2" not in json.loads(confirmed.read_text())  # the writer waits
                    broker.kill()
            except* DriverUnavailable:
                pass

        asyncio.run(confirm_two_then_drop())
    assert set(json.loads(confirmed.read_text())) == {"A1", "A2"}
