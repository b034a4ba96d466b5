"""The receiver's refusal log: one line per source per interval, with the count held back."""

from __future__ import annotations

import logging

from receiver.refusals import RefusalLog

logger = logging.getLogger("test.refusals")


def test_one_line_per_source_per_interval_with_the_count(caplog):
    caplog.set_level(logging.WARNING, logger="test.refusals")
    now = [0.0]
    log = RefusalLog(logger, interval_s=60, clock=lambda: now[0])
    for _ in range(500):
        log.refused("10.0.0.9", "a frame: bad CRC")
    log.refused("10.0.0.7", "a connection: 16 open from this address")
    now[0] = 61.0
    log.refused("10.0.0.9", "a frame: wrong length")
    log.refused("10.0.0.9", "a frame: wrong length")
    assert [r.getMessage() for r in caplog.records] == [
        "10.0.0.9: refused a frame: bad CRC",
        "10.0.0.7: refused a connection: 16 open from this address",
        "10.0.0.9: refused 500 in the last 61 s; the latest: a frame: wrong length",
    ]
