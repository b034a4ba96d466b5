"""`lianfang backup`: SQLite's online backup of a journal that the running gateway is writing."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

from tests.clients import running, wait_until
from tests.harness import init_config


def test_backup_while_the_gateway_journals_is_whole_and_consistent(
    block_broker, police_broker, start_gateway, tmp_path
):
    """Backups taken mid-burst open alone, pass SQLite's check, and hold a prefix of the live journal."""
    gw = start_gateway()
    journal = gw.config.parent / "state" / "journal.sqlite3"
    copies = [tmp_path / f"backup-{i}.db" for i in range(3)]

    async def backup(dest) -> subprocess.CompletedProcess[bytes]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", "backup", str(dest), "--config", str(gw.config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, err = await process.communicate()
        return subprocess.CompletedProcess([], process.returncode or 0, out, err)

    async def scenario() -> tuple[list[subprocess.CompletedProcess[bytes]], int]:
        async with running(
            block_url=block_broker.url, police_url=police_broker.url, shops=["S00040"]
        ) as (panels, platform):
            assert platform is not None

            backed_up = asyncio.Event()

            async def press() -> int:
                sent = 0
                while not backed_up.is_set():
                    await panels["S00040"].send("panic")
                    sent += 1
                    await asyncio.sleep(0.005)
                return sent

            presses = asyncio.create_task(press(), name="presses")
            await wait_until(lambda: len(platform.by_id) >= 20, 15, "the first events forwarded")
            done = [await backup(dest) for dest in copies]
            backed_up.set()
            sent = await presses
            await wait_until(lambda: len(platform.by_id) >= sent, 30, "every press forwarded")
            return done, sent

    results, sent = asyncio.run(scenario())
    for result in results:
        assert result.returncode == 0, result.stderr
        assert b"Backed up" in result.stdout
    with sqlite3.connect(journal) as live:
        live_ids = [row[0] for row in live.execute("SELECT id FROM events ORDER BY seq")]
    counts = []
    for dest in copies:
        assert not dest.with_name(dest.name + "-wal").exists()
        with sqlite3.connect(f"file:{dest}?mode=ro", uri=True) as copy:
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            ids = [row[0] for row in copy.execute("SELECT id FROM events ORDER BY seq")]
        assert ids == live_ids[: len(ids)]
        counts.append(len(ids))
    assert counts == sorted(counts)
    assert counts[0] >= 20
    assert counts[-1] < len(live_ids)
    assert len(live_ids) >= sent


def test_backup_without_a_journal_is_one_line(tmp_path):
    """Backing up before the gateway has ever run says so in one line."""
    config = init_config(tmp_path, block_url="mqtt://127.0.0.1:1883", police_url=None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "backup",
            str(tmp_path / "b.db"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert (
        done.stderr
        == f"backup: no journal at {tmp_path}/state/journal.sqlite3: has the gateway run with this config?\n"
    )
