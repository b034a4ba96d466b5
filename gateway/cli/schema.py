"""``lianfang config schema``: the JSON schema of ``lianfang.yaml``."""

from __future__ import annotations

import typer

app = typer.Typer(name="config", help="Inspect the configuration schema.", no_args_is_help=True)


@app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of lianfang.yaml."""
    import json  # noqa: PLC0415

    from gateway.config.model import GatewayConfig  # noqa: PLC0415

    typer.echo(json.dumps(GatewayConfig.model_json_schema(), indent=2))
