"""The installer's command line: ``lianfang ...``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    name="lianfang",
    help="Lianfang edge gateway for shop-linked alarms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Config file; else $LIANFANG_CONFIG, else ./lianfang.yaml.",
        show_default=False,
    ),
]


def config_path(option: Path | None) -> Path:
    """Where the config file is: --config, else $LIANFANG_CONFIG, else ./lianfang.yaml."""
    if option is not None:
        return option
    env = os.environ.get("LIANFANG_CONFIG")
    return Path(env) if env else Path("lianfang.yaml")


@app.command()
def init() -> None:
    """Write lianfang.yaml from an installer's survey sheet (CSV)."""
    raise NotImplementedError  # built by the config/survey work


@app.command()
def check() -> None:
    """Validate the config; exit 0 only when it is valid."""
    raise NotImplementedError  # built by the config/survey work


@app.command()
def neighbours() -> None:
    """Show the nearest shops of a shop, with distance and bearing."""
    raise NotImplementedError  # built by the config/survey work


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gateway (the daemon; systemd runs this)."""
    from gateway.app import run_from_file  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_from_file(config_path(config)))


@app.command()
def demo(
    shop: Annotated[str, typer.Option(help="Shop whose panic button is pressed.")] = "S00011",
) -> None:
    """Start brokers, a simulated block, the gateway and a police receiver; press a panic."""
    from gateway.demo import run_demo  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_demo(shop))


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of lianfang.yaml."""
    import json  # noqa: PLC0415

    from gateway.config import GatewayConfig  # noqa: PLC0415

    typer.echo(json.dumps(GatewayConfig.model_json_schema(), indent=2))


def main() -> None:
    """Entry point of the ``lianfang`` console script."""
    app()
