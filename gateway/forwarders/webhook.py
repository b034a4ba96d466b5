"""Forward events to a platform that takes JSON over HTTPS, signed with HMAC-SHA256.

Each event is one POST: the body is the event JSON with its shop, the header
``X-Lianfang-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body under the
shared secret, and ``Idempotency-Key`` is the event id, so a POST sent again
after a lost response is recognised. A 2xx acknowledges the event; a 4xx that
speaks of this request's content (400, 409, 413, 422) refuses it for good and is
recorded with the response body; anything else (5xx, timeouts, refused
connections, and the 4xx that speak of the endpoint or our credentials: 401,
403, 404, 429...) is retried with backoff, since every alarm would meet it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar, Literal, Self
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field, SecretStr

from gateway.errors import PlatformUnreachable
from gateway.forwarders.base import ForwarderConfig, ForwarderContext, upstream_payload
from gateway.journal_reader import OutboxRow
from gateway.outbox import OutboxCursor

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

KIND = "webhook"
EVENT_REFUSALS = frozenset({400, 409, 413, 422})
"""4xx statuses that refuse this one event. Others (401, 403, 404, 405, 429...)
would refuse every alarm alike: a wrong secret or URL must not make the gateway
give up each alarm in turn, so they are retried and reported as a link fault."""
SHOWN_BODY = 500


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("expected https://HOST[:PORT]/PATH; alarms never travel in clear HTTP")
    return url


class WebhookConfig(ForwarderConfig):
    """A platform that receives events as signed JSON over HTTPS."""

    kind: Literal["webhook"] = Field(description="Forwarder type.")
    url: Annotated[str, AfterValidator(_check_url)] = Field(description="https:// endpoint.")
    secret: SecretStr = Field(
        min_length=16, description="Shared secret for the X-Lianfang-Signature HMAC-SHA256."
    )
    ca_file: Path | None = Field(
        default=None, description="CA certificate (PEM) to trust; default: the system's CAs."
    )
    timeout_s: float = Field(default=10, gt=0, le=300, description="Time allowed for one POST.")

    def resolved(self, base: Path) -> Self:
        """Take ``ca_file`` from ``base`` when relative."""
        if self.ca_file is None:
            return self
        return self.model_copy(update={"ca_file": base / self.ca_file})


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Lianfang-Signature`` value of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookForwarder:
    """POSTs each outbox row; acknowledges it on 2xx, gives it up on a definite 4xx."""

    kind: ClassVar[str] = KIND

    def __init__(
        self, config: WebhookConfig, *, context: ForwarderContext, cursor: OutboxCursor
    ) -> None:
        """Forward rows from ``cursor`` as ``config`` says."""
        self.config = config
        self._context = context
        self._cursor = cursor
        self._secret = config.secret.get_secret_value().encode()
        self.link_up = asyncio.Event()
        self.refused = 0

    async def run(self) -> None:
        """POST events until cancelled; raise when the platform fails, for a retry with backoff."""
        # Imported here: only gateways with a webhook pay httpx's memory.
        import httpx  # noqa: PLC0415

        tls = ssl.create_default_context(
            cafile=str(self.config.ca_file) if self.config.ca_file else None
        )
        async with httpx.AsyncClient(verify=tls, timeout=self.config.timeout_s) as client:
            while True:
                rows = await self._cursor.next_batch()
                await self._cursor.send_each(rows, functools.partial(self._post, client))

    async def _post(self, client: httpx.AsyncClient, row: OutboxRow) -> None:
        import httpx  # noqa: PLC0415 - loaded by run() already

        body = upstream_payload(row, self._context.shops)
        headers = {
            "Content-Type": "application/json",
            "X-Lianfang-Signature": signature(self._secret, body),
            "Idempotency-Key": row.event.id,
        }
        try:
            # httpx's timeout bounds each read, not the whole POST: a server that
            # drips its answer would hold the outbox for as long as it likes.
            async with asyncio.timeout(self.config.timeout_s):
                response = await client.post(self.config.url, content=body, headers=headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise PlatformUnreachable(f"{self.config.url}: {exc or type(exc).__name__}") from exc
        status = response.status_code
        if 200 <= status < 300:
            self.link_up.set()
            self._cursor.ack(row)
        elif status in EVENT_REFUSALS:
            self.link_up.set()  # the platform answers; it refuses this one event
            self.refused += 1
            text = response.text[:SHOWN_BODY]
            logger.error(
                "%s refused event %s: HTTP %d %s",
                self.config.url,
                headers["Idempotency-Key"],
                status,
                text,
            )
            self._cursor.give_up(row, f"HTTP {status}: {text}")
        else:
            text = response.text[:SHOWN_BODY]
            raise PlatformUnreachable(f"{self.config.url}: HTTP {status} {text}".rstrip())
