"""The police platform's signed commands: set the alert level, arm or disarm a shop, acknowledge.

Every command is answered with an event the police receive through the outbox:
``command_ack`` when obeyed, ``command_refused`` (with the reason) when not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway.actions import RuleActions
from gateway.events import Event, EventKind, Source, new_event_id, utc_now
from gateway.intake import Intake
from rules.commands import Command, CommandVerifier, Refusal

SOURCE = "police-cmd"


class PoliceCommands:
    """Verifies each command and carries it out."""

    def __init__(
        self, gateway_id: str, verifier: CommandVerifier, intake: Intake, actions: RuleActions
    ) -> None:
        """Obey what ``verifier`` accepts, through ``intake`` and ``actions``."""
        self._verifier = verifier
        self._intake = intake
        self._actions = actions
        self._gateway_id = gateway_id
        self.obeyed = 0
        self.refused = 0

    async def handle(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        """Verify, obey or refuse, and journal the answer; ``done`` once it is durable."""
        now = utc_now()
        verdict = self._verifier.verify(payload, now)
        if isinstance(verdict, Refusal):
            self.refused += 1
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
                },
            )
            await self._intake.gateway_event(answer, on_durable=done)
            return
        attrs = self._obey(verdict)
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
