"""The installer's command line: ``lianfang ...``, one module per command group.

A command's module is imported only when that command runs (or ``--help``
lists them all): typer turns every command's signature into options when its
module's app is built, and the other thirty-odd commands' are no use to
``lianfang check``. To add a command group, write its module in
``gateway/cli/`` with an ``app`` (``typer.Typer()``; give it a ``name`` to make
it a subcommand group) and add its commands to ``COMMANDS``.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer import _click as click  # typer vendors click: its own types are only there

COMMANDS = {
    "init": "setup",
    "check": "setup",
    "neighbours": "inspection",
    "status": "inspection",
    "events": "inspection",
    "run": "services",
    "receiver": "services",
    "install-service": "deploy",
    "backup": "deploy",
    "broker-config": "broker_config",
    "police-acl": "broker_config",
    "keys": "keys",
    "demo": "simulation",
    "simulate": "simulation",
    "learn": "field",
    "scan": "field",
    "config": "schema",
    "rules": "rules",
    "sms": "sms",
    "map": "device_map",
    "walktest": "walktest",
    "reload": "walktest",
    "report": "report",
}
"""Each command (or subcommand group) and its module, in ``lianfang --help``'s order."""


@functools.cache
def module_commands(module: str) -> dict[str, click.Command]:
    """The commands that ``gateway.cli.<module>``'s app defines, by name."""
    merged = typer.Typer()
    merged.add_typer(importlib.import_module(f"gateway.cli.{module}").app)
    return dict(typer.main.get_group(merged).commands)


class _CommandTable(MutableMapping[str, "click.Command"]):
    """Every command by name; looking one up imports its module and builds its commands.

    A command added on the top-level app itself (``@app.command``, ``add_command``)
    is kept beside the table's, not dropped.
    """

    def __init__(self, added: Mapping[str, click.Command]) -> None:
        self._added = dict(added)

    def __getitem__(self, name: str) -> click.Command:
        if name in self._added:
            return self._added[name]
        return module_commands(COMMANDS[name])[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._added[name] = command

    def __delitem__(self, name: str) -> None:
        del self._added[name]

    def __iter__(self) -> Iterator[str]:
        yield from COMMANDS
        yield from (name for name in self._added if name not in COMMANDS)

    def __len__(self) -> int:
        return len(COMMANDS.keys() | self._added.keys())


class _Commands(TyperGroup):
    """The top-level group, its commands in a ``_CommandTable``."""

    def __init__(self, **attrs: Any) -> None:  # noqa: ANN401 - typer passes the group's settings
        super().__init__(**attrs)
        # Typer reads the table (its names for "did you mean", a command by name); commands
        # given on the app itself are kept in it.
        self.commands = _CommandTable(self.commands)


app = typer.Typer(
    name="lianfang",
    cls=_Commands,
    help="Lianfang edge gateway for shop-linked alarms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        from gateway import __version__  # noqa: PLC0415 - keep `lianfang --help` fast

        typer.echo(f"lianfang {__version__}")
        raise typer.Exit


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Lianfang edge gateway for shop-linked alarms."""


def main() -> None:
    """The typer app: every command but the daemon's plain ``run`` (see ``gateway.cli.launch``)."""
    app()
