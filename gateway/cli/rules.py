"""``lianfang rules ...``: the rules in force, and a dry run of one event."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from gateway.cli.options import config_path, load_or_exit

app = typer.Typer(
    name="rules", help="Show the rules in force; dry-run an event.", no_args_is_help=True
)

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file; else $LIANFANG_CONFIG, else ./lianfang.yaml."
    ),
]


@app.command("list")
def list_rules(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Show the effective rules, defaults included, in the order they are applied."""
    from rich.console import Console  # noqa: PLC0415 - keep `lianfang --help` fast
    from rich.table import Table  # noqa: PLC0415

    from rules.engine import effective_rules  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    found = effective_rules(cfg.rules)
    if as_json:
        rows = [
            {"origin": e.origin, **e.rule.model_dump(mode="json", by_alias=True, exclude_none=True)}
            for e in found
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    table = Table(title=f"Rules in force ({cfg.rules.level} level at first start)")
    for column in ("rule", "origin", "when", "if", "do"):
        table.add_column(column)
    for e in found:
        do = "; ".join(_settings(a.model_dump(mode="json", exclude_none=True)) for a in e.rule.do)
        when = _settings(e.rule.when.model_dump(mode="json", exclude_none=True))
        table.add_row(e.rule.name, e.origin, when, e.rule.condition or "", do)
    Console().print(table)


@app.command("test")
def dry_run_command(
    event: Annotated[
        str,
        typer.Option(
            "--event", help='The event as JSON, e.g. \'{"shop_id":"S00011","kind":"panic"}\'.'
        ),
    ],
    config: ConfigOption = None,
    level: Annotated[
        str | None,
        typer.Option(
            help="Alert level: everyday, heightened or extraordinary.", show_default=False
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            help="When, ISO 8601 (local time if no offset); default now.", show_default=False
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
) -> None:
    """Show which rules an event fires and what each would do, without doing it."""
    from pydantic import ValidationError  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from gateway.cli.dry_run import dry_run, event_from_json  # noqa: PLC0415
    from gateway.rule_engine import local_zone, rule_engine  # noqa: PLC0415
    from rules.models import Level  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    zone = local_zone(cfg)
    try:
        chosen = Level(level) if level else None
        when = datetime.fromisoformat(at) if at else datetime.now(zone)
        when = when if when.tzinfo else when.replace(tzinfo=zone)
        ev = event_from_json(cfg, json.loads(event), when)
    except (ValueError, ValidationError) as exc:
        typer.echo(f"lianfang rules test: {exc}", err=True)
        raise typer.Exit(2) from None
    engine = rule_engine(cfg, level=chosen)
    rows = dry_run(cfg, engine, ev, when)
    armed = engine.schedule.armed(ev.shop_id, when)
    if as_json:
        typer.echo(json.dumps({"level": engine.level, "armed": armed, "fires": rows}, indent=2))
        return
    table = Table(
        title=f"{ev.kind} at {ev.shop_id or 'the gateway'}, {when.isoformat(timespec='minutes')},"
        f" {engine.level} level, shop {'armed' if armed else 'disarmed'}",
        caption="dry run: nothing was sent",
    )
    for column in ("rule", "action", "would"):
        table.add_column(column)
    for row in rows:
        table.add_row("  " * row["depth"] + row["rule"], row["action"], row["does"])
    if not rows:
        table.add_row("(none)", "", "no rule fires: the event is journalled only")
    Console().print(table)


def _settings(values: dict[str, object]) -> str:
    """``kinds=panic,duress armed=true``: compact enough for a table cell."""
    words = []
    for key, value in values.items():
        shown = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        words.append(shown if key == "action" else f"{key}={shown}")
    return " ".join(words)
