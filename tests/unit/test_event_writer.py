"""The event writer writes, byte for byte, what ``yaml.dump`` writes (init's quick path)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.event_writer import dump

TRICKY_TEXT = st.sampled_from(
    ["yes", "No", "on", "~", "null", "", " x", "x ", "1_000", "0x1F", "012", "23:30", "08:00",
     "2026-01-01", "1e3", ".inf", "<<", "=", "a: b", "- x", "#x", "x #y", "'q'", '"q"', "&a",
     "*a", "!t", "%x", "@x", "`x", "|", ">", "?", "a\nb", "a\tb", "多", "\u00a0", "\x85", "\ufeff",
     "+86-754-82171979", "Street 001 No.1 Electronics " * 4]
)  # fmt: skip
SCALARS = st.one_of(
    TRICKY_TEXT,
    st.text(max_size=12),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.none(),
    st.dates(),  # not the writer's: left to yaml.dump
)
KEYS = st.one_of(TRICKY_TEXT, st.text(max_size=6), st.integers(), st.booleans(), st.none())
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=25,
)
DUMPERS = [yaml.SafeDumper, *([yaml.CSafeDumper] if hasattr(yaml, "CSafeDumper") else [])]


@given(DOCUMENTS, st.sampled_from(DUMPERS))
@settings(max_examples=400, deadline=None)
def test_the_event_writer_writes_what_yaml_dump_writes(value: object, dumper: Any) -> None:
    expected = yaml.dump(value, Dumper=dumper, sort_keys=False, allow_unicode=True)
    assert dump(value, dumper) == expected


def test_a_dict_given_twice_is_anchored_as_yaml_dump_anchors_it() -> None:
    grid = {"large": "L1"}
    value = {"shops": [{"grid": grid}, {"grid": grid}]}
    text = dump(value, yaml.CSafeDumper)
    assert "&id001" in text
    assert text == yaml.dump(value, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True)


def test_a_dumper_with_path_resolvers_is_left_to_yaml_dump() -> None:
    class Tagging(yaml.SafeDumper):
        """Writes the text under ``code`` as an int's tag would have it read."""

    Tagging.add_path_resolver("tag:yaml.org,2002:int", ["code"], str)
    value = {"code": "12", "name": "12"}
    expected = yaml.dump(value, Dumper=Tagging, sort_keys=False, allow_unicode=True)
    assert dump(value, Tagging) == expected
