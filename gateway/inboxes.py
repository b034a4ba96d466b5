"""What the gateway listens to besides its drivers: shops' responses, police commands, the mesh.

- ``lianfang/v1/shop/{shop_id}/response`` on the block broker: a shop's answer to
  an alert (``coming``, ``safe`` or ``cancel``), journalled and forwarded with the alert id.
- ``police/v1/{large_grid}/{gateway_id}/cmd`` on the police broker: signed commands.
- ``police/v1/{large_grid}/mesh/{gateway_id}/notify`` on the police broker: notices
  other gateways send for this gateway's shops. Each alert is relayed to the block
  once and never sent on again, so notices cannot loop between gateways.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.actions import RuleActions
from gateway.clock import GatewayClock
from gateway.commands import PoliceCommands
from gateway.config.model import GatewayConfig
from gateway.forwarders.mqtt_police import PoliceMqttConfig
from gateway.intake import Intake
from gateway.mqtt.inbox import Inbox, Rejected
from gateway.mqtt.notify import TOPIC_ROOT
from protocols.mesh_message import MeshMessage
from rules.commands import CommandVerifier

RESPONSE_TOPIC = f"{TOPIC_ROOT}/shop/+/response"
MAX_MESH_BYTES = 256 * 1024


class Response(BaseModel):
    """A shop's answer to an alert."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str = Field(min_length=1, max_length=64, description="The alert answered.")
    response: Literal["coming", "safe", "cancel"] = Field(description="The answer.")


class ShopResponses:
    """Turns shops' answers into journalled ``response`` events."""

    def __init__(self, shops: set[str], intake: Intake, actions: RuleActions) -> None:
        """Accept answers from ``shops`` only."""
        self._shops = shops
        self._intake = intake
        self._actions = actions

    async def handle(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:
        """Journal one answer; ``done`` once it is durable."""
        parts = topic.split("/")
        shop_id = parts[3] if len(parts) == 5 else ""
        if shop_id not in self._shops:
            raise Rejected("unknown_shop", f"no shop {shop_id!r} on this gateway")
        try:
            answer = Response.model_validate_json(payload)
        except ValidationError as exc:
            raise Rejected("invalid", str(exc.errors()[0]["msg"])) from None
        event = self._actions.response_event(shop_id, answer.alert_id, answer.response)
        await self._intake.gateway_event(event, on_durable=done)


class MeshRelay:
    """Sends notices to other gateways' shops, and relays theirs to this block."""

    def __init__(self, topic_root: str, actions: RuleActions, neighbours: set[str]) -> None:
        """Publish under ``topic_root`` (``police/v1``); relay from ``neighbours`` (gateway ids)."""
        self._root = topic_root
        self._actions = actions
        self._neighbours = neighbours
        self.inbox: Inbox | None = None

    def submit(self, gateway_id: str, large_grid: str, message: bytes) -> None:
        """Queue ``message`` for ``gateway_id``'s mesh topic."""
        if self.inbox is not None:
            self.inbox.submit(mesh_topic(self._root, large_grid, gateway_id), message)

    async def handle(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:  # noqa: ARG002 - one topic
        """Relay a message's notices to this block's shops (from neighbouring gateways only)."""
        if len(payload) > MAX_MESH_BYTES:
            raise Rejected("invalid", f"{len(payload)} bytes is too long for a mesh message")
        try:
            message = MeshMessage.model_validate(json.loads(payload))
        except (ValueError, ValidationError) as exc:
            raise Rejected("invalid", f"not a mesh message: {exc}"[:200]) from None
        if message.from_gateway not in self._neighbours:
            # Only a gateway whose shops lie near ours has a reason to alert them.
            raise Rejected(
                "unknown_gateway", f"{message.from_gateway!r} is no neighbouring gateway"
            )
        self._actions.relay(message)
        done()


def mesh_topic(root: str, large_grid: str, gateway_id: str) -> str:
    """Where ``gateway_id`` listens for notices from other gateways."""
    return f"{root}/{large_grid}/mesh/{gateway_id}/notify"


def inboxes(
    config: GatewayConfig,
    intake: Intake,
    actions: RuleActions,
    clock: GatewayClock | None = None,
) -> list[Inbox]:
    """The gateway's inboxes; the police ones only when a police MQTT forwarder is configured.

    Signed commands tell ``clock`` the police's time.
    """
    gid = config.gateway.id
    responses = ShopResponses({s.id for s in config.shops}, intake, actions)
    found = [
        Inbox(
            "responses",
            config.broker,
            client_id=f"lianfang-{gid}-responses",
            topic=RESPONSE_TOPIC,
            handle=responses.handle,
        )
    ]
    police = next((f for f in config.forwarders if isinstance(f, PoliceMqttConfig)), None)
    if police is None:
        return found
    verifier = CommandVerifier(gid, config.commands.keys, max_age_s=config.commands.max_age_s)
    commands = PoliceCommands(
        gid, verifier, intake, actions, state_file=config.state_dir / "commands.json", clock=clock
    )
    mesh = MeshRelay(police.topic_root, actions, {s.gateway_id for s in config.other_shops} - {gid})
    found.append(
        Inbox(
            "police-commands",
            police.broker,
            client_id=f"lianfang-{gid}-cmd",
            topic=f"{police.topic_root}/{config.gateway.large_grid}/{gid}/cmd",
            handle=commands.handle,
        )
    )
    mesh.inbox = Inbox(
        "mesh",
        police.broker,
        client_id=f"lianfang-{gid}-mesh",
        topic=mesh_topic(police.topic_root, config.gateway.large_grid, gid),
        handle=mesh.handle,
    )
    found.append(mesh.inbox)
    actions.mesh = mesh
    return found
