"""Read ``lianfang.yaml``: parse it keeping line numbers, validate it, explain every problem.

``load_config`` returns a ready ``GatewayConfig`` or raises ``ConfigError`` with
every problem found, each located by file, key path (``shops[3].lat``) and line,
and worded for an installer. ``check_online`` then tries each broker the config
names, as ``lianfang check --online`` does.

The YAML is read as YAML 1.1 (PyYAML's safe loader) with one change: base-60
numbers are not numbers, so ``closes: 23:30`` stays the text ``"23:30"`` instead
of becoming 1410 and, silently, 00:23:30.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, NamedTuple, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError
from yaml.constructor import SafeConstructor

from gateway.config.model import GatewayConfig, Loc
from gateway.errors import ConfigError, ConfigProblem
from gateway.mqtt.client import BrokerConfig
from gateway.mqtt.link import LinkDown, MqttLink

try:
    from yaml import CSafeLoader as _SafeLoader  # libyaml parses about six times faster
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

if TYPE_CHECKING:
    from pathlib import Path

    from pydantic.fields import FieldInfo
    from pydantic_core import ErrorDetails

ONLINE_TIMEOUT_S = 3.0
RULES_FILE = "rules.yaml"
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


class _Loader(_SafeLoader):
    """The safe loader, reading base-60 numbers (``23:30``) as text."""


def _base60_as_text(
    construct: Callable[[_Loader, yaml.ScalarNode], object],
) -> Callable[[_Loader, yaml.Node], object]:
    def construct_number(loader: _Loader, node: yaml.Node) -> object:
        assert isinstance(node, yaml.ScalarNode)
        text = loader.construct_scalar(node)
        return text if ":" in text else construct(loader, node)

    return construct_number


_Loader.add_constructor(
    "tag:yaml.org,2002:int", _base60_as_text(SafeConstructor.construct_yaml_int)
)
_Loader.add_constructor(
    "tag:yaml.org,2002:float", _base60_as_text(SafeConstructor.construct_yaml_float)
)


def load_config(path: Path) -> GatewayConfig:
    """Read, parse and validate the config at ``path``; relative paths are taken from its folder.

    Raises:
        ConfigError: with every problem found, each with its file, key path and line.
    """
    file = str(path)
    data, lines, problems = _parse(_read_text(path), file)
    locate = _yaml_locator(file, lines)
    rules_file = path.parent / RULES_FILE
    if rules_file.is_file():
        locate = _with_rules_file(
            data, rules_file, locate, problems=problems, file=file, lines=lines
        )
    locate = _naming_rules(locate, data)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += explain_errors(exc, locate)
    else:
        problems += _readable_secrets(path, config, locate)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path)))
    return config.resolved(path.parent)


def _readable_secrets(path: Path, config: GatewayConfig, locate: Locate) -> list[ConfigProblem]:
    """A forwarder's key or shared secret in a file that every user may read is refused."""
    if not path.stat().st_mode & 0o004:
        return []
    found = []
    for i, forwarder in enumerate(config.forwarders):
        for name in ("key", "secret"):
            if getattr(forwarder, name, None) is not None:
                spot = locate(("forwarders", i, name))
                message = "is a secret in a file every user may read; run chmod o-r on the file"
                found.append(ConfigProblem(spot.file, spot.path, message, spot.line))
    return found


def _with_rules_file(
    data: dict[Any, Any],
    rules_file: Path,
    locate: Locate,
    *,
    problems: list[ConfigProblem],
    file: str,
    lines: dict[Loc, int],
) -> Locate:
    """Take the ``rules`` section from ``rules.yaml``; problems in it point into that file."""
    rfile = str(rules_file)
    if "rules" in data:
        message = f"rules are given here and in {rfile}; keep them in one place"
        problems.append(ConfigProblem(file, "rules", message, lines.get(("rules",))))
        return locate
    try:
        doc = _compose(_read_text(rules_file), rfile)
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(exc, rfile))
        return locate
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        problems.append(ConfigProblem(rfile, "", f"not valid YAML: {exc}"))
        return locate
    problems.extend(doc.repeated_keys)
    data["rules"] = {} if doc.data is None else doc.data
    in_rules = _yaml_locator(rfile, doc.lines)

    def locate_both(loc: Loc) -> Spot:
        if loc[:1] != ("rules",):
            return locate(loc)
        spot = in_rules(loc[1:])
        return Spot(rfile, path_text(loc), spot.line)

    return locate_both


def _naming_rules(locate: Locate, data: dict[Any, Any]) -> Locate:
    """Name a rule by its name in problem paths: ``rules.rules[night-doors].do[0].seconds``."""
    section = data.get("rules")
    rules = section.get("rules") if isinstance(section, dict) else None
    if not isinstance(rules, list):
        return locate
    names = [r.get("name") if isinstance(r, dict) else None for r in rules]

    def locate_named(loc: Loc) -> Spot:
        spot = locate(loc)
        if len(loc) < 3 or loc[:2] != ("rules", "rules") or not isinstance(loc[2], int):
            return spot
        index = loc[2]
        name = names[index] if 0 <= index < len(names) else None
        if not isinstance(name, str) or not name or len(name) > 60:
            return spot
        prefix = f"rules.rules[{index}]"
        return spot._replace(path=spot.path.replace(prefix, f"rules.rules[{name}]", 1))

    return locate_named


def _read_text(path: Path) -> str:
    file = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        message = "no such file; write one with 'lianfang init' or name it with --config"
        raise ConfigError([ConfigProblem(file, "", message)]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigProblem(file, "", "is a folder, not a config file")]) from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(file, "", message)]) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        message = f"not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        raise ConfigError([ConfigProblem(file, "", message, line)]) from None


@dataclass(frozen=True)
class _Document:
    root: yaml.Node | None
    data: object
    lines: dict[Loc, int]  # the line of every key path: a key's own line, an item's first
    repeated_keys: list[ConfigProblem]


def _parse(text: str, file: str) -> tuple[dict[Any, Any], dict[Loc, int], list[ConfigProblem]]:
    """The top-level mapping, the line of every key path, and the repeated keys."""
    try:
        doc = _compose(text, file)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_syntax_problem(exc, file)]) from None
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        message = f"not valid YAML: character {chr(exc.character)!r} is not allowed"
        raise ConfigError([ConfigProblem(file, "", message, line)]) from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        message = f"not valid YAML: {str(exc) or type(exc).__name__}"
        raise ConfigError([ConfigProblem(file, "", message)]) from None
    expected = ", ".join(_required_keys())
    if doc.root is None:
        message = f"the file is empty; expected a mapping with at least {expected}"
        raise ConfigError([ConfigProblem(file, "", message, 1)])
    if not isinstance(doc.data, dict):
        message = f"the top level must be a mapping with keys such as {expected}, not " + _kind(
            doc.data
        )
        raise ConfigError([ConfigProblem(file, "", message, doc.root.start_mark.line + 1)])
    return doc.data, doc.lines, doc.repeated_keys


def _compose(text: str, file: str) -> _Document:
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return _Document(None, None, {}, [])
        lines, repeated = _index(root, file)
        return _Document(root, loader.construct_document(root), lines, repeated)
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, file: str) -> ConfigProblem:
    mark = exc.problem_mark or exc.context_mark
    constructing = isinstance(exc, yaml.constructor.ConstructorError)
    kind = "unsupported YAML" if constructing else "YAML syntax error"
    context = exc.context
    if (
        context
        and exc.context_mark is not None
        and (mark is None or exc.context_mark.line != mark.line)
    ):
        context += f" (from line {exc.context_mark.line + 1})"
    what = "; ".join(str(part) for part in (context, exc.problem) if part)
    return ConfigProblem(file, "", f"{kind}: {what}", mark.line + 1 if mark is not None else None)


def _required_keys() -> list[str]:
    return [name for name, field in GatewayConfig.model_fields.items() if field.is_required()]


def _index(root: yaml.Node, file: str) -> tuple[dict[Loc, int], list[ConfigProblem]]:
    """Line of each key path (a key's own line, an item's first line) and repeated keys."""
    lines: dict[Loc, int] = {(): root.start_mark.line + 1}
    problems: list[ConfigProblem] = []
    visited: set[int] = set()
    pending: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while pending:
        node, path = pending.pop()
        if id(node) in visited:  # an alias: its lines are those of its anchor
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue
                key, line = key_node.value, key_node.start_mark.line + 1
                if key in seen:
                    message = f"duplicate key {key!r} (also at line {seen[key]})"
                    problems.append(ConfigProblem(file, path_text((*path, key)), message, line))
                seen[key] = line
                lines[(*path, key)] = line
                pending.append((value_node, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[(*path, i)] = item.start_mark.line + 1
                pending.append((item, (*path, i)))
    return lines, problems


def _yaml_locator(file: str, lines: dict[Loc, int]) -> Locate:
    def locate(loc: Loc) -> Spot:
        line = next(
            (lines[loc[:end]] for end in range(len(loc), -1, -1) if loc[:end] in lines), None
        )
        return Spot(file, path_text(loc), line)

    return locate


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
    kind, got = error["type"], _kind(error["input"])
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


def _kind(value: object) -> str:
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
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[: MAX_SHOWN_VALUE - 3] + "..."


def check_online(
    config: GatewayConfig, *, file: str = "", timeout_s: float = ONLINE_TIMEOUT_S
) -> list[ConfigProblem]:
    """Try a real MQTT CONNECT to the block broker and to every forwarder's broker.

    Returns one problem for each broker that cannot be reached, refuses us, or
    fails TLS; its path names the setting to fix (``forwarders[0].broker.url``,
    or ``...broker.tls`` when the certificate files cannot be loaded). Brokers
    are tried at once, each for ``timeout_s``; a host that drops packets may
    take paho's own 5 s connect timeout. The connection uses a client id of
    its own and a clean session, so a running gateway is not disturbed. Runs
    its own event loop: call it from synchronous code.
    """
    targets = [("broker", config.broker)] + [
        (f"forwarders[{i}].broker", broker)
        for i, forwarder in enumerate(config.forwarders)
        if isinstance(broker := getattr(forwarder, "broker", None), BrokerConfig)
    ]
    client_id = f"lianfang-{config.gateway.id}-check-{os.getpid()}"

    async def try_all() -> list[ConfigProblem | None]:
        return await asyncio.gather(
            *(
                _try_connect(broker, f"{client_id}-{i}", timeout_s, file=file, path=path)
                for i, (path, broker) in enumerate(targets)
            )
        )

    return [problem for problem in asyncio.run(try_all()) if problem is not None]


async def _try_connect(
    broker: BrokerConfig, client_id: str, timeout_s: float, *, file: str, path: str
) -> ConfigProblem | None:
    """None when the broker accepts a CONNECT; else what is wrong, at the setting to fix."""
    try:
        link = MqttLink(broker, client_id=client_id, persistent=False)
    except OSError as exc:
        return _tls_problem(broker, exc, file=file, path=f"{path}.tls")
    try:
        async with asyncio.timeout(timeout_s), link:
            return None
    except TimeoutError:
        message = f"no answer from {broker.url} within {timeout_s:g} s"
    except LinkDown as exc:
        message = f"cannot connect to {broker.url}: {exc}"
    return ConfigProblem(file, f"{path}.url", message)


def _tls_problem(broker: BrokerConfig, exc: OSError, *, file: str, path: str) -> ConfigProblem:
    """Name the certificate file that is missing, or say why the files could not be used."""
    tls = broker.tls
    for setting in ("ca_file", "cert_file", "key_file"):
        named = getattr(tls, setting, None)
        if named is not None and not named.is_file():
            return ConfigProblem(file, f"{path}.{setting}", f"no such file: {named}")
    return ConfigProblem(file, path, f"cannot load the TLS files: {exc}")
