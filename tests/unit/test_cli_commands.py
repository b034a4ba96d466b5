"""`lianfang`'s command table: every command found, and only the one that runs imported."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import typer
from typer.testing import CliRunner

import gateway.cli
from gateway.cli.main import COMMANDS, app, module_commands


def test_the_table_names_every_command_of_every_command_module() -> None:
    """A command added to a module and not to COMMANDS would be unreachable: this says so."""
    modules = {
        m.name
        for m in pkgutil.iter_modules(gateway.cli.__path__)
        if m.name != "main" and hasattr(importlib.import_module(f"gateway.cli.{m.name}"), "app")
    }
    assert set(COMMANDS.values()) == modules
    defined = {name: module for module in modules for name in module_commands(module)}
    assert defined == COMMANDS


RUN_AND_LIST = """
import atexit, sys
atexit.register(lambda: print(*sorted(m for m in sys.modules if m.startswith("gateway.cli."))))
sys.argv = ["lianfang", *sys.argv[1:]]
from gateway.cli.launch import main
main()
"""
"""`lianfang ARGS`, then the command modules it imported on stdout's last line."""


def test_check_imports_no_other_command_module(tmp_path: Path) -> None:
    """`lianfang check` builds its own command only: the other modules stay unread."""
    config = tmp_path / "lianfang.yaml"
    config.write_text("gateway: {id: GW-001}\n")  # a bad config: check reads it and exits 1
    shown = subprocess.run(
        [sys.executable, "-c", RUN_AND_LIST, "check", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 1, shown.stderr
    imported = set(shown.stdout.splitlines()[-1].split())
    assert "gateway.cli.setup" in imported
    assert not imported & {f"gateway.cli.{m}" for m in COMMANDS.values() if m != "setup"}


def test_a_command_added_on_the_top_level_app_runs_and_is_listed() -> None:
    """``@app.command`` on the top-level app keeps working beside the table's commands."""

    @app.command("extra")
    def _extra() -> None:
        typer.echo("ran extra")

    try:
        ran = CliRunner().invoke(app, ["extra"], prog_name="lianfang")
        listed = CliRunner().invoke(app, ["--help"], prog_name="lianfang")
    finally:
        app.registered_commands.pop()
    assert (ran.exit_code, ran.output) == (0, "ran extra\n")
    assert "extra" in listed.output
    assert "check" in listed.output
