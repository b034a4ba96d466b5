"""A backlog the block broker kept while the gateway was killed passes the shop cap whole."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from tests.clients import running, wait_until

SHOP = "S00001"
CAP = 3
CAPPED = {
    "drivers": [{"kind": "mqtt_ingest", "name": "shops", "shop_event_cap": CAP}],
    # Only what the panel sent reaches the police (no events of the rules' own).
    "rules": {"disable": ["intrusion-when-armed", "robbery-area-alert"]},
}


def test_a_backlog_kept_while_the_gateway_was_killed_passes_whole_after_the_restart(
    tmp_path, block_broker, police_broker, start_gateway
):
    """A kill -9, six door events of one shop stamped in the outage, restart: all six at the police.

    No clean stop wrote the link's state file: the one written when the link came
    up tells the restarted gateway when the outage began (decision 105). Counted by
    arrival alone, a cap of 3 per 10 s would drop three.
    """
    gw = start_gateway(**CAPPED)

    async def link_state_written() -> None:
        # Written in a thread once the ingest's link is up.
        await wait_until(
            lambda: any(tmp_path.rglob("shops-link-up.json")), 10, "the link's state file"
        )

    asyncio.run(link_state_written())
    gw.kill()
    killed = datetime.now(UTC)

    async def scenario() -> None:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=[SHOP]
        ) as (panels, platform):
            assert platform is not None
            # Sent at a fair pace up to the kill, as the gateway had not read them yet.
            sent = {
                await panels[SHOP].send(
                    "door_open", ts=(killed + timedelta(seconds=5 * i - 25)).isoformat()
                )
                for i in range(6)
            }
            await asyncio.to_thread(gw.start)

            def doors() -> set[int]:
                return {
                    d.body["attrs"]["seq"]
                    for d in platform.deliveries
                    if d.body["shop_id"] == SHOP and d.body["kind"] == "door_open"
                }

            await wait_until(lambda: doors() == sent, 30, "the six doors at the police")

    asyncio.run(scenario())


def test_a_link_state_that_cannot_be_saved_is_a_warning_for_the_installer(
    tmp_path, block_broker, police_broker, start_gateway
):
    """The state file cannot be written (here a folder stands in its place): status says so.

    Without it a restart's backlog is held to the shop cap as if sent live; the
    log alone (rate-limited) was the only trace.
    """
    (tmp_path / "state" / "shops-link-up.json").mkdir(parents=True)
    gw = start_gateway(status_interval_s=0.5)

    async def warned() -> None:
        await wait_until(
            lambda: any("cannot save the link state" in w for w in gw.status()["warnings"]),
            10,
            "the warning in status.json",
        )

    asyncio.run(warned())
    [warning] = gw.status()["warnings"]
    assert warning.startswith("shops: cannot save the link state")
    assert "state_dir full or read-only?" in warning
