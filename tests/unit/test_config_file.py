"""load_config and `lianfang check`: every bad config is explained by file, line and path."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import time
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gateway.cli.main import app
from gateway.cli.online_check import check_online
from gateway.config.event_loader import quick_load
from gateway.config.file import _compose, _Loader, load_config
from gateway.errors import ConfigError, ConfigProblem
from lab.broker import Mosquitto, free_port

# A valid config; the table below breaks one thing at a time. Line numbers matter.
BASE = """\
gateway:
  id: GW-001
  large_grid: L1
broker:
  url: mqtt://127.0.0.1:1883
drivers:
- kind: mqtt_ingest
  name: shops
shops:
- id: S00001
  name: Changping Road No.1 Lottery
  lat: 23.359106
  lon: 116.6900737
  grid: {large: L1, medium: L1-M01, small: L1-M01-01}
  devices:
  - id: panel-1
- id: S00002
  name: Changping Road No.3 Grocery
  lat: 23.3591232
  lon: 116.6901508
  grid: {large: L1, medium: L1-M01, small: L1-M01-01}
"""
# BASE as `lianfang check` passes it: with no forwarder on purpose.
BASE_ALONE = BASE + "forwarders: []\nno_forwarders_ok: true\n"


class Broken(NamedTuple):
    """One broken config: BASE with one text replaced, and where the problem must be reported."""

    name: str
    old: str
    new: str
    line: int
    path: str
    message: str


BROKEN = [
    Broken(
        "unknown top-level key",
        "drivers:\n",
        "brokr: {url: mqtt://h:1}\ndrivers:\n",
        6,
        "brokr",
        "unknown key 'brokr' (expected one of: broker, commands, drivers,",
    ),
    Broken(
        "unknown nested key",
        "small: L1-M01-01}\n  devices:",
        "small: L1-M01-01, tiny: x}\n  devices:",
        14,
        "shops[0].grid.tiny",
        "unknown key 'tiny' (expected one of: large, medium, small)",
    ),
    Broken(
        "missing broker",
        "broker:\n  url: mqtt://127.0.0.1:1883\n",
        "",
        1,
        "broker",
        "missing key 'broker'",
    ),
    Broken(
        "missing shop position",
        "  lon: 116.6900737\n",
        "",
        10,
        "shops[0].lon",
        "missing key 'lon'",
    ),
    Broken(
        "lat 91",
        "lat: 23.359106",
        "lat: 91",
        12,
        "shops[0].lat",
        "latitude must be between -90 and 90",
    ),
    Broken(
        "lon -181",
        "lon: 116.6900737",
        "lon: -181",
        13,
        "shops[0].lon",
        "longitude must be between -180 and 180",
    ),
    Broken(
        "duplicate shop ids",
        "- id: S00002",
        "- id: S00001",
        17,
        "shops[1].id",
        "duplicate shop id 'S00001' (also at line 10)",
    ),
    Broken(
        "duplicate device ids",
        "  - id: panel-1\n",
        "  - id: panel-1\n  - id: panel-1\n",
        17,
        "shops[0].devices[1].id",
        "duplicate device id 'panel-1' (also at line 16)",
    ),
    Broken(
        "bad broker URL scheme",
        "url: mqtt://127.0.0.1:1883",
        "url: http://127.0.0.1:1883",
        5,
        "broker.url",
        "expected mqtt://HOST:PORT or mqtts://HOST:PORT",
    ),
    Broken(
        "mqtts without tls",
        "url: mqtt://127.0.0.1:1883",
        "url: mqtts://127.0.0.1:8883",
        4,
        "broker",
        "mqtts:// needs a 'tls' section",
    ),
    Broken(
        "YAML syntax error",
        "  name: Changping Road No.1 Lottery",
        "  name: Lottery: No.1",
        11,
        "",
        "YAML syntax error: mapping values are not allowed",
    ),
    Broken(
        "repeated YAML key",
        "  large_grid: L1\n",
        "  large_grid: L1\n  id: GW-002\n",
        4,
        "gateway.id",
        "duplicate key 'id' (also at line 2)",
    ),
    Broken(
        "gateway id with a space",
        "id: GW-001",
        "id: GW 001",
        2,
        "gateway.id",
        "must be 1 to 40 letters, digits",
    ),
    Broken(
        "driver of an unknown kind",
        "- kind: mqtt_ingest",
        "- kind: modbus_rtu",
        7,
        "drivers[0].kind",
        "unknown kind 'modbus_rtu' (expected one of: line_serial, ",
    ),
]


def write(directory: Path, text: str, name: str = "lianfang.yaml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def found_problems(path: Path) -> list[ConfigProblem]:
    """The problems load_config raises for ``path``; none when it loads."""
    try:
        load_config(path)
    except ConfigError as exc:
        return exc.problems
    return []


def problems_of(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_base_config_is_valid(tmp_path: Path) -> None:
    """The table's starting point loads, with relative paths taken from the file's folder."""
    config = load_config(write(tmp_path, BASE))
    assert [s.id for s in config.shops] == ["S00001", "S00002"]
    assert config.state_dir == tmp_path / "state"


@pytest.mark.parametrize("case", BROKEN, ids=[case.name for case in BROKEN])
def test_broken_config_is_located(tmp_path: Path, case: Broken) -> None:
    """Each broken config names the file, the exact line, the key path and what is expected."""
    assert case.old in BASE
    file = write(tmp_path, BASE.replace(case.old, case.new, 1))
    found = [p for p in problems_of(file) if p.path == case.path]
    assert found, f"no problem at {case.path!r}"
    assert (found[0].file, found[0].line) == (str(file), case.line)
    assert case.message in found[0].message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "the file is empty", id="empty file"),
        pytest.param("# nothing yet\n", "the file is empty", id="only a comment"),
        pytest.param("- gateway\n- broker\n", "top level must be a mapping", id="a list"),
        pytest.param("just text\n", "top level must be a mapping", id="a scalar"),
    ],
)
def test_file_without_a_mapping(tmp_path: Path, text: str, message: str) -> None:
    """A file with no top-level mapping is one problem at line 1."""
    [problem] = problems_of(write(tmp_path, text))
    assert problem.line == 1
    assert message in problem.message


def test_unclosed_bracket_names_where_it_opened(tmp_path: Path) -> None:
    """An unclosed flow list is reported where the parser stops, and says where it opened."""
    [problem] = problems_of(write(tmp_path, BASE.replace("id: S00001", "id: [S00001")))
    assert problem.line == 11
    assert "(from line 10)" in problem.message


def test_every_problem_is_listed(tmp_path: Path) -> None:
    """Independent mistakes are all reported in one run, in line order."""
    text = (
        BASE.replace("lat: 23.359106", "lat: 91")
        .replace("lon: 116.6901508", "lon: east")
        .replace("  large_grid: L1", "  large_grid: L1\n  colour: red")
    )
    problems = problems_of(write(tmp_path, text))
    assert [(p.line, p.path) for p in problems] == [
        (4, "gateway.colour"),
        (13, "shops[0].lat"),
        (21, "shops[1].lon"),
    ]
    assert problems[2].message == "must be a number"
    assert problems[2].value == "'east'"


def test_unknown_key_suggests_the_close_one(tmp_path: Path) -> None:
    """A misspelt key is unknown, with a 'did you mean'; the right one is missing."""
    problems = problems_of(write(tmp_path, BASE.replace("  large_grid:", "  lage_grid:")))
    assert [(p.line, p.path) for p in problems] == [
        (1, "gateway.large_grid"),
        (3, "gateway.lage_grid"),
    ]
    assert problems[0].message.startswith("missing key 'large_grid'")
    assert problems[1].message.endswith("did you mean 'large_grid'?")


def test_repeats_across_shops_and_other_shops(tmp_path: Path) -> None:
    """Each repeat of a shop id, in shops or other_shops, points back at the first."""
    other = (
        "other_shops:\n"
        "- {id: S00001, name: Next door, lat: 23.36, lon: 116.69,\n"
        "   grid: {large: L1, medium: L1-M02, small: L1-M02-01}, gateway_id: GW-002}\n"
    )
    problems = problems_of(write(tmp_path, BASE.replace("- id: S00002", "- id: S00001") + other))
    assert [(p.line, p.path, p.message) for p in problems] == [
        (17, "shops[1].id", "duplicate shop id 'S00001' (also at line 10)"),
        (23, "other_shops[0].id", "duplicate shop id 'S00001' (also at line 10)"),
    ]


def test_other_shop_of_this_gateway(tmp_path: Path) -> None:
    """An other shop that names this gateway is pointed at by its gateway_id."""
    other = (
        "other_shops:\n"
        "- id: S00003\n"
        "  name: Across the road\n"
        "  lat: 23.36\n"
        "  lon: 116.69\n"
        "  grid: {large: L1, medium: L1-M02, small: L1-M02-01}\n"
        "  gateway_id: GW-001\n"
    )
    [problem] = problems_of(write(tmp_path, BASE + other))
    assert (problem.line, problem.path) == (28, "other_shops[0].gateway_id")
    assert "list it under 'shops'" in problem.message


def test_secret_is_never_shown(tmp_path: Path) -> None:
    """A bad password is reported without echoing it."""
    text = BASE.replace("  url: mqtt://127.0.0.1:1883\n", "  url: mqtt://h:1\n  password: 12345\n")
    [problem] = problems_of(write(tmp_path, text))
    assert problem.path == "broker.password"
    assert problem.value is None
    assert "12345" not in str(problem)


def test_unquoted_closing_time_is_a_time(tmp_path: Path) -> None:
    """'closes: 23:30' is 23:30, not YAML 1.1's base-60 number 1410 (00:23:30)."""
    text = BASE.replace("  devices:\n", "  opens: 09:30\n  closes: 23:30\n  devices:\n", 1)
    shop = load_config(write(tmp_path, text)).shops[0]
    assert (shop.opens, shop.closes) == (time(9, 30), time(23, 30))


def test_missing_file(tmp_path: Path) -> None:
    """A missing file is one problem naming it."""
    path = tmp_path / "absent.yaml"
    [problem] = problems_of(path)
    assert (problem.file, problem.line) == (str(path), None)
    assert "no such file" in problem.message


def test_folder_instead_of_file(tmp_path: Path) -> None:
    """A folder given as the config is one problem, not an IsADirectoryError."""
    [problem] = problems_of(tmp_path)
    assert "is a folder" in problem.message


def test_file_not_utf8(tmp_path: Path) -> None:
    """A Latin-1 file is reported at the line of its first bad byte."""
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"gateway:\n  id: G\xe9\n")
    [problem] = problems_of(path)
    assert problem.line == 2
    assert "not UTF-8 text" in problem.message


def test_check_command_valid(tmp_path: Path) -> None:
    """`lianfang check` on a valid file prints one summary line and exits 0."""
    result = CliRunner().invoke(app, ["check", "--config", str(write(tmp_path, BASE_ALONE))])
    assert result.exit_code == 0, result.output
    assert "valid: gateway GW-001, 2 shops" in result.stdout
    assert result.stdout.count("\n") == 1


def test_check_command_invalid(tmp_path: Path) -> None:
    """A bad file gives 'file:line: path: message' lines on stderr, no traceback, exit 1."""
    file = write(tmp_path, BASE.replace("lat: 23.359106", "lat: 91"))
    result = CliRunner().invoke(app, ["check", "--config", str(file)])
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"{file}:12: shops[0].lat: latitude must be between -90 and 90 (got 91)" in result.stderr
    assert "Traceback" not in result.output


def test_check_command_missing_file(tmp_path: Path) -> None:
    """A missing file exits 2 and says so."""
    result = CliRunner().invoke(app, ["check", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "no such file" in result.stderr


def test_check_reads_config_from_environment(tmp_path: Path, monkeypatch) -> None:
    """Without --config, $LIANFANG_CONFIG names the file."""
    monkeypatch.setenv("LIANFANG_CONFIG", str(write(tmp_path, BASE_ALONE)))
    assert CliRunner().invoke(app, ["check"]).exit_code == 0


@pytest.fixture(scope="module")
def broker() -> Iterator[Mosquitto]:
    with Mosquitto() as running:
        yield running


def online_config(directory: Path, block_url: str, police_urls: list[str]) -> Path:
    forwarders = "".join(
        f"- {{kind: police_mqtt, name: police{i}, broker: {{url: '{url}'}}}}\n"
        for i, url in enumerate(police_urls)
    )
    text = BASE.replace("mqtt://127.0.0.1:1883", block_url) + "forwarders:\n" + forwarders
    return write(directory, text)


def test_online_every_broker_reached(tmp_path: Path, broker: Mosquitto) -> None:
    """With every broker up, `check --online` connects to each and passes."""
    file = online_config(tmp_path, broker.url, [broker.url])
    assert check_online(load_config(file)) == []
    result = CliRunner().invoke(app, ["check", "--online", "--config", str(file)])
    assert result.exit_code == 0, result.output
    assert "every broker reached" in result.stdout


def test_online_names_each_unreachable_broker(tmp_path: Path, broker: Mosquitto) -> None:
    """A refused port and a silent listener are each reported at their forwarder's URL."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        refused = f"mqtt://127.0.0.1:{free_port()}"
        mute = f"mqtt://127.0.0.1:{silent.getsockname()[1]}"
        file = online_config(tmp_path, broker.url, [broker.url, refused, mute])
        problems = check_online(load_config(file), file=str(file), timeout_s=1)
    assert [(p.path, p.file) for p in problems] == [
        ("forwarders[1].broker.url", str(file)),
        ("forwarders[2].broker.url", str(file)),
    ]
    assert "Connection refused" in problems[0].message
    assert "no answer" in problems[1].message


def test_online_missing_certificate(tmp_path: Path, broker: Mosquitto) -> None:
    """A missing CA file is named at its setting, relative to the config file."""
    text = BASE.replace(
        "  url: mqtt://127.0.0.1:1883\n",
        f"  url: mqtts://127.0.0.1:{broker.port}\n  tls: {{ca_file: certs/ca.pem}}\n",
    )
    file = write(tmp_path, text)
    result = CliRunner().invoke(app, ["check", "--online", "--config", str(file)])
    assert result.exit_code == 1
    assert f"broker.tls.ca_file: no such file: {tmp_path / 'certs' / 'ca.pem'}" in result.stderr


KEYS = st.sampled_from(
    [
        "gateway",
        "broker",
        "shops",
        "other_shops",
        "drivers",
        "forwarders",
        "id",
        "url",
        "lat",
        "lon",
        "grid",
        "large",
        "kind",
        "name",
        "devices",
        "tls",
        "neighbour_alert",
        "count",
    ]
) | st.text(max_size=8)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=20)
    | st.sampled_from(["mqtt://h:1", "mqtts://h", "GW-001", "23:30", "S00001", "mqtt_ingest"])
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(KEYS | st.integers(), inner, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=DOCUMENTS)
def test_random_documents_raise_only_config_errors(tmp_path_factory, document) -> None:
    """Any YAML document loads or raises ConfigError; nothing else escapes."""
    path = tmp_path_factory.getbasetemp() / "random.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert all(p.file == str(path) and p.message for p in found_problems(path))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    where=st.sampled_from(
        [
            ("gateway",),
            ("broker",),
            ("broker", "url"),
            ("shops", 0),
            ("shops", 0, "grid"),
            ("shops", 0, "devices"),
            ("shops", 1, "lat"),
            ("drivers", 0),
            ("drivers", 0, "kind"),
        ]
    ),
    value=DOCUMENTS,
)
def test_valid_config_with_a_random_part(tmp_path_factory, where, value) -> None:
    """The valid config with any part replaced by anything loads or raises ConfigError."""
    document = yaml.safe_load(BASE)
    parent = document
    for step in where[:-1]:
        parent = parent[step]
    parent[where[-1]] = value
    path = tmp_path_factory.getbasetemp() / "patched.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    assert all(p.file == str(path) and p.message for p in found_problems(path))


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=200))
def test_random_text_raises_only_config_errors(tmp_path_factory, text: str) -> None:
    """Arbitrary text, valid YAML or not, loads or raises ConfigError."""
    path = tmp_path_factory.getbasetemp() / "text.yaml"
    path.write_text(text, encoding="utf-8")
    assert all(p.file == str(path) and p.message for p in found_problems(path))


# --- the quick loader (libyaml's events straight to data) builds what the full loader builds ---

TRICKY_TEXT = st.sampled_from(
    ["yes", "No", "on", "OFF", "~", "null", "", "1_000", "0x1F", "012", "0b101", "23:30",
     "1:2:3", "2026-01-01", "2026-01-01 10:00:00", "1e3", "1.5e+3", ".inf", "-.NaN", "<<",
     "=", "True", "S00011", "panel-1", "a: b", "- x", "#x", "'q'", "多"]
)  # fmt: skip
SCALARS = st.one_of(
    TRICKY_TEXT,
    st.text(max_size=8),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
    st.dates(),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(TRICKY_TEXT, st.text(max_size=6), st.integers()), inner, max_size=4
        ),
    ),
    max_leaves=20,
)


@given(DOCUMENTS, st.booleans())
@settings(max_examples=300, deadline=None)
def test_the_quick_loader_builds_the_full_loaders_data_and_lines(value: object, flow: bool) -> None:
    text = yaml.safe_dump(
        {"top": value}, default_flow_style=flow, allow_unicode=True, sort_keys=False
    )
    full = _compose(text, "lianfang.yaml")
    lines: dict[tuple[str | int, ...], int] = {}
    quick = quick_load(text, _Loader, lines=lines)
    assert quick is not None  # nothing unusual in what safe_dump writes
    assert repr(quick) == repr(full.data)  # the same values of the same types (1, 1.0, True)
    assert lines == full.lines


def test_the_quick_loader_shares_anchored_values_as_the_full_loader_does() -> None:
    text = "a: &x {k: [1, 2]}\nb: *x\nc: &s 23:30\nd: *s\n"
    quick = quick_load(text, _Loader)
    assert (
        quick
        == _compose(text, "f").data
        == {"a": {"k": [1, 2]}, "b": {"k": [1, 2]}, "c": "23:30", "d": "23:30"}
    )
    assert isinstance(quick, dict)
    assert quick["a"] is quick["b"]


@pytest.mark.parametrize(
    "text",
    [
        "a: 1\na: 2\n",  # a repeated key: the full loader reports it with both lines
        "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n",  # a merge key
        "a: !!str 12\n",  # an explicit tag
        "? [1, 2]\n: x\n",  # a key that is not a scalar
        "a: 1\n---\nb: 2\n",  # two documents
        "",  # no document
        "a: [1, 2\n",  # a syntax error
        "a: &x [1, *x]\n",  # an alias inside its own anchor
        "a: &x 1\nb: &x 2\nc: *x\n",  # an anchor named twice
        "a: &x [1]\nb: &x {k: 2}\n",  # an anchor named twice, on collections
        "'1': a\n1: b\n",  # one key to the full loader, written twice
        "installed: 2024-02-30\n",  # a date the constructor refuses
        "x: 0b_\n",  # a number the constructor refuses
    ],
)
def test_the_quick_loader_leaves_what_is_unusual_to_the_full_loader(text: str) -> None:
    assert quick_load(text, _Loader) is None


class Unreadable(NamedTuple):
    """BASE_ALONE with one text replaced, and the problem line that must name it."""

    name: str
    old: str
    new: str
    said: str  # after "FILE:"


SHOP_LAT = "  lat: 23.359106\n"
UNREADABLE = [
    Unreadable(
        "a date that does not exist",
        SHOP_LAT,
        SHOP_LAT + "  installed: 2024-02-30\n",
        "13: shops[0].installed: 2024-02-30 is not a date",
    ),
    Unreadable(
        "a number with too many digits",
        "lat: 23.359106",
        "lat: " + "9" * 5000,
        "12: shops[0].lat: " + "9" * 57 + "... is a number of 5000 digits; at most 4300 are read",
    ),
    Unreadable(
        "a binary number with no digits",
        SHOP_LAT,
        SHOP_LAT + "  number: 0b_\n",
        "13: shops[0].number: 0b_ is not a whole number",
    ),
    Unreadable(
        "an explicit tag on a value it does not fit",
        "lat: 23.359106",
        "lat: !!float north",
        "12: shops[0].lat: north is not a number",
    ),
    Unreadable(
        "a boolean tag on another word",
        "lat: 23.359106",
        "lat: !!bool maybe",
        "12: shops[0].lat: maybe is not true or false",
    ),
    Unreadable(
        "a date tag on another word",
        "lat: 23.359106",
        "lat: !!timestamp today",
        "12: shops[0].lat: today is not a date",
    ),
    Unreadable(
        "a tag PyYAML does not know",
        "lat: 23.359106",
        "lat: !secret here",
        "12: shops[0].lat: unsupported YAML: could not determine a constructor for the tag",
    ),
    Unreadable(
        "a merge key on a number",
        SHOP_LAT,
        "  <<: 5\n" + SHOP_LAT,
        "12: shops[0].<<: unsupported YAML: while constructing a mapping (from line 10);"
        " expected a mapping or list of mappings for merging",
    ),
    Unreadable(
        "an alias to no anchor",
        "lat: 23.359106",
        "lat: *north",
        "12: shops[0].lat: YAML syntax error: found undefined alias",
    ),
    Unreadable(
        "an anchor named twice",
        "lat: 23.359106\n  lon: 116.6900737",
        "lat: &p 23.359106\n  lon: &p 116.6900737",
        "13: shops[0].lon: YAML syntax error: found duplicate anchor",
    ),
]


@pytest.mark.parametrize("case", UNREADABLE, ids=[case.name for case in UNREADABLE])
def test_a_value_the_loader_cannot_read_is_named_by_line_and_key_path(
    tmp_path: Path, case: Unreadable
) -> None:
    """`lianfang check` names the line and key path, and the daemon refuses with the same line.

    Both run as processes, as the installer and systemd run them.
    """
    assert case.old in BASE_ALONE
    file = write(tmp_path, BASE_ALONE.replace(case.old, case.new, 1))
    said = f"{file}:{case.said}"
    check = lianfang("check", "--config", str(file))
    assert check.returncode == 1
    assert check.stdout == ""
    assert said in check.stderr
    assert "Traceback" not in check.stderr
    start = lianfang("run", "--config", str(file))
    assert start.returncode == 2
    assert said in start.stderr
    assert "Traceback" not in start.stderr


def lianfang(*args: str) -> subprocess.CompletedProcess[str]:
    """`lianfang ARGS` in its own process."""
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_value_in_rules_yaml_is_named_under_rules(tmp_path: Path) -> None:
    """A value the loader cannot read in rules.yaml names that file and the rules key path."""
    write(tmp_path, "rules:\n- name: night\n  from: 2024-02-30\n", name="rules.yaml")
    [problem] = problems_of(write(tmp_path, BASE_ALONE))
    assert (problem.file, problem.line) == (str(tmp_path / "rules.yaml"), 3)
    assert (problem.path, problem.message) == ("rules.rules[0].from", "2024-02-30 is not a date")


def test_a_problem_in_a_quickly_loaded_file_still_has_its_line(tmp_path: Path) -> None:
    """The lines are indexed only once a problem is found, from the same text."""
    path = tmp_path / "lianfang.yaml"
    path.write_text(BASE_ALONE.replace("lat: 23.3591232", "lat: 123.3591232"))
    assert isinstance(quick_load(path.read_text(), _Loader), dict)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    [problem] = raised.value.problems
    assert (problem.file, problem.path, problem.line) == (str(path), "shops[1].lat", 19)
