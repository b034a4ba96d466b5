"""The config's data built straight from libyaml's events: the quick path for a file that is fine.

PyYAML's safe loader first composes a tree of nodes (calling a Python resolver for
every scalar) and then constructs the data from it: at 4,736 shops that is seconds.
``quick_load`` reads the parser's events and builds the same data in one pass,
resolving plain scalars by the loader's own implicit resolvers and constructing
every non-text scalar (numbers, booleans, nulls, dates) by the loader's own
constructors, so the data is the loader's. Anything it does not take on (an
explicit tag, a merge key, a repeated key, a key that is not a scalar, an alias
to an unfinished anchor, more or less than one document, a syntax error) gives
``None``: the caller then parses with the full loader, which says what is wrong
and where; ``path_at`` names the key path at the line and column it gives.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml
from yaml.events import (
    AliasEvent,
    CollectionEndEvent,
    CollectionStartEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    NodeEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)

Loc = tuple[str | int, ...]
"""A key path: keys and item indexes from the top of the document."""

_STR = "tag:yaml.org,2002:str"
_NOT_DATA = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")
_KEY_TYPES = (str, int, float, bool, type(None))


class _Unusual(Exception):  # noqa: N818 - a signal to take the full loader, not an error
    """The text uses YAML this loader leaves to the full one."""


class _Open:
    """A mapping or sequence being filled, with its key path and anchor."""

    __slots__ = ("anchor", "container", "key", "key_text", "key_texts", "path")

    def __init__(
        self, container: dict[Any, Any] | list[Any], path: Loc, anchor: str | None
    ) -> None:
        self.container = container
        self.path = path
        self.anchor = anchor
        self.key: Any = _NO_KEY
        self.key_text = ""  # the key as written: key paths name keys so (as pydantic does)
        self.key_texts: set[str] = set()  # '1' and 1 are one key to the full loader


_NO_KEY = object()
"""A mapping's next scalar is a key."""


def quick_load(
    text: str, loader: type[yaml.CSafeLoader], *, lines: dict[Loc, int] | None = None
) -> object | None:
    """The data of the single document in ``text`` as ``loader`` reads it; None to use it.

    ``lines``, if given, is filled with the line of every key path (a key's own
    line, an item's first line), as the full loader's index has them.
    """
    parser = loader(text)
    try:
        return _Builder(parser, loader, lines).build()
    except (_Unusual, yaml.YAMLError, ValueError, TypeError, OverflowError):
        # A constructor's own error too (``installed: 2024-02-30``): the full loader
        # turns it into a problem with its line, instead of a traceback.
        return None
    finally:
        parser.dispose()


class _Builder:
    """The data of one document, event by event."""

    def __init__(
        self,
        parser: yaml.CSafeLoader,
        loader: type[yaml.CSafeLoader],
        lines: dict[Loc, int] | None,
    ) -> None:
        if loader.yaml_implicit_resolvers.get(None):
            raise _Unusual  # resolvers for any first character: not the safe loader's
        self.parser = parser
        self.resolvers = loader.yaml_implicit_resolvers
        self.constructors = loader.yaml_constructors
        self.lines = lines
        self.anchors: dict[str, object] = {}
        # Keys and many values repeat shop after shop; every value a resolver makes
        # (number, boolean, null, date) is immutable, so one may be shared.
        self.resolved: dict[str, object] = {}
        self.stack: list[_Open] = []
        self.root: object = None

    def build(self) -> object:
        """The document's data; raises ``_Unusual`` for what the full loader must read."""
        handlers: dict[object, Callable[[Any], None]] = {
            MappingStartEvent: self._mapping,
            SequenceStartEvent: self._sequence,
            AliasEvent: self._alias,
            MappingEndEvent: self._close,
            SequenceEndEvent: self._close,
        }
        next_event = self.parser.get_event
        next_event()  # the stream's start
        if not isinstance(next_event(), DocumentStartEvent):
            raise _Unusual  # no document
        scalar: Callable[[Any], None] = self._scalar  # most events: tried first
        while (kind := type(event := next_event())) is not DocumentEndEvent:
            if kind is ScalarEvent:
                scalar(event)
                continue
            handler = handlers.get(kind)
            if handler is None:
                raise _Unusual
            handler(event)
        if not isinstance(next_event(), StreamEndEvent):
            raise _Unusual  # more than one document
        return self.root

    def _scalar(self, event: ScalarEvent) -> None:
        if event.tag is not None and event.tag != "!":
            raise _Unusual
        text = event.value
        value: object = text
        if event.implicit[0]:  # plain: each text is resolved once
            value = self.resolved.get(text, _NO_KEY)
            if value is _NO_KEY:
                value = self._resolved(text)
        self._place(value, event)
        if event.anchor is not None:
            self._anchor(event.anchor)
            self.anchors[event.anchor] = value

    def _resolved(self, text: str) -> object:
        """A plain scalar's value, first met: its tag found as the loader's resolver finds it."""
        value: object = text
        for tag, pattern in self.resolvers.get(text[:1], ()):
            if pattern.match(text):
                construct = self.constructors.get(tag)
                if construct is None or tag in _NOT_DATA:
                    raise _Unusual
                value = construct(self.parser, yaml.ScalarNode(tag, text))
                break
        self.resolved[text] = value
        return value

    def _mapping(self, event: MappingStartEvent) -> None:
        self._open({}, event)

    def _sequence(self, event: SequenceStartEvent) -> None:
        self._open([], event)

    def _open(self, container: dict[Any, Any] | list[Any], event: CollectionStartEvent) -> None:
        if event.tag is not None and event.tag != "!":
            raise _Unusual
        path = self._next_path()
        self._place(container, event)
        if event.anchor is not None:
            self._anchor(event.anchor)
        self.stack.append(_Open(container, path, event.anchor))

    def _anchor(self, name: str) -> None:
        """A new anchor's name; one used before is the full loader's to refuse."""
        if name in self.anchors or any(o.anchor == name for o in self.stack):
            raise _Unusual

    def _alias(self, event: AliasEvent) -> None:
        if event.anchor not in self.anchors:
            raise _Unusual  # an anchor still open: a recursive structure
        self._place(self.anchors[event.anchor], event)

    def _close(self, _event: CollectionEndEvent) -> None:
        done = self.stack.pop()
        if done.anchor is not None:
            self.anchors[done.anchor] = done.container

    def _place(self, value: object, event: NodeEvent) -> None:
        """Put ``value`` where the document is at."""
        stack = self.stack
        if not stack:
            self.root = value
            if self.lines is not None:
                self.lines[()] = _line(event)
            return
        parent = stack[-1]
        container = parent.container
        if parent.key is not _NO_KEY:  # a mapping's value (only a mapping has a key)
            container[parent.key] = value
            parent.key = _NO_KEY
            return
        lines = self.lines
        if type(container) is list:
            if lines is not None:
                lines[(*parent.path, len(container))] = _line(event)
            container.append(value)
            return
        if type(event) is not ScalarEvent or type(value) not in _KEY_TYPES:
            raise _Unusual  # a key that is a collection or an alias
        text = event.value
        if value in container or text in parent.key_texts:
            raise _Unusual  # a repeated key: the full loader reports both lines
        parent.key_texts.add(text)
        parent.key, parent.key_text = value, text
        if lines is not None:
            lines[(*parent.path, text)] = _line(event)

    def _next_path(self) -> Loc:
        """The key path of the next value placed (only a collection needs its own)."""
        if not self.stack:
            return ()
        parent = self.stack[-1]
        if isinstance(parent.container, list):
            return (*parent.path, len(parent.container))
        return (*parent.path, parent.key_text)


def _line(event: NodeEvent) -> int:
    """The line an event starts on (the parser marks every event)."""
    mark = event.start_mark
    return 0 if mark is None else mark.line + 1


def path_at(text: str, loader: type[yaml.CSafeLoader], line: int, column: int) -> Loc | None:
    """The key path of the key or value written at ``line``, ``column`` (from 0, as marks count).

    The full loader names a mark for a value it cannot read, an alias to nothing or
    an anchor named twice; the parser's events still flow there, and give its key
    path. None if no key or value starts there (or the text does not parse up to it).
    """
    parser = loader(text)
    open_: list[_Place] = []
    try:
        while not isinstance(event := parser.get_event(), StreamEndEvent):
            if isinstance(event, CollectionEndEvent):
                open_.pop()
            elif isinstance(event, NodeEvent):
                path = _path_of_next(open_, event)
                mark = event.start_mark
                if mark is not None and (mark.line, mark.column) == (line, column):
                    return path
                if isinstance(event, CollectionStartEvent):
                    open_.append(_Place(path, mapping=isinstance(event, MappingStartEvent)))
    except yaml.YAMLError:
        return None
    finally:
        parser.dispose()
    return None


class _Place:
    """A mapping or sequence ``path_at`` is in: how far it is."""

    __slots__ = ("items", "key", "mapping", "path")

    def __init__(self, path: Loc, *, mapping: bool) -> None:
        self.path = path
        self.mapping = mapping
        self.items = 0
        self.key: str | None = None  # the key whose value is next, in a mapping


def _path_of_next(open_: list[_Place], event: NodeEvent) -> Loc:
    if not open_:
        return ()
    place = open_[-1]
    if not place.mapping:
        place.items += 1
        return (*place.path, place.items - 1)
    if place.key is None:  # a key: named by its own path, as its value is
        if not isinstance(event, ScalarEvent):
            place.key = "?"  # a key that is a list or mapping: the mapping's own path names it
            return place.path
        place.key = event.value
        return (*place.path, place.key)
    path, place.key = (*place.path, place.key), None
    return path
