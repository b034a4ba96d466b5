"""``lianfang map test``: the events a device's payload would make, without sending anything."""

from __future__ import annotations

import json
from typing import Annotated, NoReturn

import typer

from gateway.cli.options import ConfigOption, config_path, load_or_exit

app = typer.Typer(
    name="map", help="Dry-run the payload mappings of MQTT devices.", no_args_is_help=True
)


@app.command("test")
def map_test(
    device: Annotated[
        str, typer.Option("--device", help="The device as SHOP/DEVICE, e.g. S00030/door-z.")
    ],
    payload: Annotated[
        str, typer.Option("--payload", help="The message as sent, e.g. '{\"contact\": false}'.")
    ],
    topic: Annotated[
        str | None,
        typer.Option(help="Topic it comes on; default the device's own.", show_default=False),
    ] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the events as JSON.")] = False,
) -> None:
    """Show the events one message from an mqtt_devices device would make (from a fresh state)."""
    from drivers.base import DriverContext  # noqa: PLC0415 - keep `lianfang --help` fast
    from drivers.device_maps import code_of, decode  # noqa: PLC0415
    from drivers.mqtt_devices_config import MqttDevicesConfig  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    found = {
        f"{d.shop_id}/{d.device_id}": (driver, d)
        for driver in cfg.drivers
        if isinstance(driver, MqttDevicesConfig)
        for d in driver.devices
    }
    if device not in found:
        known = ", ".join(sorted(found)) or "none"
        _refuse(f"no mqtt_devices device {device!r} (devices: {known})")
    driver, bound = found[device]
    mapper = bound.mapper(driver.burst_s)
    topic = topic or mapper.topics[0]
    if topic not in mapper.topics:
        _refuse(f"{device} does not read {topic!r} (its topics: {', '.join(mapper.topics)})")
    value = decode(payload.encode())
    if bound.code_key is not None and code_of(value, bound.code_key) != bound.code:
        typer.echo(f"no event: the payload's code is not {device}'s ({bound.code})")
        return
    outcomes, understood = mapper.feed(topic, value, now=0.0)
    if not understood:
        typer.echo(f"no event: no mapping of {device} reads this payload on {topic}")
        raise typer.Exit(1)
    context = DriverContext(gateway_id=cfg.gateway.id, block_broker=cfg.broker)
    events = [
        context.event(driver.name, bound, o.kind, ref=topic, zone=o.zone, attrs=o.attrs)
        for o in outcomes
    ]
    if as_json:
        typer.echo(json.dumps([e.model_dump(mode="json") for e in events], indent=2))
        return
    if not events:
        typer.echo("no event: the payload matches no mapping's value")
    for event in events:
        typer.echo(
            f"{event.kind.value}  {device}  zone {event.zone or '-'}  "
            f"{json.dumps(event.attrs, ensure_ascii=False)}"
        )


def _refuse(message: str) -> NoReturn:
    typer.echo(message, err=True)
    raise typer.Exit(2)
