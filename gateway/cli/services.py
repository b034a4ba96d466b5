"""``lianfang run`` and ``lianfang receiver``: the two long-running services."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.launch import without_pydantic_plugins
from gateway.cli.options import ConfigOption, config_path
from receiver.limits import IDLE_TIMEOUT_S, MAX_PER_SOURCE

app = typer.Typer()


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gateway (the daemon; systemd runs this)."""
    without_pydantic_plugins()
    from gateway.app import run_from_file  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_from_file(config_path(config)))


@app.command()
def receiver(
    *,
    dc09: Annotated[int, typer.Option(help="Port to receive DC-09 on (0: any free port).")],
    udp: Annotated[bool, typer.Option("--udp", help="Receive over UDP instead of TCP.")] = False,
    key: Annotated[
        str | None, typer.Option(help="AES key: messages may be encrypted.", show_default=False)
    ] = None,
    key_format: Annotated[
        str, typer.Option(help="'hex' (decode the digits) or 'ascii' (the characters).")
    ] = "hex",
    mqtt: Annotated[
        str | None,
        typer.Option(help="Also store the police MQTT feed from this broker.", show_default=False),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    db: Annotated[Path, typer.Option(help="SQLite file of received alarms.")] = Path(
        "receiver.sqlite3"
    ),
    idle_timeout: Annotated[
        float, typer.Option(min=1, help="Close a TCP connection silent this many seconds.")
    ] = IDLE_TIMEOUT_S,
    max_per_source: Annotated[
        int, typer.Option(min=1, help="TCP connections from one address at once.")
    ] = MAX_PER_SOURCE,
) -> None:
    """A small alarm receiving centre: DC-09 ACK/NAK/DUH, copies dropped, alarms in SQLite."""
    import asyncio  # noqa: PLC0415 - keep `lianfang --help` fast
    import contextlib  # noqa: PLC0415

    from protocols.dc09 import key_bytes  # noqa: PLC0415
    from receiver.centre import run_receiver  # noqa: PLC0415

    try:
        aes = key_bytes(key, key_format) if key else None
    except ValueError as exc:
        typer.echo(f"--key: {exc}", err=True)
        raise typer.Exit(2) from None
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_receiver(
                db,
                host=host,
                port=dc09,
                udp=udp,
                key=aes,
                mqtt_url=mqtt,
                idle_timeout_s=idle_timeout,
                max_per_source=max_per_source,
            )
        )
