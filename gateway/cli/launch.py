"""The ``lianfang`` console script: the daemon starts without the command line's libraries.

``lianfang run`` (what systemd starts) goes straight to the gateway: typer, click,
rich and every other command's module would otherwise stay in the daemon's memory
for its whole life, unused. Every other command line, ``run`` with anything but
``--config`` among them (``run --help``), goes through the typer app. A config
that sets up no TLS runs without ``ssl`` (and OpenSSL's libssl) loaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from gateway.config.location import WITH_SSL_ENV, config_path


def main() -> None:
    """Entry point of the ``lianfang`` console script and of ``python -m gateway``."""
    match sys.argv[1:]:
        case ["run"]:
            option = None
        case ["run", "--config" | "-c", value]:
            option = Path(value)
        case ["run", value] if value.startswith("--config="):
            option = Path(value.removeprefix("--config="))
        case _:
            from gateway.cli.main import main as command_line  # noqa: PLC0415 - not for `run`

            command_line()
            return
    path = config_path(option)
    if os.environ.get(WITH_SSL_ENV) != "1" and not may_need_ssl(path):
        leave_out_ssl()
    from gateway.app import run_from_file  # noqa: PLC0415 - after the command line is read

    sys.exit(run_from_file(path))


def leave_out_ssl() -> None:
    """Make ``import ssl`` fail in this process, before asyncio and paho are imported.

    asyncio takes a missing ``ssl`` as a platform without TLS. So does paho, but for
    the ``except ssl.SSLWantReadError`` clauses of its socket reads and writes, which
    are looked up whenever a read or write raises (a read with nothing to read):
    paho gets a stand-in with those two exceptions, raised by nothing (decision 921).
    """
    sys.modules["ssl"] = None  # type: ignore[assignment]  # None: `import ssl` fails
    import paho.mqtt.client as paho  # noqa: PLC0415 - after ssl is left out

    paho.ssl = _NoTls  # type: ignore[attr-defined,assignment]


class _NoTls:
    """What paho's socket reads and writes name of ``ssl``, in a process without it."""

    class SSLWantReadError(Exception):
        """Never raised: there is no TLS."""

    class SSLWantWriteError(Exception):
        """Never raised: there is no TLS."""


SSL_WORDS = (b"mqtts", b"https", b"tls", b"ssl", b"webhook", b"status_page", b"modbus")
"""Words, lower-cased, without which a config's text sets up no TLS, webhook, status page or
Modbus bus (pymodbus imports ``ssl``)."""


def may_need_ssl(path: Path) -> bool:
    """Whether the config file's text names anything that uses ``ssl`` (unreadable: yes).

    A quick look, before the config is read: a config that spells these words
    with YAML escapes is caught after validation, and the daemon starts again
    with ``ssl`` (``gateway.app.run_from_file``).
    """
    try:
        text = path.read_bytes().lower()
    except OSError:
        return True
    return any(word in text for word in SSL_WORDS)
