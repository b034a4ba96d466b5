"""``lianfang sms test``: one message through the modem, for the installer."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from gateway.cli.options import ConfigOption, config_path, load_or_exit

app = typer.Typer(name="sms", help="The GSM/4G modem that texts shops.", no_args_is_help=True)

TEST_TEXT = "【联防】Lianfang SMS test / 短信测试"


@app.command("test")
def send_one(
    to: Annotated[str, typer.Option("--to", help="Phone to text, e.g. +8613800138000.")],
    text: Annotated[str, typer.Option(help="What to say.")] = TEST_TEXT,
    config: ConfigOption = None,
) -> None:
    """Send one SMS through the configured modem and say how the modem stands.

    Run it with the gateway stopped: the modem's port serves one program at a time.
    """
    from gateway.errors import GatewayError  # noqa: PLC0415 - keep `lianfang --help` fast
    from gateway.sms.modem import send_test  # noqa: PLC0415
    from gateway.sms.texts import e164  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    if cfg.sms is None:
        typer.echo("no 'sms' section in the config: name the modem's port there", err=True)
        raise typer.Exit(1)
    number = e164(to, cfg.sms.country_code)
    if number is None:
        typer.echo(f"--to {to!r} is not a phone number", err=True)
        raise typer.Exit(2)
    try:
        state, references = asyncio.run(send_test(cfg.sms, number, text))
    except GatewayError as exc:
        typer.echo(f"not sent: {exc}", err=True)
        raise typer.Exit(1) from None
    signal = "unknown" if state.signal_dbm is None else f"{state.signal_dbm} dBm"
    typer.echo(
        f"modem {cfg.sms.port}: SIM {state.sim}, network {state.registration}, signal {signal}"
    )
    typer.echo(f"sent to {number} (message reference {', '.join(map(str, references))})")
