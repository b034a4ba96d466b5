"""The gateway's exceptions.

The tree is small on purpose::

    GatewayError
    ├── ConfigError                 bad configuration; carries every problem found
    ├── DriverError
    │   ├── DriverUnavailable       a device link is down; the supervisor retries
    │   └── DeviceProtocolError     a device sent something we cannot use
    ├── ForwardError
    │   ├── PlatformNak             the receiver refused a message (``code``)
    │   └── PlatformUnreachable     the receiver cannot be reached; retried
    └── JournalError                the journal database cannot be used
"""

from __future__ import annotations

from dataclasses import dataclass


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in a configuration file, located for the installer."""

    file: str
    path: str
    message: str
    line: int | None = None
    value: str | None = None

    def __str__(self) -> str:
        """``file:line: path: message (got value)``."""
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        at = f" {self.path}:" if self.path else ""
        shown = f" (got {self.value})" if self.value is not None else ""
        return f"{where}:{at} {self.message}{shown}"


class ConfigError(GatewayError):
    """A configuration that cannot be used; ``problems`` lists every finding."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        """Keep the problems; the message is their list, one per line."""
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


class DriverError(GatewayError):
    """A southbound device link failed."""


class DriverUnavailable(DriverError):  # noqa: N818 - the name says the state, as HA's UpdateFailed
    """The link to a device or bus is down; the supervisor backs off and retries."""


class DeviceProtocolError(DriverError):
    """A device sent a frame or payload the driver cannot use."""

    def __init__(self, message: str, frame: bytes = b"") -> None:
        """Keep the offending frame for the audit log."""
        super().__init__(message)
        self.frame = frame


class ForwardError(GatewayError):
    """Delivering to an upstream receiver failed."""


class PlatformNak(ForwardError):  # noqa: N818 - a NAK is the receiver's word
    """The receiver refused a message with ``code``."""

    def __init__(self, message: str, code: int | str) -> None:
        """Keep the receiver's refusal code."""
        super().__init__(message)
        self.code = code


class PlatformUnreachable(ForwardError):  # noqa: N818 - states the condition
    """The receiver cannot be reached now; the supervisor retries."""


class JournalError(GatewayError):
    """The journal database cannot be opened or written."""
