"""``lianfang install-service`` and ``lianfang backup``: run as a service, keep the journal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.options import ConfigOption, config_path, fail, load_or_exit
from gateway.errors import ConfigError

app = typer.Typer()


@app.command("install-service")
def install_service(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The config the service reads.")
    ] = Path("/etc/lianfang/lianfang.yaml"),
    unit_dir: Annotated[Path, typer.Option(help="Folder to write lianfang.service in.")] = Path(
        "/etc/systemd/system"
    ),
    user: Annotated[str, typer.Option(help="System user (and group) the daemon runs as.")] = (
        "lianfang"
    ),
    root: Annotated[
        Path | None,
        typer.Option(help="Install under this folder as if it were / (tests).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")
    ] = False,
) -> None:
    """Run the gateway as a systemd service: its user, config owner and modes, the unit (root)."""
    from gateway.cli.install_service import InstallError, Options, install  # noqa: PLC0415

    options = Options(config=config, unit_dir=unit_dir, user=user, root=root, dry_run=dry_run)
    try:
        install(options, typer.echo)
    except ConfigError as exc:
        fail(exc)
    except InstallError as exc:
        typer.echo(f"install-service: {exc}", err=True)
        raise typer.Exit(1) from None
    except OSError as exc:
        typer.echo(f"install-service: {exc.filename or ''}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def backup(
    dest: Annotated[Path, typer.Argument(help="The backup file to write.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Copy the journal to DEST with SQLite's online backup; safe while the gateway runs."""
    from gateway.cli.backup import BackupError, backup_journal  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    try:
        events = backup_journal(cfg.journal_path, dest)
    except BackupError as exc:
        typer.echo(f"backup: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Backed up {cfg.journal_path} to {dest}: {events} events")
