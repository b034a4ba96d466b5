"""DC-09 set up from `lianfang init` and the survey sheet: flags, accounts, key file permissions."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from gateway.cli.main import app
from gateway.config.file import load_config
from gateway.errors import ConfigError
from gateway.events import EventKind
from gateway.forwarders.dc09 import Dc09Config
from gateway.forwarders.dc09_codes import CodeEntry, CodeTable, shop_account, zone_number
from tests.forwarder_rig import event
from tests.harness import SURVEY

KEY = "00112233445566778899AABBCCDDEEFF"


def init(directory: Path, *args: str, survey: Path = SURVEY) -> Result:
    return CliRunner().invoke(
        app,
        ["init", "--survey", str(survey), "--gateway", "GW-001", "--dir", str(directory), *args],
    )


def test_init_writes_a_dc09_forwarder(tmp_path: Path) -> None:
    """--dc09 and its options become a 'centre' forwarder; with a key the file is mode 600."""
    result = init(
        tmp_path,
        "--dc09", "tcp://10.0.0.5:9000", "--dc09-backup", "udp://10.0.0.6:9000",
        "--dc09-account", "ab12", "--dc09-key", KEY,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    path = tmp_path / "lianfang.yaml"
    assert path.stat().st_mode & 0o077 == 0
    (centre,) = load_config(path).forwarders
    assert isinstance(centre, Dc09Config)
    assert (centre.url, centre.backup_url, centre.account) == (
        "tcp://10.0.0.5:9000",
        "udp://10.0.0.6:9000",
        "AB12",
    )
    assert centre.key is not None
    assert centre.key.get_secret_value() == KEY
    assert KEY not in repr(centre)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--dc09", "tcp://h:1", "--dc09-account", "12"], "--dc09-account: must match"),
        (["--dc09", "tcp://h:1"], "--dc09-account: missing"),
        (["--dc09", "http://h:1", "--dc09-account", "123"], "--dc09: expected tcp://"),
        (
            ["--dc09", "tcp://h:1", "--dc09-account", "123", "--dc09-key", "0011"],
            "--dc09-key: an AES key is 16, 24 or 32 bytes",
        ),
        (
            ["--dc09", "tcp://h:1", "--dc09-account", "123", "--dc09-key", KEY[:20],
             "--dc09-key-format", "ascii"],
            "--dc09-key: an AES key is 16, 24 or 32 bytes, this one is 20",
        ),
    ],
)  # fmt: skip
def test_bad_dc09_options_are_named(tmp_path: Path, args: list[str], expected: str) -> None:
    """Each bad DC-09 option is blamed on its flag, and nothing is written."""
    result = init(tmp_path, *args)
    assert result.exit_code == 1
    assert expected in result.stderr
    assert not (tmp_path / "lianfang.yaml").exists()


def test_world_readable_key_is_refused(tmp_path: Path) -> None:
    """A config holding an AES key that every user may read does not load."""
    assert (
        init(tmp_path, "--dc09", "udp://h:1", "--dc09-account", "123", "--dc09-key", KEY).exit_code
        == 0
    )
    path = tmp_path / "lianfang.yaml"
    path.chmod(0o644)
    with pytest.raises(
        ConfigError, match=r"forwarders\[0\]\.key: is a secret in a file every user"
    ):
        load_config(path)


def test_survey_account_column(tmp_path: Path) -> None:
    """A sheet's 'account' column sets a shop's account; a bad one is located by line and column."""
    with SURVEY.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))[:3]
    rows[0]["account"] = "C0FFEE"
    sheet = tmp_path / "survey.csv"

    def write() -> None:
        with sheet.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[*rows[0].keys()])
            writer.writeheader()
            writer.writerows(rows)

    write()
    assert init(tmp_path, survey=sheet).exit_code == 0
    shops = load_config(tmp_path / "lianfang.yaml").shops
    assert [s.account for s in shops] == ["C0FFEE", None, None]
    assert [shop_account(s.id, s.account) for s in shops] == ["C0FFEE", "00002", "00003"]
    rows[1]["account"] = "not-hex"
    write()
    result = init(tmp_path, "--force", survey=sheet)
    assert result.exit_code == 1
    assert f"{sheet}:3: account:" in result.stderr


def test_accounts_and_zones() -> None:
    """Accounts default to the shop id's digits (3 to 16); zones to their digits, else 000."""
    assert shop_account("S00011", None) == "00011"
    assert shop_account("S1", None) == "001"
    assert shop_account("X" + "9" * 20, None) == "9" * 16
    assert shop_account("S1", "beef") == "BEEF"
    assert (zone_number("zone-5"), zone_number(None), zone_number("front"), zone_number("1234")) == (
        5, 0, 0, 234,
    )  # fmt: skip


def test_code_table_and_overrides() -> None:
    """Kinds map as DESIGN.md lists; config can change or stop a kind; restores take qualifier 3."""
    table = CodeTable.with_overrides({})
    assert table.event_data(event(EventKind.PANIC), partition=1).code == 120  # type: ignore[union-attr]
    arm = table.event_data(event(EventKind.ARM), partition=1)
    disarm = table.event_data(event(EventKind.DISARM), partition=1)
    assert (arm.qualifier, arm.code, disarm.qualifier, disarm.code) == (3, 401, 1, 401)  # type: ignore[union-attr]
    restore = table.event_data(event(EventKind.RESTORE, restores="fire"), partition=1)
    assert (restore.qualifier, restore.code, restore.sia_code) == (3, 110, "FH")  # type: ignore[union-attr]
    assert table.event_data(event(EventKind.DOOR_OPEN), partition=1) is None
    # Doors become intrusions by rule; the rest are the gateway's own bookkeeping.
    assert set(table.unmapped()) == {
        "door_open", "door_close", "response", "area_alert", "escalation",
        "command_ack", "command_refused", "sms",
    }  # fmt: skip
    custom = CodeTable.with_overrides(
        {"door_open": CodeEntry(cid=134, sia="BA", sia_restore="BH"), "test": None}
    )
    assert custom.sends("door_open")
    assert not custom.sends("test")
    config = Dc09Config(kind="dc09", name="c", url="tcp://h:1", account="123", codes={"test": None})
    assert not config.accepts_kind(EventKind.TEST)
    assert not config.accepts_kind(EventKind.HEARTBEAT)
    assert config.accepts_kind(EventKind.PANIC)
    with pytest.raises(ValueError, match="unknown event kinds nope"):
        Dc09Config(kind="dc09", name="c", url="tcp://h:1", account="123", codes={"nope": None})


def test_walk_test_reads_as_test_reports_at_the_centre() -> None:
    """Any event of a shop under walk test is a manual test (601, TX); the mode opens and closes as 607."""
    table = CodeTable.with_overrides({})
    for kind in (EventKind.PANIC, EventKind.DURESS, EventKind.TAMPER):
        data = table.event_data(event(kind, test=True), partition=1)
        assert (data.qualifier, data.code, data.sia_code) == (1, 601, "TX")  # type: ignore[union-attr]
    started = table.event_data(event(EventKind.WALK_TEST_STARTED), partition=1)
    ended = table.event_data(event(EventKind.WALK_TEST_ENDED), partition=1)
    assert (started.qualifier, started.code, started.sia_code) == (1, 607, "TS")  # type: ignore[union-attr]
    assert (ended.qualifier, ended.code, ended.sia_code) == (3, 607, "TE")  # type: ignore[union-attr]
