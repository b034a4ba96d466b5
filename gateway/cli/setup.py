"""``lianfang init`` and ``lianfang check``: write the config from a survey, then validate it."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from gateway.cli.options import (
    ConfigOption,
    config_path,
    fail,
    load_located_or_exit,
)
from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

app = typer.Typer()


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
    police_ca: Annotated[
        Path | None,
        typer.Option(help="CA certificate of the mqtts:// police broker.", show_default=False),
    ] = None,
    police_cert: Annotated[
        Path | None,
        typer.Option(help="This gateway's client certificate for it.", show_default=False),
    ] = None,
    police_key: Annotated[
        Path | None,
        typer.Option(help="Its private key (copied with mode 600).", show_default=False),
    ] = None,
    directory: Annotated[
        Path, typer.Option("--dir", help="Folder to write lianfang.yaml in.")
    ] = Path(),
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="The gateway's state (journal); default /var/lib/lianfang when --dir is"
            " under /etc (the systemd unit's StateDirectory), else 'state' beside the file.",
            show_default=False,
        ),
    ] = None,
    mesh_keys: Annotated[
        Path | None,
        typer.Option(
            help="Folder of the gateways' mesh keys (`lianfang keys mesh`): this gateway signs "
            "with its {id}.key and trusts the {id}.pub of the gateways next to it.",
            show_default=False,
        ),
    ] = None,
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
    sms: Annotated[
        str | None,
        typer.Option(
            help="A GSM/4G modem's AT port (e.g. /dev/ttyUSB3): alerted shops also get an SMS.",
            show_default=False,
        ),
    ] = None,
    status_page: Annotated[
        bool,
        typer.Option(
            "--status-page", help="Serve the local status page on http://127.0.0.1:8080/."
        ),
    ] = False,
) -> None:
    """Write lianfang.yaml from an installer's survey sheet (CSV)."""
    from gateway.config.file import file_locator  # noqa: PLC0415 - keep `lianfang --help` fast
    from gateway.config.preflight import tls_findings  # noqa: PLC0415
    from gateway.config.survey import NEARBY_M, init_config  # noqa: PLC0415

    out = directory / "lianfang.yaml"
    centre = None
    if dc09 is not None:
        given = {"url": dc09, "backup_url": dc09_backup, "account": dc09_account, "key": dc09_key}
        centre = {k: v for k, v in given.items() if v is not None} | {"key_format": dc09_key_format}
    certs = {"ca_file": police_ca, "cert_file": police_cert, "key_file": police_key}
    try:
        config = init_config(
            survey,
            gateway,
            out=out,
            broker_url=broker,
            police_url=police,
            police_tls={name: path for name, path in certs.items() if path is not None},
            dc09=centre,
            timezone=timezone,
            state_dir=state_dir,
            sms_port=sms,
            mesh_keys=mesh_keys,
            status_page=status_page,
            force=force,
            warn=lambda finding: typer.echo(str(finding), err=True),
        )
    except ConfigError as exc:
        fail(exc)
    if (warning := _zone_warning(config)) is not None:
        typer.echo(f"warning: {warning}; pass --timezone", err=True)
    typer.echo(
        f"Wrote {out} for gateway {config.gateway.id} (large grid {config.gateway.large_grid}):"
        f" {len(config.shops)} shops, and {len(config.other_shops)} shops of other gateways"
        f" within {NEARBY_M:g} m."
    )
    missing = tls_findings(config.resolved(out.parent), file_locator(out))
    if missing:
        typer.echo("Put these files in place; `lianfang check` fails until they are:", err=True)
        for finding in missing:
            typer.echo(str(finding), err=True)
    typer.echo(f"Next: lianfang check --config {out} --online")


@app.command()
def check(
    config: ConfigOption = None,
    online: Annotated[
        bool, typer.Option("--online", help="Also connect to every broker the config names.")
    ] = False,
) -> None:
    """Validate the config (like nginx -t); exit 0 only when it is valid (and, online, reached)."""
    from gateway.cli.online_check import reach_brokers  # noqa: PLC0415 - keep `lianfang --help` fast
    from gateway.config.preflight import preflight  # noqa: PLC0415

    path = config_path(config)
    cfg, locate = load_located_or_exit(path)
    findings = preflight(cfg, locate)
    for finding in findings:
        if finding.warning:
            typer.echo(str(finding), err=True)
    errors = [f.problem for f in findings if not f.warning]
    if errors:
        fail(ConfigError(errors))
    reached = ""
    if online:
        reports = reach_brokers(cfg, file=str(path))
        for report in reports:
            typer.echo(report.describe())
        if problems := [p for r in reports for p in r.problems]:
            fail(ConfigError(problems))
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
