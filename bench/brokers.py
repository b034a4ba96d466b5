"""Which Mosquitto the benchmarks run against: stock, tuned, or both side by side.

**stock** is Mosquitto as ``apt-get install mosquitto`` leaves it (a listener
only: Receive Maximum 20, at most 1,000 queued messages per offline client),
the broker installers have. **tuned** adds ``lab.broker.TUNED_SETTINGS``
(deep queues, no in-flight cap, TCP_NODELAY), what the project's benches used
to run on alone. Every figure is labelled with its broker and compared only
with a floor measured on the same broker.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from pathlib import Path

from lab.broker import TUNED_SETTINGS, Mosquitto

BROKERS = ("stock", "tuned")


def add_broker_option(parser: argparse.ArgumentParser) -> None:
    """``--broker {stock,tuned,both}``, default both."""
    parser.add_argument(
        "--broker",
        choices=(*BROKERS, "both"),
        default="both",
        help="Mosquitto's stock configuration, the tuned one, or both (default)",
    )


def chosen(option: str) -> tuple[str, ...]:
    """The brokers a ``--broker`` value names, stock first."""
    return BROKERS if option == "both" else (option,)


def broker_settings(broker: str) -> list[str]:
    """The configuration lines ``broker`` adds to Mosquitto's stock one (for the results)."""
    return list(TUNED_SETTINGS) if broker == "tuned" else []


@contextlib.contextmanager
def broker_pair(broker: str, workdir: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """The block's and the police's Mosquitto, both ``broker``, running in ``workdir``."""
    tuned = broker == "tuned"
    with (
        Mosquitto(workdir=workdir / "block-broker", tuned=tuned) as block,
        Mosquitto(workdir=workdir / "police-broker", tuned=tuned) as police,
    ):
        yield block, police
