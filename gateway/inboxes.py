"""What the gateway listens to besides its drivers: shops' responses, police commands, the mesh.

- ``lianfang/v1/shop/{shop_id}/response`` on the block broker: a shop's answer to
  an alert (``coming``, ``safe`` or ``cancel``), journalled and forwarded with the alert id.
- ``police/v1/{large_grid}/{gateway_id}/cmd`` on the police broker: signed commands.
- ``police/v1/{large_grid}/mesh/{gateway_id}/notify`` on the police broker: notices
  other gateways send for this gateway's shops, each signed by its sender's mesh key
  (``protocols/mesh_message.py``). Each alert is relayed to the block once and
  never sent on again, so notices cannot loop between gateways.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.actions import RuleActions
from gateway.clock import GatewayClock
from gateway.commands import PoliceCommands
from gateway.config.model import GatewayConfig
from gateway.events import utc_now
from gateway.forwarders.mqtt_police import PoliceMqttConfig
from gateway.intake import Intake
from gateway.mqtt.inbox import Inbox, Rejected
from gateway.mqtt.notify import TOPIC_ROOT
from gateway.state_file import write_atomically
from protocols.mesh_message import (
    MeshRefused,
    MeshVerifier,
    load_private_key,
    load_public_key,
    seal,
)
from rules.commands import CommandVerifier

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

logger = logging.getLogger(__name__)

RESPONSE_TOPIC = f"{TOPIC_ROOT}/shop/+/response"


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
        """Journal one answer; ``done`` once it is durable.

        Never refused, while storage is short too: the police must see every answer
        (decision 82).
        """
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
    """Sends signed notices to other gateways' shops, and relays theirs to this block.

    Every message out is signed with this gateway's mesh key; every message in
    is relayed only if ``verifier`` accepts it (a gateway whose key we hold,
    addressed to us, fresh, never seen). Refusals are counted by the inbox.
    """

    def __init__(
        self,
        topic_root: str,
        actions: RuleActions,
        verifier: MeshVerifier,
        *,
        gateway_id: str,
        key: Ed25519PrivateKey | None,
        state_file: Path,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        """Publish under ``topic_root`` (``police/v1``) signed with ``key`` (None: send nothing).

        The nonces of the messages relayed are kept in ``state_file``, so a
        replay is refused across a restart too, as a replayed command is.
        ``now`` dates and checks messages: the gateway clock's best time, so
        that a Pi whose clock is off (no RTC) neither sends nor refuses
        notices as stale.
        """
        self._root = topic_root
        self._actions = actions
        self._verifier = verifier
        self._gateway_id = gateway_id
        self._key = key
        self._state_file = state_file
        self._now = now
        self.inbox: Inbox | None = None
        self._restore()

    def _restore(self) -> None:
        try:
            nonces = json.loads(self._state_file.read_text())
            for nonce, issued in nonces.items():
                self._verifier.remember(str(nonce), datetime.fromisoformat(issued))
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            logger.warning("ignoring %s: %s", self._state_file, exc)

    def _save(self) -> None:
        nonces = {n: t.isoformat() for n, t in self._verifier.used_nonces().items()}
        try:
            write_atomically(self._state_file, json.dumps(nonces))
        except OSError as exc:  # relayed all the same; only the memory across restarts is lost
            logger.error("cannot write %s: %s", self._state_file, exc)  # noqa: TRY400

    def submit(self, gateway_id: str, large_grid: str, message: bytes) -> None:
        """Queue ``message`` for ``gateway_id``'s mesh topic, signed in the loop's next turn.

        A signature costs ~0.1 ms: signed later, it does not hold back the
        notices to this block's own shops queued by the same panic.
        """
        if self.inbox is None:
            return
        if self._key is None:
            # Unsigned, every gateway would refuse it: count it where the status shows it.
            self.inbox.rejected["no_mesh_key"] = self.inbox.rejected.get("no_mesh_key", 0) + 1
            return
        asyncio.get_running_loop().call_soon(
            self._sign_and_send, self.inbox, self._key, gateway_id, large_grid, message
        )

    def _sign_and_send(
        self, inbox: Inbox, key: Ed25519PrivateKey, gateway_id: str, large_grid: str, message: bytes
    ) -> None:
        sealed = seal(
            message, key=key, gateway_id=self._gateway_id, to_gateway=gateway_id, now=self._now()
        )
        inbox.submit(mesh_topic(self._root, large_grid, gateway_id), sealed)

    async def handle(self, topic: str, payload: bytes, done: Callable[[], None]) -> None:  # noqa: ARG002 - one topic
        """Relay a message's notices to this block's shops, if its signature holds."""
        try:
            message = self._verifier.verify(payload, self._now())
        except MeshRefused as refused:
            raise Rejected(refused.reason, str(refused)[:200]) from None
        self._save()
        self._actions.relay(message)
        done()


def mesh_keys(
    config: GatewayConfig,
) -> tuple[Ed25519PrivateKey | None, dict[str, Ed25519PublicKey]]:
    """This gateway's mesh key and the other gateways' public keys, as far as they can be read.

    A key that cannot be read is logged and left out (``lianfang check`` names
    it first): the gateway then sends no mesh notices, or refuses that gateway's,
    and keeps serving its own block.
    """
    if config.gateway.mesh_key_file is None and not config.other_gateways:
        return None, {}
    own = None
    if (own_file := config.gateway.mesh_key_file) is not None:
        try:
            own = load_private_key(own_file)
        except (OSError, ValueError) as exc:
            logger.error("mesh key %s: %s; no notices go to other gateways", own_file, exc)  # noqa: TRY400
    else:
        logger.warning("no gateway.mesh_key_file: no notices go to other gateways' shops")
    public = {}
    for gateway_id, path in config.other_gateways.items():
        try:
            public[gateway_id] = load_public_key(path)
        except (OSError, ValueError) as exc:
            logger.error("mesh key of %s, %s: %s; its notices are refused", gateway_id, path, exc)  # noqa: TRY400
    return own, public


class Keyring:
    """The verifiers of police commands and mesh notices, which a reload gives new keys."""

    def __init__(self) -> None:
        """Empty until ``inboxes`` builds the police inboxes."""
        self.commands: CommandVerifier | None = None
        self.mesh: MeshVerifier | None = None

    def rekey(self, config: GatewayConfig) -> None:
        """Trust the command keys and other gateways' mesh keys of ``config`` from now on."""
        if self.commands is not None:
            self.commands.trust(config.commands.keys)
        if self.mesh is not None:
            self.mesh.trust(mesh_keys(config)[1])


def mesh_topic(root: str, large_grid: str, gateway_id: str) -> str:
    """Where ``gateway_id`` listens for notices from other gateways."""
    return f"{root}/{large_grid}/mesh/{gateway_id}/notify"


def inboxes(
    config: GatewayConfig,
    intake: Intake,
    actions: RuleActions,
    clock: GatewayClock | None = None,
    keyring: Keyring | None = None,
) -> list[Inbox]:
    """The gateway's inboxes; the police ones only when a police MQTT forwarder is configured.

    Signed commands tell ``clock`` the police's time; ``keyring`` is given their verifiers.
    """
    gid = config.gateway.id
    responses = ShopResponses({s.id for s in config.shops}, intake, actions)
    found = [
        Inbox(
            "responses",
            config.broker,
            client_id=f"lianfang-{gid}-responses",
            # One filter per own shop, as the ingest: on a shared broker other gateways'
            # answers never reach us (the wildcard an older version used is dropped).
            topic=[RESPONSE_TOPIC.replace("+", s.id, 1) for s in config.shops],
            unsubscribe=[RESPONSE_TOPIC],
            handle=responses.handle,
        )
    ]
    police = next((f for f in config.forwarders if isinstance(f, PoliceMqttConfig)), None)
    if police is None:
        return found
    commands_verifier = CommandVerifier(
        gid, config.commands.keys, max_age_s=config.commands.max_age_s
    )
    commands = PoliceCommands(
        gid,
        commands_verifier,
        intake,
        actions,
        state_file=config.state_dir / "commands.json",
        clock=clock,
    )
    key, public_keys = mesh_keys(config)
    verifier = MeshVerifier(gid, public_keys, max_age_s=config.commands.max_age_s)
    if keyring is not None:
        keyring.commands, keyring.mesh = commands_verifier, verifier
    mesh = MeshRelay(
        police.topic_root,
        actions,
        verifier,
        gateway_id=gid,
        key=key,
        state_file=config.state_dir / "mesh-nonces.json",
        now=clock.now if clock is not None else utc_now,
    )
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
    actions.notices.mesh = mesh
    return found
