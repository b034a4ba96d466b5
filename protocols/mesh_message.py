"""The message that carries neighbour notices to another gateway through the police broker.

A gateway signs each message it sends with its own Ed25519 key, in the
envelope of the police platform's signed commands (``rules/commands.py``):
``{"key_id", "body", "signature"}``, ``key_id`` the sending gateway's id and
``body`` the JSON text of a ``MeshBody`` (the addressee, a nonce, the time of
issue, and the ``MeshMessage``). The signature is over that text's UTF-8
bytes, so nothing needs canonicalising. A receiving gateway relays a message
only from a gateway whose public key it holds, only if addressed to it, once,
and within the replay window of the commands.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from gateway.nonces import CLOCK_SKEW, UsedNonces

if TYPE_CHECKING:
    # cryptography costs ~7 MB of memory: imported only by gateways that use the mesh.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

MAX_MESH_BYTES = 256 * 1024


class MeshNotice(BaseModel):
    """One shop's notice, as its own gateway would have published it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    shop_id: str = Field(max_length=40, description="Shop to alert.")
    notice: dict[str, Any] = Field(description="The notice payload for the shop's devices.")


class MeshMessage(BaseModel):
    """One alert's notices for one gateway's shops (``police/v1/{large}/mesh/{gw}/notify``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    alert_id: str = Field(max_length=64, description="The alert; a gateway relays it once.")
    from_gateway: str = Field(
        max_length=40, description="Gateway that raised it; never relayed back."
    )
    notices: list[MeshNotice] = Field(max_length=200, description="Notices, one per shop.")


class MeshBody(BaseModel):
    """What a gateway signs: a message, for whom, and when (the replay window)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to_gateway: str = Field(max_length=40, description="The gateway it is for.")
    nonce: str = Field(min_length=8, max_length=64, description="Unique per message.")
    issued_at: AwareDatetime = Field(description="When the sending gateway signed it.")
    message: MeshMessage = Field(description="The notices.")


class MeshEnvelope(BaseModel):
    """A signed mesh message as it travels: the commands' envelope, keyed by gateway id."""

    model_config = ConfigDict(extra="forbid")

    key_id: str = Field(max_length=40, description="The sending gateway's id.")
    body: str = Field(max_length=MAX_MESH_BYTES, description="A MeshBody, JSON text.")
    signature: str = Field(max_length=200, description="Ed25519 signature of body, base64.")


class MeshRefused(ValueError):  # noqa: N818 - a verdict on a message, not our error
    """Why a mesh message is not relayed; ``reason`` names the counter."""

    def __init__(self, reason: str, detail: str) -> None:
        """``reason``: invalid, unsigned, unknown_gateway, bad_signature, wrong_gateway, ..."""
        super().__init__(detail)
        self.reason = reason


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """This gateway's mesh key from a PEM file (PKCS#8, as ``openssl genpkey`` writes it).

    Raises:
        ValueError: the file holds no Ed25519 private key.
        OSError: the file cannot be read.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        load_pem_private_key,
    )

    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path}: not an Ed25519 private key")  # noqa: TRY004 - as a bad PEM
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Another gateway's mesh key from a PEM file (SubjectPublicKeyInfo).

    Raises:
        ValueError: the file holds no Ed25519 public key.
        OSError: the file cannot be read.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import (  # noqa: PLC0415
        load_pem_public_key,
    )

    key = load_pem_public_key(path.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: not an Ed25519 public key")  # noqa: TRY004 - as a bad PEM
    return key


def new_key_pair() -> tuple[bytes, bytes]:
    """A new mesh key pair as PEM: the private key (PKCS#8) and the public key (SPKI)."""
    from cryptography.hazmat.primitives import serialization as ser  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (  # noqa: PLC0415
        Ed25519PrivateKey,
    )

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption())
    public = key.public_key().public_bytes(ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def seal(
    message: bytes, *, key: Ed25519PrivateKey, gateway_id: str, to_gateway: str, now: datetime
) -> bytes:
    """``message`` (a ``MeshMessage``'s JSON) signed by ``gateway_id`` for ``to_gateway``.

    The message text is spliced in as it is: the notices are not encoded again.
    """
    body = (
        f'{{"to_gateway":{json.dumps(to_gateway)},"nonce":"{secrets.token_hex(12)}",'
        f'"issued_at":"{now.isoformat()}","message":{message.decode()}}}'
    )
    signature = base64.b64encode(key.sign(body.encode())).decode()
    return json.dumps(
        {"key_id": gateway_id, "body": body, "signature": signature}, separators=(",", ":")
    ).encode()


class MeshVerifier:
    """Checks sender, signature, addressee, validity window and nonce of each mesh message."""

    def __init__(
        self, gateway_id: str, keys: dict[str, Ed25519PublicKey], *, max_age_s: float
    ) -> None:
        """Relay for ``gateway_id`` what the gateways in ``keys`` (id -> public key) signed."""
        self._gateway_id = gateway_id
        self._keys = keys
        self._max_age = timedelta(seconds=max_age_s)
        self._nonces = UsedNonces(self._max_age)

    def trust(self, keys: dict[str, Ed25519PublicKey]) -> None:
        """Relay what the gateways in ``keys`` sign from now on (a reload); nonces stay used."""
        self._keys = keys

    def verify(self, payload: bytes, now: datetime) -> MeshMessage:
        """The message, if it is to be relayed.

        Raises:
            MeshRefused: with the reason it is not.
        """
        envelope = self._envelope(payload)
        key = self._keys.get(envelope.key_id)
        if key is None:
            raise MeshRefused("unknown_gateway", f"no mesh key of gateway {envelope.key_id!r}")
        from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - see top

        try:
            key.verify(base64.b64decode(envelope.signature, validate=True), envelope.body.encode())
        except (InvalidSignature, binascii.Error, ValueError):
            raise MeshRefused(
                "bad_signature", f"signature of {envelope.key_id!r} does not verify"
            ) from None
        try:
            body = MeshBody.model_validate_json(envelope.body)
        except ValidationError as exc:
            raise MeshRefused("invalid", f"{envelope.key_id}: {exc.errors()[0]['msg']}") from None
        if body.message.from_gateway != envelope.key_id:
            raise MeshRefused(
                "bad_signature",
                f"{envelope.key_id!r} signed a message from {body.message.from_gateway!r}",
            )
        self._check_window(body, now)
        self.remember(body.nonce, body.issued_at)
        return body.message

    def remember(self, nonce: str, issued_at: datetime) -> None:
        """Count ``nonce`` as used (also for nonces kept across a restart)."""
        self._nonces.remember(nonce, issued_at)

    def used_nonces(self) -> dict[str, datetime]:
        """Nonces still remembered, with their issue times (to keep across a restart)."""
        return self._nonces.issued()

    @staticmethod
    def _envelope(payload: bytes) -> MeshEnvelope:
        if len(payload) > MAX_MESH_BYTES + 1024:
            raise MeshRefused("invalid", f"{len(payload)} bytes is too long for a mesh message")
        try:
            raw = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise MeshRefused("invalid", "not JSON") from None
        if isinstance(raw, dict) and "signature" not in raw:
            raise MeshRefused("unsigned", "no signature")
        try:
            return MeshEnvelope.model_validate(raw)
        except ValidationError as exc:
            raise MeshRefused("invalid", f"not a mesh envelope: {exc.errors()[0]['msg']}") from None

    def _check_window(self, body: MeshBody, now: datetime) -> None:
        """As for commands: addressed here, not stale, not from the future, never seen."""
        sender = body.message.from_gateway
        if body.to_gateway != self._gateway_id:
            raise MeshRefused("wrong_gateway", f"{sender} addressed it to {body.to_gateway}")
        if body.issued_at > now + CLOCK_SKEW:
            raise MeshRefused("not_yet_valid", f"{sender} issued it at {body.issued_at}")
        if now - body.issued_at > self._max_age:
            raise MeshRefused("expired", f"{sender} issued it more than {self._max_age} ago")
        if self._nonces.used(body.nonce, now):
            raise MeshRefused("replayed", f"{sender} sent nonce {body.nonce} before")
