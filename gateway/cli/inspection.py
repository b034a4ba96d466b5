"""``lianfang neighbours``, ``status`` and ``events``: what the config and the journal say."""

from __future__ import annotations

import contextlib
import difflib
import json
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from gateway.cli.options import ConfigOption, config_path, load_or_exit
from gateway.errors import JournalError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from gateway.config.model import GatewayConfig

app = typer.Typer()


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
    cfg = load_or_exit(path)
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
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the gateway's counters, links and what each receiver still waits for."""
    from rich.console import Console  # noqa: PLC0415

    from gateway.cli.console import show_status  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    with _reading_state(cfg):
        code = show_status(cfg, Console(), as_json=as_json)
    raise typer.Exit(code)


@app.command()
def events(
    config: ConfigOption = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="How many.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the newest events in the journal."""
    from rich.console import Console  # noqa: PLC0415

    from gateway.cli.console import show_events  # noqa: PLC0415

    cfg = load_or_exit(config_path(config))
    with _reading_state(cfg):
        code = show_events(cfg, Console(), limit=limit, as_json=as_json)
    raise typer.Exit(code)


@contextlib.contextmanager
def _reading_state(config: GatewayConfig) -> Iterator[None]:
    """Exit 1 with one line, not a traceback, when the gateway's state cannot be read."""
    import sqlite3  # noqa: PLC0415 - keep `lianfang --help` fast

    from gateway.journal_schema import JournalDamagedError, damaged  # noqa: PLC0415

    try:
        yield
    except (JournalDamagedError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.DatabaseError) and not damaged(exc):
            _cannot_read(config, exc)
        typer.echo(
            f"the journal {config.journal_path} is damaged ({exc}); the gateway moves it aside"
            " and salvages what it can read when it starts",
            err=True,
        )
        raise typer.Exit(1) from None
    except (PermissionError, JournalError) as exc:
        _cannot_read(config, exc)


def _cannot_read(config: GatewayConfig, exc: Exception) -> NoReturn:
    """Exit 1 with one line: this user may not read the state (or SQLite cannot open it)."""
    from gateway.config.preflight import user_name  # noqa: PLC0415 - keep `lianfang --help` fast

    detail = f"{exc.strerror}: {exc.filename}" if isinstance(exc, OSError) else exc
    typer.echo(
        f"{user_name()} cannot read the gateway's state in {config.state_dir} ({detail});"
        " run this as the gateway's user or with sudo",
        err=True,
    )
    raise typer.Exit(1) from None
