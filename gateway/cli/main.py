"""The installer's command line: ``lianfang ...``."""

from __future__ import annotations

import difflib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from gateway.cli.rules import rules_app
from gateway.errors import ConfigError, DriverUnavailable

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

app = typer.Typer(
    name="lianfang",
    help="Lianfang edge gateway for shop-linked alarms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Inspect the configuration schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(rules_app, name="rules")

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


def _fail(error: ConfigError, code: int = 1) -> NoReturn:
    """Print every problem, one a line (``file:line: path: message``), and exit with ``code``."""
    for problem in error.problems:
        typer.echo(str(problem), err=True)
    count = len(error.problems)
    typer.echo(f"{count} problem{'s' if count != 1 else ''} found", err=True)
    raise typer.Exit(code)


def _load(path: Path) -> GatewayConfig:
    """The config at ``path``, or exit: 2 when there is no such file, 1 when it is wrong."""
    from gateway.config.file import load_config  # noqa: PLC0415 - keep `lianfang --help` fast

    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(exc, 1 if path.exists() else 2)


@app.command()
def init(
    *,
    survey: Annotated[
        Path, typer.Option(help="Survey sheet (CSV), one shop a row.", show_default=False)
    ],
    gateway: Annotated[
        str, typer.Option(help="This gateway's id in the sheet, e.g. GW-001.", show_default=False)
    ],
    broker: Annotated[str, typer.Option(help="The block's MQTT broker.")] = "mqtt://127.0.0.1:1883",
    police: Annotated[
        str | None,
        typer.Option(help="The police platform's MQTT broker, if any.", show_default=False),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder to write lianfang.yaml in.")
    ] = Path(),
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing file.")] = False,
    dc09: Annotated[
        str | None,
        typer.Option(help="Alarm receiving centre: tcp://HOST:PORT or udp://.", show_default=False),
    ] = None,
    dc09_backup: Annotated[
        str | None, typer.Option(help="Its backup receiver address.", show_default=False)
    ] = None,
    dc09_account: Annotated[
        str | None,
        typer.Option(help="The gateway's own DC-09 account (3-16 hex).", show_default=False),
    ] = None,
    dc09_key: Annotated[
        str | None, typer.Option(help="AES key for DC-09 (the file becomes mode 600).")
    ] = None,
    dc09_key_format: Annotated[
        str, typer.Option(help="'hex' (decode the digits) or 'ascii' (the characters).")
    ] = "hex",
    timezone: Annotated[
        str | None,
        typer.Option(
            help="IANA zone of the shops' opening hours, e.g. Asia/Shanghai; default the system's.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write lianfang.yaml from an installer's survey sheet (CSV)."""
    from gateway.config.survey import NEARBY_M, init_config  # noqa: PLC0415 - keep `lianfang --help` fast

    out = directory / "lianfang.yaml"
    centre = None
    if dc09 is not None:
        given = {"url": dc09, "backup_url": dc09_backup, "account": dc09_account, "key": dc09_key}
        centre = {k: v for k, v in given.items() if v is not None} | {"key_format": dc09_key_format}
    try:
        config = init_config(
            survey,
            gateway,
            out=out,
            broker_url=broker,
            police_url=police,
            dc09=centre,
            timezone=timezone,
            force=force,
        )
    except ConfigError as exc:
        _fail(exc)
    if (warning := _zone_warning(config)) is not None:
        typer.echo(f"warning: {warning}; pass --timezone", err=True)
    typer.echo(
        f"Wrote {out} for gateway {config.gateway.id} (large grid {config.gateway.large_grid}):"
        f" {len(config.shops)} shops, and {len(config.other_shops)} shops of other gateways"
        f" within {NEARBY_M:g} m."
    )
    typer.echo(f"Next: lianfang check --config {out} --online")


@app.command()
def check(
    config: ConfigOption = None,
    online: Annotated[
        bool, typer.Option("--online", help="Also connect to every broker the config names.")
    ] = False,
) -> None:
    """Validate the config (like nginx -t); exit 0 only when it is valid (and, online, reached)."""
    from gateway.config.file import check_online  # noqa: PLC0415 - keep `lianfang --help` fast

    path = config_path(config)
    cfg = _load(path)
    reached = ""
    if online:
        problems = check_online(cfg, file=str(path))
        if problems:
            _fail(ConfigError(problems))
        reached = "; every broker reached"
    if (warning := _zone_warning(cfg)) is not None:
        typer.echo(f"warning: {warning}; set rules.timezone", err=True)
    typer.echo(
        f"{path}: valid: gateway {cfg.gateway.id}, {len(cfg.shops)} shops,"
        f" {len(cfg.other_shops)} other shops, {len(cfg.drivers)} driver(s),"
        f" {len(cfg.forwarders)} forwarder(s){reached}"
    )


def _zone_warning(config: GatewayConfig) -> str | None:
    """Why the shops may be armed at the wrong hours: opening hours with no zone named."""
    if config.rules.timezone is not None or not any(s.opens and s.closes for s in config.shops):
        return None
    system = datetime.now().astimezone().tzname()
    return f"no rules.timezone: opening hours are read in this system's zone ({system})"


@app.command()
def neighbours(
    shop: Annotated[str, typer.Argument(help="Shop id, e.g. S00011.", show_default=False)],
    config: ConfigOption = None,
    count: Annotated[
        int | None,
        typer.Option(
            min=1, help="How many shops; default neighbour_alert.count.", show_default=False
        ),
    ] = None,
    radius: Annotated[
        float | None,
        typer.Option(
            min=0, help="Farthest shop, m; default neighbour_alert.radius_m.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Show the nearest shops of a shop (own and other gateways'), with distance and bearing."""
    from rich.console import Console  # noqa: PLC0415 - keep `lianfang --help` fast
    from rich.table import Table  # noqa: PLC0415

    from rules.geo import nearest_shops  # noqa: PLC0415

    path = config_path(config)
    cfg = _load(path)
    places = [*cfg.shops, *cfg.other_shops]
    gateway_of = {s.id: cfg.gateway.id for s in cfg.shops} | {
        o.id: o.gateway_id for o in cfg.other_shops
    }
    origin = next((p for p in places if p.id == shop), None)
    if origin is None:
        close = difflib.get_close_matches(shop, gateway_of, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        typer.echo(
            f"{path}: no shop {shop!r} among its {len(cfg.shops)} shops and"
            f" {len(cfg.other_shops)} other shops{hint}",
            err=True,
        )
        raise typer.Exit(1)
    count = count or cfg.neighbour_alert.count
    radius = cfg.neighbour_alert.radius_m if radius is None else radius
    names = {p.id: p.name for p in places}
    found = nearest_shops(origin, places, count=count, radius_m=radius)
    if as_json:
        rows = [
            {
                "rank": rank,
                "shop_id": n.shop_id,
                "name": names[n.shop_id],
                "distance_m": round(n.distance_m, 1),
                "bearing_deg": round(n.bearing_deg, 1),
                "compass": n.compass,
                "direction": n.words,
                "gateway_id": gateway_of[n.shop_id],
            }
            for rank, n in enumerate(found, 1)
        ]
        typer.echo(json.dumps(rows, ensure_ascii=False, indent=2))
        return
    table = Table(
        title=f"Nearest shops to {shop} {origin.name}",
        caption=f"{len(found)} of at most {count}, within {radius:g} m",
    )
    for column in ("#", "shop", "name", "distance", "bearing", "gateway"):
        table.add_column(
            column,
            justify="right" if column in ("#", "distance") else "left",
            no_wrap=column != "name",
        )
    for rank, n in enumerate(found, 1):
        table.add_row(
            str(rank),
            n.shop_id,
            names[n.shop_id],
            f"{n.distance_m:.1f} m",
            f"{n.bearing_deg:.0f}° {n.compass} ({n.words})",
            gateway_of[n.shop_id],
        )
    Console().print(table)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the gateway (the daemon; systemd runs this)."""
    from gateway.app import run_from_file  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_from_file(config_path(config)))


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the gateway's counters, links and what each receiver still waits for."""
    from rich.console import Console  # noqa: PLC0415

    from gateway.cli.console import show_status  # noqa: PLC0415

    raise typer.Exit(show_status(_load(config_path(config)), Console(), as_json=as_json))


@app.command()
def events(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the newest events in the journal."""
    from rich.console import Console  # noqa: PLC0415

    from gateway.cli.console import show_events  # noqa: PLC0415

    cfg = _load(config_path(config))
    raise typer.Exit(show_events(cfg, Console(), limit=limit, as_json=as_json))


@app.command()
def demo(
    shop: Annotated[str, typer.Option(help="Shop whose panic button is pressed.")] = "S00011",
) -> None:
    """Start brokers, a simulated block, the gateway and a police receiver; press a panic."""
    from gateway.cli.demo import run_demo  # noqa: PLC0415 - keep `lianfang --help` fast

    raise typer.Exit(run_demo(shop))


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
        asyncio.run(run_receiver(db, host=host, port=dc09, udp=udp, key=aes, mqtt_url=mqtt))


@app.command()
def learn(
    *,
    shop: Annotated[str, typer.Option(help="Shop id, e.g. S00011.", show_default=False)],
    device: Annotated[str, typer.Option(help="Device id, e.g. pb-1.", show_default=False)],
    driver: Annotated[
        str | None,
        typer.Option(help="The rf433 driver; needed if there are several.", show_default=False),
    ] = None,
    timeout: Annotated[float, typer.Option(help="How long to wait for a press, s.")] = 120,
    config: ConfigOption = None,
) -> None:
    """Pair a 433 MHz button: press it now; its code is written into the config."""
    import asyncio  # noqa: PLC0415 - keep `lianfang --help` fast

    from gateway.cli.learn import bind_code, learn_driver, next_code  # noqa: PLC0415

    path = config_path(config)
    cfg = _load(path)
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
    except ConfigError as exc:
        _fail(exc)


@app.command()
def simulate(config: ConfigOption = None) -> None:
    """Simulate the configured block: a stub per field device, private brokers, the real gateway."""
    from firmware_stubs.simulate import run_simulate  # noqa: PLC0415 - keep `lianfang --help` fast

    path = config_path(config)
    _load(path)
    raise typer.Exit(run_simulate(path))


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


@config_app.command("schema")
def config_schema() -> None:
    """Print the JSON schema of lianfang.yaml."""
    import json  # noqa: PLC0415

    from gateway.config.model import GatewayConfig  # noqa: PLC0415

    typer.echo(json.dumps(GatewayConfig.model_json_schema(), indent=2))


def main() -> None:
    """Entry point of the ``lianfang`` console script."""
    app()
