"""``lianfang report``: the commissioning report an installer leaves with the block.

One self-contained HTML page (styles and the SVG map inline, nothing fetched):
the gateway, its version and config hash, every link tried now with its result
and latency, every shop with its devices, their battery and supervision state
and the last walk test, the block map with one shop's alert links, and the
signature lines. ``--pdf`` prints it to PDF through headless Chromium.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import typer

from gateway import __version__
from gateway.cli.options import ConfigOption, config_path, load_or_exit
from gateway.errors import JournalError

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

app = typer.Typer()

CONNECT_TIMEOUT_S = 3.0
PDF_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class LinkResult:
    """One link tried for the report."""

    name: str
    url: str
    result: str
    latency_ms: float | None


@dataclass(frozen=True, slots=True)
class JournalFacts:
    """What the journal knows of the devices: their state, and the last walk test of each."""

    devices: dict[tuple[str, str], dict[str, Any]]
    tested: dict[tuple[str, str], str]
    """(shop, device) -> time of its last test-marked event."""


def try_links(config: GatewayConfig) -> list[LinkResult]:
    """The brokers as ``check --online`` tries them; DC-09 and webhook receivers by TCP connect."""
    from gateway.cli.online_check import reach_brokers  # noqa: PLC0415 - keep `lianfang --help` fast

    found = [
        LinkResult(
            report.path,
            report.url,
            "reached" if report.limits and not report.problems else _failure(report.problems),
            report.latency_ms,
        )
        for report in reach_brokers(config, timeout_s=CONNECT_TIMEOUT_S)
    ]
    for i, forwarder in enumerate(config.forwarders):
        for key in ("url", "backup_url"):
            url = getattr(forwarder, key, None)
            if forwarder.kind in {"dc09", "webhook"} and isinstance(url, str):
                found.append(_connect(f"forwarders[{i}].{key} ({forwarder.name})", url))
    return found


def _failure(problems: tuple[Any, ...]) -> str:
    return f"failed: {problems[0].message}" if problems else "not reached"


def _connect(name: str, url: str) -> LinkResult:
    """A TCP connection to ``url``'s host and port, timed; UDP cannot be tried without a message."""
    parts = urlsplit(url)
    if parts.scheme == "udp":
        return LinkResult(name, url, "not tried (UDP has no connection)", None)
    port = parts.port or (443 if parts.scheme == "https" else 80)

    async def attempt() -> float:
        started = time.monotonic()
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, writer = await asyncio.open_connection(parts.hostname, port)
        writer.close()
        return (time.monotonic() - started) * 1000

    try:
        latency = asyncio.run(attempt())
    except (OSError, TimeoutError) as exc:
        return LinkResult(name, url, f"failed: {exc or 'no answer'}", None)
    return LinkResult(name, url, "reached (TCP connect)", latency)


def read_journal(path: Path) -> JournalFacts:
    """Device states and walk-test times from the journal, read-only; empty if there is none."""
    from gateway.journal_schema import connect  # noqa: PLC0415 - keep `lianfang --help` fast

    if not path.exists():
        return JournalFacts({}, {})
    try:
        conn = connect(path, readonly=True)
    except JournalError:
        return JournalFacts({}, {})
    try:
        conn.row_factory = sqlite3.Row
        devices = {
            (row["shop_id"], row["device_id"]): dict(row)
            for row in conn.execute(
                "SELECT shop_id, device_id, last_seen, battery_v, fault FROM device_state"
            )
        }
        tested = {
            (row[0], row[1]): row[2]
            for row in conn.execute(
                "SELECT shop_id, device_id, MAX(received_at) FROM events"
                " WHERE shop_id IS NOT NULL AND json_extract(body, '$.attrs.test') = 1"
                " GROUP BY shop_id, device_id"
            )
        }
    finally:
        conn.close()
    return JournalFacts(devices, tested)


def _heard(epoch: float | None) -> str:
    if epoch is None:
        return "never heard"
    return f"heard {datetime.fromtimestamp(epoch, UTC):%Y-%m-%d %H:%M} UTC"


def _shop_rows(config: GatewayConfig, facts: JournalFacts) -> list[str]:
    rows = []
    for shop in config.shops:
        address = " ".join(x for x in (shop.street, shop.number, shop.side) if x)
        devices = shop.devices or []
        lines = []
        for device in devices:
            state = facts.devices.get((shop.id, device.id), {})
            battery = f"{state['battery_v']:.2f} V" if state.get("battery_v") else "-"
            supervision = (
                f"fault: {state['fault']}" if state.get("fault") else _heard(state.get("last_seen"))
            )
            test = facts.tested.get((shop.id, device.id))
            walk = f"passed {test[:16].replace('T', ' ')}" if test else "not tested"
            lines.append(
                f"<tr><td>{escape(device.id)}</td><td>{escape(device.kind)}</td>"
                f"<td>{escape(battery)}</td><td>{escape(supervision)}</td>"
                f'<td class="{"pass" if test else "untested"}">{escape(walk)}</td></tr>'
            )
        if not lines:
            lines = ['<tr><td colspan="5">no device listed</td></tr>']
        rows.append(
            f'<tr class="shop"><th>{escape(shop.id)}</th><th colspan="2">{escape(shop.name)}</th>'
            f'<th colspan="2">{escape(address)}</th></tr>{"".join(lines)}'
        )
    return rows


def render_report(
    config: GatewayConfig,
    *,
    config_bytes: bytes,
    links: list[LinkResult],
    facts: JournalFacts,
    links_of: str,
) -> str:
    """The report as one HTML page, with nothing to fetch."""
    from gateway.block_map import block_map_svg  # noqa: PLC0415 - keep `lianfang --help` fast

    digest = hashlib.sha256(config_bytes).hexdigest()[:16]
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    link_rows = "".join(
        f"<tr><td>{escape(link.name)}</td><td>{escape(link.url)}</td>"
        f'<td class="{"pass" if link.result.startswith("reached") else "fail"}">'
        f"{escape(link.result)}</td>"
        f"<td>{'-' if link.latency_ms is None else f'{link.latency_ms:.1f} ms'}</td></tr>"
        for link in links
    )
    tested = sum(
        1
        for s in config.shops
        if s.devices and all((s.id, d.id) in facts.tested for d in s.devices)
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>Commissioning report {escape(config.gateway.id)}</title>
<style>
body {{ font: 12px/1.4 sans-serif; margin: 24px; color: #111; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 15px; margin-top: 20px; }}
table {{ border-collapse: collapse; width: 100%; }}
td, th {{ border: 1px solid #bbb; padding: 2px 6px; text-align: left; }}
tr.shop th {{ background: #eef; }}
.pass {{ color: #070; }} .fail {{ color: #b00; font-weight: bold; }} .untested {{ color: #a60; }}
.block-map {{ width: 100%; max-height: 480px; border: 1px solid #bbb; }}
.shop circle {{ fill: #9bd; stroke: #333; }} .shop.chosen circle {{ fill: #d33; }}
.signatures td {{ height: 48px; width: 25%; vertical-align: bottom; }}
</style></head><body>
<h1>Commissioning report: gateway {escape(config.gateway.id)}</h1>
<table id="identity">
<tr><th>Gateway</th><td>{escape(config.gateway.id)}
 (large grid {escape(config.gateway.large_grid)})</td></tr>
<tr><th>Version</th><td>lianfang {escape(__version__)}</td></tr>
<tr><th>Config hash</th><td>sha256 {digest}</td></tr>
<tr><th>Written</th><td>{now}</td></tr>
<tr><th>Shops</th><td>{len(config.shops)}, {tested} with every device walk-tested</td></tr>
</table>
<h2>Links</h2>
<table id="links"><tr><th>link</th><th>address</th><th>result</th><th>latency</th></tr>
{link_rows}</table>
<h2>Block map</h2>
<p>Shops as points, the gateway as the square; red lines: the shops a panic at
{escape(links_of)} alerts.</p>
{block_map_svg(config, links_of=links_of)}
<h2>Shops and devices</h2>
<table id="shops"><tr><th>device</th><th>kind</th><th>battery</th><th>supervision</th>
<th>walk test</th></tr>
{"".join(_shop_rows(config, facts))}</table>
<h2>Signatures</h2>
<table class="signatures"><tr><th>Installer</th><td></td><th>Shop owner</th><td></td></tr>
<tr><th>Date</th><td></td><th>Date</th><td></td></tr></table>
</body></html>
"""


def write_report(
    config: GatewayConfig, config_file: Path, out: Path, *, links_of: str | None = None
) -> Path:
    """Try the links, read the journal and write the report to ``out``; ``out``."""
    html = render_report(
        config,
        config_bytes=config_file.read_bytes(),
        links=try_links(config),
        facts=read_journal(config.journal_path),
        links_of=links_of or config.shops[0].id,
    )
    out.write_text(html, encoding="utf-8")
    return out


def print_pdf(html: Path, pdf: Path) -> None:
    """Print ``html`` to ``pdf`` with headless Chromium; RuntimeError if it cannot."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise RuntimeError("--pdf needs chromium (apt-get install chromium)")
    # Chromium's sandbox refuses to start as root; a service user keeps it.
    sandbox = ["--no-sandbox"] if os.geteuid() == 0 else []
    done = subprocess.run(  # noqa: S603 - chromium found on PATH, our own arguments
        [
            browser,
            "--headless",
            *sandbox,
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            html.resolve().as_uri(),
        ],
        capture_output=True,
        timeout=PDF_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 or not pdf.exists():
        raise RuntimeError(f"chromium could not print {html}: exit {done.returncode}")


@app.command()
def report(
    config: ConfigOption = None,
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path(
        "commissioning-report.html"
    ),
    pdf: Annotated[
        bool, typer.Option("--pdf", help="Also print it to PDF (beside it) with Chromium.")
    ] = False,
    shop: Annotated[
        str | None,
        typer.Option(
            help="Shop whose alert links the map draws; default the first.", show_default=False
        ),
    ] = None,
) -> None:
    """Write the commissioning report: links, shops, devices, walk tests, map, signatures."""
    path = config_path(config)
    loaded = load_or_exit(path)
    if shop is not None and shop not in {s.id for s in loaded.shops}:
        typer.echo(f"no shop {shop} in {path}", err=True)
        raise typer.Exit(2)
    written = write_report(loaded, path, out, links_of=shop)
    typer.echo(f"Commissioning report: {written.resolve()}")
    if pdf:
        try:
            print_pdf(written, written.with_suffix(".pdf"))
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from None
        typer.echo(f"PDF: {written.with_suffix('.pdf').resolve()}")
