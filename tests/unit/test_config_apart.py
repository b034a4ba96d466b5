"""The daemon loads its config in a forked child: same config, same errors, less memory kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.apart import load_config_apart
from gateway.config.file import load_config
from gateway.errors import ConfigError
from tests.harness import init_config


def test_the_config_loaded_apart_equals_the_one_loaded_here(tmp_path: Path) -> None:
    """Every shop, driver and forwarder comes back as ``load_config`` makes them."""
    path = init_config(tmp_path, block_url="mqtt://127.0.0.1:1883", police_url=None)
    apart = load_config_apart(path)
    assert apart == load_config(path)
    assert len(apart.shops) == 87


def test_a_bad_config_raises_the_same_error_with_its_line(tmp_path: Path) -> None:
    """The child's failure is not hidden: the error names the file, the key and the line."""
    path = init_config(tmp_path, block_url="mqtt://127.0.0.1:1883", police_url=None)
    path.write_text(path.read_text().replace("radius_m: 300", "radius_m: -1", 1))
    with pytest.raises(ConfigError) as apart:
        load_config_apart(path)
    with pytest.raises(ConfigError) as here:
        load_config(path)
    assert str(apart.value) == str(here.value)
    assert "neighbour_alert.radius_m" in str(apart.value)
