"""The installer's command line: ``lianfang ...``, one module per command group.

To add a command group, write its module in ``gateway/cli/`` with an ``app``
(``typer.Typer()``; give it a ``name`` to make it a subcommand group) and add
the module to ``GROUPS``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gateway.cli import (
    broker_config,
    deploy,
    device_map,
    field,
    inspection,
    keys,
    report,
    rules,
    schema,
    services,
    setup,
    simulation,
    sms,
    walktest,
)

GROUPS = (
    setup,
    inspection,
    services,
    deploy,
    broker_config,
    keys,
    simulation,
    field,
    schema,
    rules,
    sms,
    device_map,
    walktest,
    report,
)
"""The command groups, in the order ``lianfang --help`` lists them."""

app = typer.Typer(
    name="lianfang",
    help="Lianfang edge gateway for shop-linked alarms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for group in GROUPS:
    app.add_typer(group.app)


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
