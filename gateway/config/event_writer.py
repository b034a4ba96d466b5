"""YAML text written as libyaml's events: the quick path for ``lianfang init``'s plain data.

``yaml.dump`` hands each value to PyYAML's representer, which builds a node
tree in Python (an alias check, a type lookup and a style guess per value); the
C emitter then walks the tree, asking the Python resolver twice per scalar
whether it may go unquoted. At 4,736 shops that is most of ``init``. ``dump``
emits the events the serializer would make straight to the same emitter:
scalars are written as the representer writes them, and each distinct text is
resolved once. It takes on dicts, lists, strings, numbers, booleans and None,
each used once (the representer gives a repeated dict or list an anchor);
anything else goes to ``yaml.dump``, so the text is always ``yaml.dump``'s.
"""

from __future__ import annotations

import io
from typing import Any

import yaml
from yaml.events import (
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)
from yaml.nodes import ScalarNode

_TAG = "tag:yaml.org,2002:"
_MAP, _SEQ, _STR, _INT, _BOOL, _NULL = (
    _TAG + name for name in ("map", "seq", "str", "int", "bool", "null")
)


class _Unusual(Exception):  # noqa: N818 - a signal to take yaml.dump, not an error
    """The data holds what this writer leaves to the representer."""


def dump(data: object, dumper: type[yaml.CSafeDumper]) -> str:
    """``yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)``, the same text."""
    stream = io.StringIO()
    writer = dumper(stream, sort_keys=False, allow_unicode=True)
    try:
        events = _Events(writer)
        events.document(data)
    except _Unusual:
        return yaml.dump(data, Dumper=dumper, sort_keys=False, allow_unicode=True)
    finally:
        writer.dispose()
    return stream.getvalue()


class _Events:
    """The serializer's events for one document, sent to the dumper's emitter as they come."""

    def __init__(self, dumper: yaml.CSafeDumper) -> None:
        if dumper.yaml_path_resolvers:
            raise _Unusual  # a tag that depends on where a node is: the serializer's to find
        self.dumper = dumper
        self.emit = dumper.emit
        # (tag, text) -> whether the text reads back as that tag plain, and quoted
        self.implicit: dict[tuple[str, str], tuple[bool, bool]] = {}
        self.seen: set[int] = set()  # the dicts and lists written, by identity

    def document(self, data: object) -> None:
        emit = self.emit
        emit(StreamStartEvent())
        emit(DocumentStartEvent())
        self.node(data)
        emit(DocumentEndEvent())
        emit(StreamEndEvent())

    def node(self, value: object) -> None:
        kind = type(value)
        if kind is str:
            self.scalar(_STR, value)  # type: ignore[arg-type]
        elif kind is dict or kind is list:
            if id(value) in self.seen:
                raise _Unusual  # the representer writes an anchor and an alias
            self.seen.add(id(value))
            if kind is dict:
                self.mapping(value)  # type: ignore[arg-type]
            else:
                self.sequence(value)  # type: ignore[arg-type]
        elif isinstance(value, float) and kind is float:
            node = self.dumper.represent_float(value)  # .inf, .nan and 1.0e+17 as it writes them
            self.scalar(node.tag, node.value)
        elif kind is int:
            self.scalar(_INT, str(value))
        elif kind is bool:
            self.scalar(_BOOL, "true" if value else "false")
        elif value is None:
            self.scalar(_NULL, "null")
        else:
            raise _Unusual

    def mapping(self, value: dict[Any, Any]) -> None:
        self.emit(MappingStartEvent(None, _MAP, implicit=True, flow_style=False))
        for key, item in value.items():
            self.node(key)
            self.node(item)
        self.emit(MappingEndEvent())

    def sequence(self, value: list[Any]) -> None:
        self.emit(SequenceStartEvent(None, _SEQ, implicit=True, flow_style=False))
        for item in value:
            self.node(item)
        self.emit(SequenceEndEvent())

    def scalar(self, tag: str, text: str) -> None:
        implicit = self.implicit.get((tag, text))
        if implicit is None:
            resolve = self.dumper.resolve
            implicit = (
                resolve(ScalarNode, text, (True, False)) == tag,  # type: ignore[no-untyped-call]
                resolve(ScalarNode, text, (False, True)) == tag,  # type: ignore[no-untyped-call]
            )
            self.implicit[tag, text] = implicit
        self.emit(ScalarEvent(None, tag, implicit, text))
