"""Signed mesh messages: what a gateway seals, another verifies; what it refuses, and why."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.mesh_message import MeshRefused, MeshVerifier, seal

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
MESSAGE = (
    b'{"alert_id":"A-1","from_gateway":"GW-002","notices":'
    b'[{"shop_id":"S00001","notice":{"alert_id":"A-1","bearing":"25 m east"}}]}'
)
GW002 = Ed25519PrivateKey.generate()


def verifier() -> MeshVerifier:
    return MeshVerifier("GW-001", {"GW-002": GW002.public_key()}, max_age_s=600)


def sealed(message: bytes = MESSAGE, *, at: datetime = NOW, to: str = "GW-001") -> bytes:
    return seal(message, key=GW002, gateway_id="GW-002", to_gateway=to, now=at)


def test_sealed_message_verifies_once_with_its_notices_unchanged():
    check = verifier()
    payload = sealed()
    message = check.verify(payload, NOW + timedelta(seconds=1))
    assert message.model_dump() == json.loads(MESSAGE)
    with pytest.raises(MeshRefused) as replay:
        check.verify(payload, NOW + timedelta(seconds=2))
    assert replay.value.reason == "replayed"
    assert check.verify(sealed(), NOW).alert_id == "A-1"  # the same alert, a new nonce


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        # GW-002 signs a message that claims to come from GW-003.
        (sealed(MESSAGE.replace(b'"GW-002"', b'"GW-003"')), "bad_signature"),
        (sealed(at=NOW + timedelta(minutes=3)), "not_yet_valid"),
        (sealed(at=NOW - timedelta(seconds=601)), "expired"),
        (sealed(to="GW-009"), "wrong_gateway"),
        (sealed().replace(b'"key_id":"GW-002"', b'"key_id":"GW-004"'), "unknown_gateway"),
        (sealed().replace(b"S00001", b"S00002"), "bad_signature"),  # a notice changed in transit
        (b'{"key_id":"GW-002","body":"{}"}', "unsigned"),
        (b"[1, 2]", "invalid"),
        (b"\x00" * 300_000, "invalid"),
    ],
)
def test_refusals_name_their_reason(payload, reason):
    with pytest.raises(MeshRefused) as refused:
        verifier().verify(payload, NOW)
    assert refused.value.reason == reason
