"""Read ``lianfang.yaml``: parse it, validate it, explain every problem by its line.

``load_config`` returns a ready ``GatewayConfig`` or raises ``ConfigError`` with
every problem found, each located by file, key path (``shops[3].lat``) and line,
and worded for an installer (``lianfang check --online`` then tries the brokers).

The YAML is read as YAML 1.1 (PyYAML's safe loader) with one change: base-60
numbers are not numbers, so ``closes: 23:30`` stays the text ``"23:30"`` instead
of becoming 1410 and, silently, 00:23:30. A file that parses plainly is read
from libyaml's events (``event_loader``); its lines are indexed only once a
problem or warning is to be located.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError
from yaml.constructor import SafeConstructor

from gateway.config.event_loader import path_at, quick_load
from gateway.config.model import GatewayConfig, Loc
from gateway.config.problems import (
    Locate,
    Spot,
    explain_errors,
    path_text,
    unreadable,
    value_kind,
)
from gateway.errors import ConfigError, ConfigProblem
from gateway.mqtt.client import BrokerConfig

try:
    from yaml import CSafeLoader as _SafeLoader  # libyaml parses about six times faster
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

if TYPE_CHECKING:
    from pathlib import Path

RULES_FILE = "rules.yaml"


class _UnreadableValue(yaml.constructor.ConstructorError):
    """A value the loader's constructor refused, marked where it is written."""


class _Loader(_SafeLoader):
    """The safe loader, reading base-60 numbers (``23:30``) as text."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> object:
        """The value of ``node``; one it cannot read raises ``_UnreadableValue`` at its mark."""
        try:
            return super().construct_object(node, deep)
        # PyYAML's constructors raise these with no mark: a date that does not exist,
        # too many digits, `!!bool maybe` (KeyError), `!!timestamp x` (AttributeError).
        except (ValueError, TypeError, OverflowError, KeyError, AttributeError) as exc:
            raise _UnreadableValue(problem=unreadable(node), problem_mark=node.start_mark) from exc


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
    return _loaded(path, with_lines=False)[0]


def load_config_located(path: Path) -> tuple[GatewayConfig, Locate]:
    """``load_config``, and where each key path of the file is, for the findings after it.

    The file's lines are indexed as it is parsed: ``lianfang check`` of a city
    locates hundreds of warnings, and parsing once costs less than twice.
    """
    return _loaded(path, with_lines=True)


def _loaded(path: Path, *, with_lines: bool) -> tuple[GatewayConfig, Locate]:
    file = str(path)
    text = _read_text(path)
    lines: dict[Loc, int] | None = {} if with_lines else None
    data = quick_load(text, _Loader, lines=lines)
    if isinstance(data, dict):
        problems: list[ConfigProblem] = []
        # Without the lines, they are only for problems: the file is parsed again, with
        # marks, once one is told.
        locate = _text_locator(text, file) if lines is None else _yaml_locator(file, lines)
    else:
        data, lines, problems = _parse(text, file)
        locate = _yaml_locator(file, lines)
    rules_file = path.parent / RULES_FILE
    if rules_file.is_file():
        locate = _with_rules_file(data, rules_file, locate, problems=problems, file=file)
    locate = _naming_rules(locate, data)
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems += explain_errors(exc, locate)
    else:
        problems += _readable_secrets(path, config, locate)
    if problems:
        raise ConfigError(sorted(problems, key=lambda p: (p.line or 0, p.path)))
    return config.resolved(path.parent), locate


def _readable_secrets(path: Path, config: GatewayConfig, locate: Locate) -> list[ConfigProblem]:
    """A secret that every user may read is refused.

    That is a forwarder's key or shared secret in a world-readable config file,
    or a world-readable broker password file.
    """
    found = _password_files(path.parent, config, locate) + _mesh_key_file(
        path.parent, config, locate
    )
    if not path.stat().st_mode & 0o004:
        return found
    for i, forwarder in enumerate(config.forwarders):
        for name in ("key", "secret"):
            if getattr(forwarder, name, None) is not None:
                spot = locate(("forwarders", i, name))
                message = "is a secret in a file every user may read; run chmod o-r on the file"
                found.append(ConfigProblem(spot.file, spot.path, message, spot.line))
    return found


def _password_files(base: Path, config: GatewayConfig, locate: Locate) -> list[ConfigProblem]:
    """Each broker password file that every user may read.

    One that is missing or unreadable is left to ``lianfang check``'s preflight,
    which reads it as the user the gateway runs as.
    """
    brokers = [(("broker",), config.broker)] + [
        (("forwarders", i, "broker"), broker)
        for i, forwarder in enumerate(config.forwarders)
        if isinstance(broker := getattr(forwarder, "broker", None), BrokerConfig)
    ]
    found = []
    for loc, broker in brokers:
        if broker.password_file is None:
            continue
        file = base / broker.password_file
        try:
            if not file.stat().st_mode & 0o004:
                continue
        except OSError:
            continue
        message = f"{file} is a secret every user may read; run chmod o-r on it"
        spot = locate((*loc, "password_file"))
        found.append(ConfigProblem(spot.file, spot.path, message, spot.line))
    return found


def _mesh_key_file(base: Path, config: GatewayConfig, locate: Locate) -> list[ConfigProblem]:
    """The gateway's private mesh key, if every user may read it."""
    if config.gateway.mesh_key_file is None:
        return []
    file = base / config.gateway.mesh_key_file
    try:
        if not file.stat().st_mode & 0o004:
            return []
    except OSError:
        return []  # missing or unreadable: the preflight says so, as the gateway's user
    spot = locate(("gateway", "mesh_key_file"))
    message = f"{file} is a private key every user may read; run chmod 600 on it"
    return [ConfigProblem(spot.file, spot.path, message, spot.line)]


def _with_rules_file(
    data: dict[Any, Any],
    rules_file: Path,
    locate: Locate,
    *,
    problems: list[ConfigProblem],
    file: str,
) -> Locate:
    """Take the ``rules`` section from ``rules.yaml``; problems in it point into that file."""
    rfile = str(rules_file)
    if "rules" in data:
        message = f"rules are given here and in {rfile}; keep them in one place"
        problems.append(ConfigProblem(file, "rules", message, locate(("rules",)).line))
        return locate
    text = _read_text(rules_file)
    try:
        doc = _compose(text, rfile)
    except yaml.MarkedYAMLError as exc:
        problems.append(_syntax_problem(exc, rfile, text, within=("rules",)))
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


def file_locator(path: Path) -> Locate:
    """Where each key path of the config file at ``path`` is (file and line).

    The file is read again only when a first spot is asked for: a valid config
    with nothing to report (a city of shops is seconds of parsing) costs nothing.
    """

    # load_config keeps its line index to itself; the file was just read and validated,
    # so reading it again here cannot fail in a new way.
    @functools.cache
    def located() -> Locate:
        return _text_locator(_read_text(path), str(path))

    def locate(loc: Loc) -> Spot:
        return located()(loc)

    return locate


def _text_locator(text: str, file: str) -> Locate:
    """Where each key path of ``text`` is; the lines are indexed when a first spot is asked for."""

    @functools.cache
    def located() -> Locate:
        lines: dict[Loc, int] = {}
        if quick_load(text, _Loader, lines=lines) is None:
            _, lines, _ = _parse(text, file)
        return _yaml_locator(file, lines)

    def locate(loc: Loc) -> Spot:
        return located()(loc)

    return locate


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
        raise ConfigError([_syntax_problem(exc, file, text)]) from None
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
        message = (
            f"the top level must be a mapping with keys such as {expected},"
            f" not {value_kind(doc.data)}"
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


def _syntax_problem(
    exc: yaml.MarkedYAMLError, file: str, text: str, *, within: Loc = ()
) -> ConfigProblem:
    """The parser's, composer's or constructor's error at its line; ``within`` the file's path."""
    mark = exc.problem_mark or exc.context_mark
    line = mark.line + 1 if mark is not None else None
    path = ""
    # A syntax error has no key path to trust; the others stop at a key or value.
    if mark is not None and isinstance(
        exc, yaml.composer.ComposerError | yaml.constructor.ConstructorError
    ):
        at = path_at(text, _Loader, mark.line, mark.column)
        path = path_text((*within, *at)) if at is not None else ""
    if isinstance(exc, _UnreadableValue):
        return ConfigProblem(file, path, str(exc.problem), line)
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
    return ConfigProblem(file, path, f"{kind}: {what}", line)


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
