"""Open a serial port, local or by pyserial URL (``socket://``...), as asyncio streams."""

from __future__ import annotations

import asyncio

from gateway.errors import DriverUnavailable

READ_SIZE = 512


async def open_serial(url: str, baudrate: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open ``url`` (a device path or pyserial URL); raise ``DriverUnavailable`` if it cannot.

    A local port is locked for this process alone: two readers of one tty split its
    bytes between them, so ``lianfang learn`` beside a hung gateway would take half of
    a panic button's frames. The second opener is refused instead.
    """
    import serial  # noqa: PLC0415 - pyserial only for a gateway with a serial driver
    import serial_asyncio_fast  # noqa: PLC0415

    try:
        return await serial_asyncio_fast.open_serial_connection(
            url=url, baudrate=baudrate, exclusive=True
        )
    except (serial.SerialException, OSError, ValueError) as exc:
        raise DriverUnavailable(f"serial port {url}: {exc}") from None


async def read_some(reader: asyncio.StreamReader, url: str) -> bytes:
    """The next bytes from the port; raise ``DriverUnavailable`` once it is closed or fails."""
    import serial  # noqa: PLC0415 - loaded by open_serial already

    try:
        data = await reader.read(READ_SIZE)
    except (serial.SerialException, OSError) as exc:
        raise DriverUnavailable(f"serial port {url}: {exc}") from None
    if not data:
        raise DriverUnavailable(f"serial port {url} closed")
    return data
