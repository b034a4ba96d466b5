"""Where the config file is, as every command and the daemon look for it."""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_ENV = "LIANFANG_CONFIG"
DEFAULT_CONFIG = Path("lianfang.yaml")


def config_path(option: Path | None) -> Path:
    """Where the config file is: --config, else $LIANFANG_CONFIG, else ./lianfang.yaml."""
    if option is not None:
        return option
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG
