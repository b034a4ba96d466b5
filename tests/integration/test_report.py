"""`lianfang report`: the commissioning report, written next to a real gateway and opened in headless Chromium."""

from __future__ import annotations

import subprocess
import sys

from tests.clients import expected_nearest, survey_rows

SHOP = "S00040"


def test_report_shows_links_shops_and_map_in_chromium(tmp_path, start_gateway, chromium):
    """The report names the links tried, every shop, and draws the map with the chosen shop's 10 links; PDF too."""
    gw = start_gateway()
    out = tmp_path / "report.html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gateway",
            "report",
            "--config",
            str(gw.config),
            "--out",
            str(out),
            "--shop",
            SHOP,
            "--pdf",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert str(out) in done.stdout
    assert out.with_suffix(".pdf").read_bytes().startswith(b"%PDF-")
    html = out.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html

    tab = chromium.open(out.as_uri())
    shops = chromium.evaluate(
        tab,
        "[...document.querySelectorAll('#shops tr.shop th:first-child')].map(e => e.textContent)",
    )
    assert shops == [r["shop_id"] for r in survey_rows()]
    # The map is drawn, with the alert links of the chosen shop to exactly its nearest shops.
    assert (
        chromium.evaluate(
            tab, "document.querySelector('svg.block-map').getBoundingClientRect().height"
        )
        > 100
    )
    targets = chromium.evaluate(
        tab,
        "[...document.querySelectorAll('line.link title')].map(e => e.textContent.split(' ')[2].replace(':', ''))",
    )
    assert sorted(targets) == sorted(expected_nearest(SHOP))
    links = chromium.evaluate(tab, "document.getElementById('links').innerText")
    assert "broker\t" in links
    assert "reached" in links
    assert " ms" in links
    assert "not tested" in chromium.evaluate(tab, "document.getElementById('shops').innerText")
    assert "Shop owner" in chromium.evaluate(tab, "document.body.innerText")
    assert chromium.console_errors(tab) == []
    shot = chromium.screenshot(tab, tmp_path / "report.png")
    print(f"report screenshot: {shot}")  # noqa: T201 - the test's artefact, for the note
    assert shot.stat().st_size > 10_000
