"""Validation errors worded for an installer: where (file, key path, line) and what is wrong.

``explain_errors`` turns each pydantic error into a ``ConfigProblem`` located by
a ``Locate`` (the YAML file's lines, or a survey sheet's rows and columns).
"""

from __future__ import annotations

import difflib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from gateway.config.model import GatewayConfig, Loc
from gateway.errors import ConfigProblem

if TYPE_CHECKING:
    from pydantic.fields import FieldInfo
    from pydantic_core import ErrorDetails

MAX_SHOWN_VALUE = 60


class Spot(NamedTuple):
    """Where an installer finds a value: file, key path (or column), and line if known."""

    file: str
    path: str
    line: int | None


Locate = Callable[[Loc], Spot]
"""Where a path of the validated data came from."""

_NOUNS = {"lat": "latitude", "lon": "longitude"}
_BOUND_WORDS = {"gt": "more than", "ge": "at least", "lt": "less than", "le": "at most"}
_PATTERN_WORDS = {
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$": "must be 1 to 40 letters, digits, '_', '.' or '-', "
    "starting with a letter or digit (no spaces, '/', '+' or '#')",
    r"^[a-z0-9][a-z0-9_.-]{0,39}$": "must be 1 to 40 lower-case letters, digits, '_', '.' or '-', "
    "starting with a letter or digit",
    r"^[a-z0-9][a-z0-9_.-]{0,59}$": "must be 1 to 60 lower-case letters, digits, '_', '.' or '-', "
    "starting with a letter or digit",
}
_WORDS = {
    "string_type": "must be text",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "time_type": "must be a time of day, 'HH:MM'",
    "time_parsing": "must be a time of day, 'HH:MM'",
    "path_type": "must be a file path",
    "string_too_long": "must be at most {max_length} characters",
    "too_long": "may have at most {max_length} entries",
    "literal_error": "must be {expected}",
}
_KIND_WORDS: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "true/false"),
    ((int, float), "a number"),
    (str, "text"),
    (dict, "a mapping"),
    (list, "a list"),
)


def path_text(loc: Loc) -> str:
    """A key path as an installer writes it: ``forwarders[0].broker.url``."""
    text = ""
    for step in loc:
        if isinstance(step, int) and not isinstance(step, bool):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else str(step)
    return text


def explain_errors(exc: ValidationError, locate: Locate) -> list[ConfigProblem]:
    """One problem per validation error (one per item for repeats), placed by ``locate``."""
    return [problem for error in exc.errors() for problem in _explain(error, locate)]


@dataclass(frozen=True)
class _Where:
    """What a pydantic ``loc`` points at, found by walking the config's types."""

    loc: Loc  # the path in the data: union tags that pydantic adds are left out
    field: FieldInfo | None  # the model field at the end of the path, if it is one
    container: tuple[type[BaseModel], ...]  # the models whose key the last step is
    annotation: object  # the type expected at the end of the path (None if unknown)


def _where(loc: Loc) -> _Where:
    annotation: object = GatewayConfig
    data: list[str | int] = []
    field: FieldInfo | None = None
    container: tuple[type[BaseModel], ...] = ()
    for step in loc:
        models = _models(annotation)
        if isinstance(step, int) and not isinstance(step, bool):
            annotation, field, container = _item_type(annotation), None, ()
        elif owner := next((m for m in models if step in m.model_fields), None):
            field = owner.model_fields[str(step)]
            annotation, container = field.annotation, tuple(models)
        elif tagged := [m for m in models if step in _tags(m)]:
            annotation = tagged[0]
            continue
        elif models or _mapping_value_type(annotation) is not None:
            annotation, field, container = _mapping_value_type(annotation), None, tuple(models)
        else:  # a label pydantic gives a member of a union of plain types
            continue
        data.append(step)
    return _Where(tuple(data), field, container, annotation)


def _members(annotation: object) -> list[object]:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in get_args(annotation) for m in _members(arg)]
    return [annotation]


def _models(annotation: object) -> list[type[BaseModel]]:
    return [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]


def _item_type(annotation: object) -> object:
    for member in _members(annotation):
        if get_origin(member) in (list, tuple, set, frozenset) and get_args(member):
            return get_args(member)[0]
    return None


def _mapping_value_type(annotation: object) -> object:
    for member in _members(annotation):
        if get_origin(member) is dict:
            return get_args(member)[1]
    return None


def _tags(model: type[BaseModel]) -> set[str]:
    """Literal text values of the model's fields: what a tagged union labels it with."""
    return {
        value
        for field in model.model_fields.values()
        if get_origin(field.annotation) is Literal
        for value in get_args(field.annotation)
        if isinstance(value, str)
    }


def _choices(annotation: object, key: str) -> str:
    """The values of ``key`` that the union members at ``annotation`` accept, as a list."""
    return ", ".join(
        sorted(
            str(value)
            for model in _models(annotation)
            if key in model.model_fields
            for value in get_args(model.model_fields[key].annotation)
        )
    )


def _explain(error: ErrorDetails, locate: Locate) -> list[ConfigProblem]:
    where = _where(tuple(error["loc"]))
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "duplicate":
        return [_repeat(where.loc, repeat, locate) for repeat in ctx["repeats"]]
    loc = (*where.loc, *ctx.get("at", ()))
    if kind == "invalid_key":
        loc = loc[:-1]
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        loc = (*loc, str(ctx["discriminator"]).strip("'"))
    spot = locate(loc)
    # A missing key has no line of its own: point at the mapping that lacks it.
    line = locate(loc[:-1]).line if kind in ("missing", "union_tag_not_found") else spot.line
    message = _message(error, where, loc)
    return [ConfigProblem(spot.file, spot.path, message, line, _shown(error, where))]


def _repeat(base: Loc, repeat: dict[str, Any], locate: Locate) -> ConfigProblem:
    spot, first = locate((*base, *repeat["at"])), locate((*base, *repeat["first"]))
    also = f"line {first.line}" if first.line is not None else first.path
    message = f"duplicate {repeat['what']} {repeat['value']!r} (also at {also})"
    return ConfigProblem(spot.file, spot.path, message, spot.line)


def _message(error: ErrorDetails, where: _Where, loc: Loc) -> str:
    kind = error["type"]
    key = str(loc[-1]) if loc else ""
    if kind == "missing":
        about = _about(where.field)
        return f"missing key {key!r}" + (f": {about}" if about else "")
    if kind == "extra_forbidden":
        return _unknown_key(key, where.container)
    if kind == "union_tag_not_found":
        return f"missing key {key!r} (expected one of: {_choices(where.annotation, key)})"
    if kind == "union_tag_invalid":
        tag = (error.get("ctx") or {})["tag"]
        return f"unknown {key} {tag!r} (expected one of: {_choices(where.annotation, key)})"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _range(_NOUNS.get(key, key), where.field) or error["msg"]
    return _shape(error, where) or _plain_message(error)


def _shape(error: ErrorDetails, where: _Where) -> str | None:
    """What a mapping, list or key should have been, when it was something else."""
    kind, got = error["type"], value_kind(error["input"])
    if kind == "invalid_key":
        return f"keys must be text, not {got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        keys = ", ".join(sorted({k for m in _models(where.annotation) for k in m.model_fields}))
        return f"expected a mapping of keys ({keys}), not {got}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list (lines starting with '- '), not {got}"
    return None


def _plain_message(error: ErrorDetails) -> str:
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind in _WORDS:
        return _WORDS[kind].format(**ctx)
    if kind == "string_pattern_mismatch":
        return _PATTERN_WORDS.get(ctx["pattern"], f"must match the pattern {ctx['pattern']}")
    if kind == "string_too_short":
        n = ctx["min_length"]
        return "must not be empty" if n == 1 else f"must be at least {n} characters"
    if kind == "too_short":
        n = ctx["min_length"]
        return f"needs at least {n} {'entry' if n == 1 else 'entries'}"
    return error["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _about(field: FieldInfo | None) -> str:
    """The field's description as a clause: "the block's local broker"."""
    if field is None or not field.description:
        return ""
    text = field.description.rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _unknown_key(key: str, container: tuple[type[BaseModel], ...]) -> str:
    expected = sorted({name for model in container for name in model.model_fields})
    if not expected:
        return f"unknown key {key!r}"
    message = f"unknown key {key!r} (expected one of: {', '.join(expected)})"
    close = difflib.get_close_matches(key, expected, n=1)
    return f"{message}; did you mean {close[0]!r}?" if close else message


def _range(noun: str, field: FieldInfo | None) -> str | None:
    """Words for the field's bounds, such as "latitude must be between -90 and 90"."""
    bounds: dict[str, object] = {}
    for constraint in field.metadata if field is not None else []:
        for name in _BOUND_WORDS:
            if getattr(constraint, name, None) is not None:
                bounds[name] = getattr(constraint, name)
    if "ge" in bounds and "le" in bounds:
        return f"{noun} must be between {_number(bounds['ge'])} and {_number(bounds['le'])}"
    if not bounds:
        return None
    return f"{noun} must be " + " and ".join(
        f"{_BOUND_WORDS[name]} {_number(value)}" for name, value in bounds.items()
    )


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def value_kind(value: object) -> str:
    """What a YAML value is, in an installer's words."""
    if value is None:
        return "empty"
    return next((words for kinds, words in _KIND_WORDS if isinstance(value, kinds)), "a value")


def _shown(error: ErrorDetails, where: _Where) -> str | None:
    """The offending value as the installer wrote it; never a secret, a mapping or a list."""
    value = error.get("input")
    if (
        error["type"] in ("missing", "extra_forbidden", "duplicate")
        or value is None
        or isinstance(value, dict | list)
        or SecretStr in _members(where.annotation)
    ):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return _clipped(repr(value) if isinstance(value, str) else str(value))


def _clipped(text: str) -> str:
    return text if len(text) <= MAX_SHOWN_VALUE else text[: MAX_SHOWN_VALUE - 3] + "..."


_TAG_NOUNS = {"int": "a whole number", "float": "a number", "timestamp": "a date",
              "bool": "true or false", "binary": "base64 data"}  # fmt: skip


def unreadable(node: yaml.Node) -> str:
    """What is wrong with a value YAML's constructor refused: ``2024-02-30 is not a date``."""
    kind = node.tag.rsplit(":", 1)[-1]
    noun = _TAG_NOUNS.get(kind, f"a {kind}")
    if not isinstance(node, yaml.ScalarNode):
        return f"is not {noun}"
    text = str(node.value)
    digits = sum(c.isdigit() for c in text)
    if kind == "int" and digits > (limit := sys.get_int_max_str_digits()) > 0:
        return f"{_clipped(text)} is a number of {digits} digits; at most {limit} are read"
    return f"{_clipped(text)} is not {noun}"
