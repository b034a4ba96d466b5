"""What every command shares: the ``--config`` option, the config it names, and its problems."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from gateway.config.location import config_path
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

__all__ = ["ConfigOption", "config_path", "fail", "load_or_exit"]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file; else $LIANFANG_CONFIG, else ./lianfang.yaml.",
        show_default=False,
    ),
]


def fail(error: ConfigError, code: int = 1) -> NoReturn:
    """Print every problem, one a line (``file:line: path: message``), and exit with ``code``."""
    for problem in error.problems:
        typer.echo(str(problem), err=True)
    count = len(error.problems)
    typer.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
    raise typer.Exit(code)


def load_or_exit(path: Path) -> GatewayConfig:
    """The config at ``path``, or exit: 2 when there is no such file, 1 when it is wrong."""
    from gateway.config.file import load_config  # noqa: PLC0415 - keep `lianfang --help` fast

    try:
        return load_config(path)
    except ConfigError as exc:
        fail(exc, 1 if path.exists() else 2)
