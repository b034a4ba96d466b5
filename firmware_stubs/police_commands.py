"""The police platform's side of signed commands: make a key pair, sign and send a command.

python -m firmware_stubs.police_commands keygen
python -m firmware_stubs.police_commands send --broker mqtt://127.0.0.1:1884
    --key PRIVATE_B64 --key-id platform-1 --gateway GW-001 --large-grid L1 set_level heightened
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware_stubs.mqtt_client import client_for
from gateway.mqtt.client import BrokerConfig


def new_key() -> tuple[Ed25519PrivateKey, str]:
    """A new platform key and its public half as the gateway config wants it (raw, base64)."""
    key = Ed25519PrivateKey.generate()
    return key, public_b64(key)


def public_b64(key: Ed25519PrivateKey) -> str:
    """The raw 32-byte public key, base64."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def command_body(
    gateway_id: str,
    command: str,
    *,
    valid_s: float = 60,
    issued_at: datetime | None = None,
    nonce: str | None = None,
    **args: Any,  # noqa: ANN401 - level, shop_id or alert_id
) -> str:
    """The JSON text of a command, valid for ``valid_s`` from ``issued_at`` (default now)."""
    issued = issued_at or datetime.now(UTC)
    return json.dumps(
        {
            "gateway_id": gateway_id,
            "command": command,
            "nonce": nonce or secrets.token_hex(8),
            "issued_at": issued.isoformat(),
            "expires_at": (issued + timedelta(seconds=valid_s)).isoformat(),
            **args,
        }
    )


def sign(key: Ed25519PrivateKey, key_id: str, body: str) -> bytes:
    """The envelope the gateway verifies: body text, key id, Ed25519 signature of the body."""
    signature = base64.b64encode(key.sign(body.encode())).decode()
    return json.dumps({"key_id": key_id, "body": body, "signature": signature}).encode()


async def send(broker: BrokerConfig, topic: str, payload: bytes) -> None:
    """Publish one command (QoS 1)."""
    async with client_for(
        broker, client_id=f"police-cmd-{secrets.token_hex(4)}", persistent=False
    ) as c:
        await c.publish(topic, payload, qos=1)


def main() -> None:
    """Command line of the stub."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    sub.add_parser("keygen", help="make a key pair")
    s = sub.add_parser("send", help="sign and send a command")
    s.add_argument("--broker", default="mqtt://127.0.0.1:1883")
    s.add_argument("--key", required=True, help="private key, raw 32 bytes base64")
    s.add_argument("--key-id", required=True)
    s.add_argument("--gateway", required=True)
    s.add_argument("--large-grid", required=True)
    s.add_argument("command", choices=["set_level", "arm", "disarm", "ack_alert"])
    s.add_argument("argument", help="level, shop id or alert id")
    args = ap.parse_args()
    if args.what == "keygen":
        key, public = new_key()
        private = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        print(f"private {base64.b64encode(private).decode()}\npublic  {public}")
        return
    key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(args.key))
    field = {"set_level": "level", "arm": "shop_id", "disarm": "shop_id"}.get(
        args.command, "alert_id"
    )
    body = command_body(args.gateway, args.command, **{field: args.argument})
    topic = f"police/v1/{args.large_grid}/{args.gateway}/cmd"
    asyncio.run(send(BrokerConfig(url=args.broker), topic, sign(key, args.key_id, body)))
    print(f"sent {args.command} {args.argument} to {topic}")


if __name__ == "__main__":
    main()
