"""What most fault scenarios stage first: a block broker, a police broker, the real daemon."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.latency import write_config
from lab.broker import Mosquitto
from lab.process import GatewayProcess


@contextlib.contextmanager
def block_with_gateway(work: Path) -> Iterator[tuple[Mosquitto, Mosquitto, GatewayProcess]]:
    """Both brokers (the police one persistent) and a ready gateway on them; all stopped after."""
    with (
        Mosquitto(workdir=work / "block-broker") as block,
        Mosquitto(workdir=work / "police-broker", persistent=True) as police,
    ):
        config, _ = write_config(work / "gateway", block.url, police.url)
        gateway = GatewayProcess(config)
        gateway.start()
        try:
            yield block, police, gateway
        finally:
            gateway.stop()
