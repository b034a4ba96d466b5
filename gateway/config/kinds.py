"""Every driver's and every forwarder's settings, told apart by ``kind``: what a config may hold.

Built when a config is first validated (or its schema asked for), not when
``gateway.config.model`` is imported: the daemon is handed its config validated
by a child process and imports only the kinds it runs (decision 108).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Union

from pydantic import BaseModel, Field

import drivers
import gateway.forwarders


def _union(kinds: Iterable[str], settings: Callable[[str], type[BaseModel]]) -> Any:  # noqa: ANN401 - a type form
    classes = tuple(settings(kind) for kind in kinds)
    return Annotated[Union[classes], Field(discriminator="kind")]  # noqa: UP007 - built from a tuple


@functools.cache
def driver_settings() -> Any:  # noqa: ANN401 - a type form
    """The type of one entry of a config's ``drivers``: any driver kind's settings."""
    return _union(drivers.SETTINGS, drivers.settings_class)


@functools.cache
def forwarder_settings() -> Any:  # noqa: ANN401 - a type form
    """The type of one entry of a config's ``forwarders``: any forwarder kind's settings."""
    return _union(gateway.forwarders.FORWARDERS, gateway.forwarders.settings_class)


def namespace() -> dict[str, Any]:
    """The names ``GatewayConfig``'s fields are annotated with, bound to the unions."""
    return {"DriverConfigUnion": driver_settings(), "ForwarderConfigUnion": forwarder_settings()}
