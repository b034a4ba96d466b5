"""What every command shares: the ``--config`` option, the config it names, and its problems."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, TypeVar

import typer

from gateway.config.location import config_path
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from gateway.config.model import GatewayConfig
    from gateway.config.problems import Locate

__all__ = ["ConfigOption", "config_path", "fail", "load_located_or_exit", "load_or_exit"]

Loaded = TypeVar("Loaded")

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

    return _or_exit(path, load_config)


def load_located_or_exit(path: Path) -> tuple[GatewayConfig, Locate]:
    """``load_or_exit``, and where each key path of the file is (for findings after it)."""
    from gateway.config.file import load_config_located  # noqa: PLC0415

    return _or_exit(path, load_config_located)


def _or_exit(path: Path, load: Callable[[Path], Loaded]) -> Loaded:
    try:
        return load(path)
    except ConfigError as exc:
        fail(exc, 1 if path.exists() else 2)
