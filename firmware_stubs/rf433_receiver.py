"""A 433 MHz receiver module: prints each decoded fixed code as ``RX:<6 hex>``, in bursts.

    python -m firmware_stubs.rf433_receiver --pty

Commands (stdin or ``--control HOST:PORT``):

    press CODE [REPEATS]    one press of a button: REPEATS frames (default 5-10 at random)
    noise [LINES]           garbled lines, as a receiver prints from interference
    quit

With ``--noise-every S`` it also prints a garbled line every S seconds on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random

from firmware_stubs.wire import Wire, add_wire_arguments, commands

FRAME_GAP_S = (0.02, 0.07)


async def press(wire: Wire, code: str, repeats: int) -> None:
    """Send one press: ``repeats`` identical frames a few tens of ms apart."""
    for _ in range(repeats):
        wire.write(f"RX:{code.upper()}\r\n".encode())
        await asyncio.sleep(random.uniform(*FRAME_GAP_S))
    print(f"PRESSED {code.upper()} {repeats}", flush=True)


def garble(wire: Wire, lines: int) -> None:
    """Lines a receiver prints from interference: half a frame, bit errors, junk."""
    for _ in range(lines):
        wire.write(
            random.choice(
                [b"RX:", b"RX:12G4Z\r\n", b"R\x00X:FFFFF\r\n", random.randbytes(12) + b"\r\n"]
            )
        )


async def _serve(args: argparse.Namespace) -> None:
    wire = await Wire.open(None if args.pty else args.port, args.baudrate)

    async def noise_now_and_then() -> None:
        while args.noise_every:
            await asyncio.sleep(args.noise_every)
            garble(wire, 1)

    async with asyncio.TaskGroup() as tg:
        noise = tg.create_task(noise_now_and_then(), name="noise")
        async for line in commands(args.control):
            words = line.split()
            if words[0] == "quit":
                break
            if words[0] == "press" and len(words) in (2, 3):
                repeats = int(words[2]) if len(words) == 3 else random.randint(5, 10)
                await press(wire, words[1], repeats)
            elif words[0] == "noise":
                garble(wire, int(words[1]) if len(words) > 1 else 1)
            else:
                print(f"ERROR unknown command {line!r}", flush=True)
        noise.cancel()


def main() -> None:
    """Command line of the receiver stub."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_wire_arguments(ap, baudrate=9600)
    ap.add_argument("--noise-every", type=float, default=0, help="a garbled line every S s")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(ap.parse_args()))


if __name__ == "__main__":
    main()
