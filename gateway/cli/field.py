"""``lianfang learn`` and ``lianfang scan``: pair a 433 MHz button, find Modbus units on a bus."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.options import ConfigOption, config_path, fail, load_or_exit
from gateway.errors import ConfigError, DriverUnavailable

app = typer.Typer()


@app.command()
def learn(
    *,
    shop: Annotated[str, typer.Option(help="Shop id, e.g. S00011.", show_default=False)],
    device: Annotated[str, typer.Option(help="Device id, e.g. pb-1.", show_default=False)],
    driver: Annotated[
        str | None,
        typer.Option(
            help="The rf433 (or RF bridge mqtt_devices) driver; needed if there are several.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[float, typer.Option(help="How long to wait for a press, s.")] = 120,
    config: ConfigOption = None,
) -> None:
    """Pair a 433 MHz button: press it now; its code is written into the config."""
    import asyncio  # noqa: PLC0415 - keep `lianfang --help` fast

    from gateway.cli.learn import bind_code, learn_driver, next_code  # noqa: PLC0415

    path = config_path(config)
    cfg = load_or_exit(path)
    try:
        rf = learn_driver(cfg, driver, file=str(path))

        def listening(how: str) -> None:
            typer.echo(f"Press the button for {shop}/{device} now (listening {how})")

        try:
            code = asyncio.run(next_code(cfg, rf, timeout, listening=listening))
        except TimeoutError:
            typer.echo(f"no code heard in {timeout:g} s; nothing changed", err=True)
            raise typer.Exit(1) from None
        except DriverUnavailable as exc:  # such as the port held by a gateway not writing status
            typer.echo(f"{exc}; nothing changed", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"Heard code {code}")
        typer.echo(bind_code(path, cfg, rf, shop=shop, device=device, code=code))
        typer.echo(asyncio.run(_served_now(path)))
    except ConfigError as exc:
        fail(exc)


async def _served_now(path: Path) -> str:
    """Make a running gateway serve the new button now; what the installer must know."""
    from gateway.cli.walktest import reload_running  # noqa: PLC0415
    from gateway.control import CommandError, ControlUnavailableError  # noqa: PLC0415

    cfg = load_or_exit(path)
    try:
        return f"the running gateway {await reload_running(cfg)}: the button is served now"
    except ControlUnavailableError as exc:
        return f"{exc}; a gateway serves the button when it starts"
    except CommandError as exc:
        # A press right after pairing must not be taken for a lost alarm: said plainly.
        return f"the running gateway did not reload ({exc}); restart it to serve the button"


@app.command()
def scan(
    *,
    port: Annotated[
        str | None, typer.Option(help="RTU serial port or pyserial URL.", show_default=False)
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Modbus TCP HOST:PORT.", show_default=False)
    ] = None,
    units: Annotated[str, typer.Option(help="Unit ids to try, e.g. 1-247 or 1,5.")] = "1-247",
    baudrate: Annotated[int, typer.Option(help="RTU line speed.")] = 9600,
    timeout: Annotated[float, typer.Option(help="Answer timeout per unit, s.")] = 0.2,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List the Modbus unit ids that answer on a bus (--port for RTU, --host for TCP)."""
    import asyncio  # noqa: PLC0415 - keep `lianfang --help` fast

    from drivers.modbus import modbus_client, parse_units, scan_units  # noqa: PLC0415

    if (port is None) == (host is None):
        typer.echo("give exactly one of --port (RTU) and --host (TCP)", err=True)
        raise typer.Exit(2)

    async def run_scan() -> list[int] | None:
        client = modbus_client(port=port, host=host, baudrate=baudrate, timeout_s=timeout)
        if not await client.connect():
            return None
        try:
            return await scan_units(client, parse_units(units))
        finally:
            client.close()

    found = asyncio.run(run_scan())
    if found is None:
        typer.echo(f"cannot open {port or host}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(found))
    else:
        typer.echo(f"{len(found)} unit(s) answered on {port or host}: {found}")
