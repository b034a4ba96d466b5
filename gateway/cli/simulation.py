"""``lianfang demo`` and ``lianfang simulate``: a street block on this machine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.options import ConfigOption, config_path, load_or_exit

app = typer.Typer()


@app.command()
def demo(
    shop: Annotated[str, typer.Option(help="Shop whose panic button is pressed.")] = "S00011",
    report: Annotated[
        Path, typer.Option(help="Where the block's commissioning report is written at the end.")
    ] = Path("lianfang-demo-report.html"),
) -> None:
    """Start brokers, a simulated block, the gateway and a police receiver; press a panic."""
    from gateway.cli.demo import run_demo  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_demo(shop, report))


@app.command()
def simulate(config: ConfigOption = None) -> None:
    """Simulate the configured block: a stub per field device, private brokers, the real gateway."""
    from firmware_stubs.simulate import run_simulate  # noqa: PLC0415 - keep `lianfang --help` fast

    path = config_path(config)
    load_or_exit(path)
    raise typer.Exit(run_simulate(path))
