"""Signed commands from the police platform: verify, refuse with a reason, never trust unsigned.

A command is an envelope ``{"key_id", "body", "signature"}``: ``body`` is the
command as JSON text and ``signature`` the platform's Ed25519 signature of
that text's UTF-8 bytes, in base64. Signing the exact text (not a re-encoding
of it) leaves nothing to canonicalise. The body names the gateway, a nonce
and its validity; a nonce is accepted once.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from gateway.nonces import CLOCK_SKEW, UsedNonces
from rules.models import Level

MAX_COMMAND_BYTES = 4096


class Envelope(BaseModel):
    """A signed command as it arrives on ``police/v1/{large_grid}/{gateway_id}/cmd``."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(max_length=64, description="Which platform key signed it.")
    body: str = Field(max_length=MAX_COMMAND_BYTES, description="The command, JSON text.")
    signature: str = Field(max_length=200, description="Ed25519 signature of body, base64.")


class Command(BaseModel):
    """What the platform asks; ``level`` for set_level, ``shop_id`` for arm/disarm."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: str = Field(description="The gateway it is for.")
    command: Literal["set_level", "arm", "disarm", "ack_alert"] = Field(description="What to do.")
    nonce: str = Field(min_length=8, max_length=64, description="Unique per command.")
    issued_at: AwareDatetime = Field(description="When the platform issued it.")
    expires_at: AwareDatetime = Field(description="After this it is refused.")
    level: Level | None = Field(default=None, description="New alert level (set_level).")
    shop_id: str | None = Field(default=None, max_length=40, description="Shop (arm/disarm).")
    alert_id: str | None = Field(default=None, max_length=64, description="Alert (ack_alert).")

    @model_validator(mode="after")
    def _has_its_argument(self) -> Command:
        needed = {
            "set_level": "level",
            "arm": "shop_id",
            "disarm": "shop_id",
            "ack_alert": "alert_id",
        }
        if getattr(self, needed[self.command]) is None:
            raise ValueError(f"{self.command} needs {needed[self.command]}")
        return self


@dataclass(frozen=True, slots=True)
class Authentic:
    """A command the police signed for this gateway, not yet checked for time or replay."""

    command: Command
    key_id: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command was refused, with whatever of it could be read."""

    reason: str
    detail: str
    key_id: str | None = None
    nonce: str | None = None
    command: str | None = None


class CommandVerifier:
    """Checks signature, gateway, validity window and nonce of each command."""

    def __init__(self, gateway_id: str, keys: dict[str, str], *, max_age_s: float) -> None:
        """Trust ``keys`` (key id -> raw Ed25519 public key, base64) for ``gateway_id``."""
        self._gateway_id = gateway_id
        self.trust(keys)
        self._max_age = timedelta(seconds=max_age_s)
        self._nonces = UsedNonces(self._max_age)

    def trust(self, keys: dict[str, str]) -> None:
        """Trust ``keys`` from now on (at start and on reload); used nonces stay used."""
        # cryptography costs ~7 MB of memory: loaded only by gateways that trust a key.
        if keys:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
                Ed25519PublicKey,
            )
        self._keys = {
            key_id: Ed25519PublicKey.from_public_bytes(base64.b64decode(raw))
            for key_id, raw in keys.items()
        }

    def remember(self, nonce: str, issued_at: datetime) -> None:
        """Count ``nonce`` as used (also for nonces read back from the journal at start)."""
        self._nonces.remember(nonce, issued_at)

    def used_nonces(self) -> dict[str, datetime]:
        """Nonces still remembered, with their issue times (to keep across a restart)."""
        return self._nonces.issued()

    def verify(self, payload: bytes, now: datetime) -> Command | Refusal:
        """The command, if it is to be obeyed at ``now``; else why not."""
        verdict = self.authentic(payload)
        return verdict if isinstance(verdict, Refusal) else self.timely(verdict, now)

    def authentic(self, payload: bytes) -> Authentic | Refusal:
        """The command if the police signed it for this gateway, whatever its time; else why not.

        Its ``issued_at`` can then be trusted as the police's word (a floor on the time).
        """
        try:
            envelope = self._signed(payload)
            command = self._for_us(envelope)
        except _Refused as refused:
            return refused.refusal
        return Authentic(command, envelope.key_id)

    def timely(self, signed: Authentic, now: datetime) -> Command | Refusal:
        """The authentic command if it is valid at ``now`` and its nonce is new; else why not."""
        try:
            self._in_time(signed, now)
        except _Refused as refused:
            return refused.refusal
        self.remember(signed.command.nonce, signed.command.issued_at)
        return signed.command

    def _signed(self, payload: bytes) -> Envelope:
        if len(payload) > MAX_COMMAND_BYTES * 2:
            raise _Refused("malformed", f"{len(payload)} bytes is too long for a command")
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise _Refused("malformed", "not JSON") from None
        if isinstance(raw, dict) and "signature" not in raw:
            raise _Refused("unsigned", "no signature", key_id=_text(raw.get("key_id")))
        try:
            envelope = Envelope.model_validate(raw)
        except ValidationError as exc:
            raise _Refused("malformed", _first_error(exc)) from None
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise _Refused("unknown_key", f"no key {envelope.key_id!r}", key_id=envelope.key_id)
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see __init__

        try:
            key.verify(base64.b64decode(envelope.signature, validate=True), envelope.body.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            raise _Refused(
                "bad_signature", "signature does not verify", key_id=envelope.key_id
            ) from None
        return envelope

    def _for_us(self, envelope: Envelope) -> Command:
        try:
            command = Command.model_validate_json(envelope.body)
        except ValidationError as exc:
            raise _Refused("malformed", _first_error(exc), key_id=envelope.key_id) from None
        if command.gateway_id != self._gateway_id:
            raise _refusal(
                Authentic(command, envelope.key_id),
                "wrong_gateway",
                f"addressed to {command.gateway_id}",
            )
        return command

    def _in_time(self, signed: Authentic, now: datetime) -> None:
        command = signed.command
        # The same leeway both ways: a gateway clock a minute fast must not refuse every command.
        if now > command.expires_at + CLOCK_SKEW:
            raise _refusal(signed, "expired", f"expired at {command.expires_at.isoformat()}")
        if command.issued_at > now + CLOCK_SKEW:
            raise _refusal(
                signed, "not_yet_valid", f"issued in the future, {command.issued_at.isoformat()}"
            )
        if now - command.issued_at > self._max_age:
            raise _refusal(signed, "expired", f"issued more than {self._max_age} ago")
        if self._nonces.used(command.nonce, now):
            raise _refusal(signed, "replayed", f"nonce {command.nonce} was used before")


class _Refused(Exception):  # noqa: N818 - carries a Refusal, is not an error of ours
    def __init__(
        self,
        reason: str,
        detail: str,
        key_id: str | None = None,
        nonce: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.refusal = Refusal(reason, detail, key_id, nonce, command)


def _refusal(signed: Authentic, reason: str, detail: str) -> _Refused:
    command = signed.command
    return _Refused(reason, detail, signed.key_id, command.nonce, command.command)


def _text(value: object) -> str | None:
    return value[:64] if isinstance(value, str) else None


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else error["msg"]
