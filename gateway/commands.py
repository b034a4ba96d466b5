"""The police platform's signed commands: set the alert level, arm or disarm a shop, acknowledge.

Every command is answered with an event the police receive through the outbox:
``command_ack`` when obeyed, ``command_refused`` (with the reason) when not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from gateway.actions import RuleActions
from gateway.clock import GatewayClock
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.intake import Intake
from gateway.notice_sender import TokenBucket
from gateway.state_file import write_atomically
from rules.commands import Command, CommandVerifier, Refusal
from rules.models import Level

logger = logging.getLogger(__name__)

SOURCE = "police-cmd"
# Refusals journalled: a burst of 20, then one every 10 s; the rest are counted in the next.
REFUSALS_PER_S = 0.1
REFUSAL_BURST = 20


class PoliceCommands:
    """Verifies each command and carries it out."""

    def __init__(
        self,
        gateway_id: str,
        verifier: CommandVerifier,
        intake: Intake,
        actions: RuleActions,
        *,
        state_file: Path,
        clock: GatewayClock | None = None,
    ) -> None:
        """Obey what ``verifier`` accepts; the level and used nonces persist in ``state_file``.

        Each authentic command's issue time tells ``clock`` the police's time,
        and validity is judged by the clock's best time (the police's when ours is off).
        """
        self._clock = clock or GatewayClock()
        self._verifier = verifier
        self._intake = intake
        self._actions = actions
        self._gateway_id = gateway_id
        self._state_file = state_file
        self.obeyed = 0
        self.refused = 0
        self._refusals = TokenBucket(REFUSALS_PER_S, burst=REFUSAL_BURST)
        self._refused_unjournalled = 0
        self._restore()

    def _restore(self) -> None:
        """The level and the nonces of the commands obeyed before a restart."""
        try:
            state = json.loads(self._state_file.read_text())
            level = Level(state["level"])
            nonces = {str(n): datetime.fromisoformat(t) for n, t in state["nonces"].items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            logger.warning("ignoring %s: %s", self._state_file, exc)
            return
        self._intake.engine.level = level
        for nonce, issued in nonces.items():
            self._verifier.remember(nonce, issued)

    def _save(self) -> None:
        nonces = {n: t.isoformat() for n, t in self._verifier.used_nonces().items()}
        state = {"level": self._intake.engine.level.value, "nonces": nonces}
        try:
            write_atomically(self._state_file, json.dumps(state))
        except OSError as exc:  # the command is obeyed; only its memory across restarts is lost
            logger.error("cannot write %s: %s", self._state_file, exc)  # noqa: TRY400

    async def handle(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        """Verify, obey or refuse, and journal the answer; ``done`` once it is durable."""
        signed = self._verifier.authentic(payload)
        if isinstance(signed, Refusal):
            verdict: Command | Refusal = signed
        else:
            self._clock.told(signed.command.issued_at, by="police", exact=False)
            verdict = self._verifier.timely(signed, self._clock.now())
        if isinstance(verdict, Refusal):
            self.refused += 1
            if not self._refusals.take(1):
                # A flood of junk on the command topic must not crowd the journal and outbox.
                self._refused_unjournalled += 1
                done()
                return
            unjournalled, self._refused_unjournalled = self._refused_unjournalled, 0
            answer = self._event(
                EventKind.COMMAND_REFUSED,
                None,
                {
                    "reason": verdict.reason,
                    "detail": verdict.detail[:256],
                    "key_id": verdict.key_id,
                    "nonce": verdict.nonce,
                    "command": verdict.command,
                    "topic": topic,
                    "refused_since_not_journalled": unjournalled,
                },
            )
            await self._intake.gateway_event(answer, on_durable=done)
            return
        attrs = self._obey(verdict)
        self._save()
        self.obeyed += 1
        answer = self._event(EventKind.COMMAND_ACK, verdict.shop_id, attrs)
        await self._intake.gateway_event(answer, on_durable=done)
        if verdict.command in ("arm", "disarm") and attrs["result"] == "done":
            kind = EventKind.ARM if verdict.command == "arm" else EventKind.DISARM
            await self._intake.gateway_event(
                self._event(kind, verdict.shop_id, {"by": "police", "nonce": verdict.nonce})
            )

    def _obey(self, command: Command) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "command": command.command,
            "nonce": command.nonce,
            "issued_at": command.issued_at.isoformat(),
            "result": "done",
        }
        if command.command == "set_level":
            assert command.level is not None
            attrs["previous_level"] = self._intake.engine.level.value
            attrs["level"] = command.level.value
            self._intake.engine.level = command.level
        elif command.command == "ack_alert":
            assert command.alert_id is not None
            attrs["alert_id"] = command.alert_id
            if not self._actions.acknowledge(command.alert_id):
                attrs["result"] = "nothing to acknowledge"
        elif not self._intake.engine.schedule.knows(command.shop_id or ""):
            attrs["result"] = f"no shop {command.shop_id} on this gateway"
        return attrs

    def _event(self, kind: EventKind, shop_id: str | None, attrs: dict[str, Any]) -> Event:
        now = utc_now()
        return Event(
            id=new_event_id(),
            gateway_id=self._gateway_id,
            shop_id=shop_id,
            device_id="police",
            kind=kind,
            occurred_at=now,
            received_at=now,
            source=Source(driver=SOURCE, ref="cmd"),
            attrs=attrs,
        )
