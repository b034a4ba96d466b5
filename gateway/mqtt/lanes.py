"""Where received messages wait for their reader: an urgent lane and a routine one.

Urgent messages (alarms) overtake routine ones, except where the order is part
of the meaning: one topic is one shop's panel, and an urgent message never
overtakes an earlier ``BOUND`` message of its topic (a cancel, a restore, a
disarm). It takes its topic's routine messages up to the last such one along,
ahead of it, so a shop's cancel is never read after that shop's next panic
(decision 87).
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter, deque
from collections.abc import Callable

import paho.mqtt.client as paho


class Lane(enum.IntEnum):
    """Where a received message waits: urgent ones are taken before any routine one."""

    URGENT = 0
    ROUTINE = 1
    BOUND = 2
    """Routine, but a later urgent message of its topic does not overtake it."""


# Judges a message as it is read: its lane, or None to acknowledge and drop it at once.
Screen = Callable[[paho.MQTTMessage], Lane | None]

Received = tuple[paho.MQTTMessage, int]  # (message, connection generation)


class MessageLanes:
    """Received messages for one reader: urgent first, each lane in arrival order.

    An urgent message takes along its topic's routine messages up to the last
    ``BOUND`` one, so those keep their place before it.
    """

    def __init__(self) -> None:
        """Start empty."""
        self._urgent: deque[Received] = deque()
        # Each with whether it is bound.
        self._routine: deque[tuple[paho.MQTTMessage, int, bool]] = deque()
        # Bound messages waiting, per topic: an urgent message scans the routine
        # lane only if its topic has one (rarely: a cancel just before a panic).
        self._bound: Counter[str] = Counter()
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Received, lane: Lane = Lane.ROUTINE) -> None:
        """Queue ``item`` behind the others of its lane (an urgent one behind what it carries)."""
        message, generation = item
        if lane is Lane.URGENT:
            # A counter look-up only when something bound waits: topic decoding costs.
            if self._bound and self._bound[message.topic]:
                self._carry(message.topic)
            self._urgent.append(item)
        elif lane is Lane.BOUND:
            self._routine.append((message, generation, True))
            self._bound[message.topic] += 1
        else:
            self._routine.append((message, generation, False))
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _carry(self, topic: str) -> None:
        """Move ``topic``'s routine messages up to its last bound one to the urgent lane."""
        last = max(
            i
            for i, (message, _, bound) in enumerate(self._routine)
            if bound and message.topic == topic
        )
        others: deque[tuple[paho.MQTTMessage, int, bool]] = deque()
        for i, (message, generation, bound) in enumerate(self._routine):
            if i <= last and message.topic == topic:
                self._urgent.append((message, generation))
            else:
                others.append((message, generation, bound))
        self._routine = others
        del self._bound[topic]

    async def get(self) -> Received:
        """The oldest urgent message, else the oldest routine one; waits for one."""
        while not (self._urgent or self._routine):
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._urgent:
            return self._urgent.popleft()
        message, generation, bound = self._routine.popleft()
        if bound:
            self._bound[message.topic] -= 1
            if not self._bound[message.topic]:
                del self._bound[message.topic]
        return message, generation

    def qsize(self) -> int:
        """Messages waiting in both lanes."""
        return len(self._urgent) + len(self._routine)
