"""MQTT broker settings and the one place that turns them into an aiomqtt client."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from gateway.errors import ConfigError, ConfigProblem

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS:
        raise ValueError("expected mqtt://HOST:PORT or mqtts://HOST:PORT")
    if not parts.hostname:
        raise ValueError("the URL names no host")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("the port must be a number from 1 to 65535") from exc
    if port == 0:
        raise ValueError("the port must be a number from 1 to 65535")
    if parts.path not in ("", "/") or parts.query or parts.username:
        raise ValueError("put only scheme, host and port in the URL; credentials go in 'username'")
    return url


BrokerUrl = Annotated[str, AfterValidator(_check_url)]


class TlsConfig(BaseModel):
    """TLS for a broker link; the link fails closed, never falls back to plain text."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use (decision 86)

    ca_file: Path = Field(description="CA certificate (PEM) that signed the broker's certificate.")
    cert_file: Path | None = Field(default=None, description="Client certificate (PEM).")
    key_file: Path | None = Field(
        default=None, description="Private key of the client certificate."
    )

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together, or neither")
        return self

    def resolved(self, base: Path) -> TlsConfig:
        """The same settings with relative paths taken from ``base``."""
        return TlsConfig(
            ca_file=base / self.ca_file,
            cert_file=base / self.cert_file if self.cert_file else None,
            key_file=base / self.key_file if self.key_file else None,
        )

    def context(self) -> ssl.SSLContext:
        """A verifying client context: hostname checked, TLS 1.2 or later."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca_file))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        return ctx


class BrokerConfig(BaseModel):
    """How to reach one MQTT broker."""

    model_config = ConfigDict(extra="forbid", defer_build=True)  # built at first use (decision 86)

    url: BrokerUrl = Field(description="mqtt://HOST:PORT, or mqtts://HOST:PORT with 'tls'.")
    username: str | None = Field(default=None, description="User name, if the broker wants one.")
    password: SecretStr | None = Field(
        default=None,
        description="Password. Prefer a systemd credential and leave this out of the file.",
    )
    password_file: Path | None = Field(
        default=None,
        description="File holding the password (as `lianfang broker-config` writes it); read "
        "when the link is made. Relative paths are taken from the config file.",
    )
    tls: TlsConfig | None = Field(default=None, description="TLS settings; required by mqtts://.")
    keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive in seconds.")

    @model_validator(mode="after")
    def _tls_matches_scheme(self) -> BrokerConfig:
        scheme = urlsplit(self.url).scheme
        if scheme == "mqtts" and self.tls is None:
            raise ValueError("mqtts:// needs a 'tls' section (ca_file, cert_file, key_file)")
        if scheme == "mqtt" and self.tls is not None:
            raise ValueError("'tls' is set but the URL is mqtt://; use mqtts:// so TLS is explicit")
        return self

    @model_validator(mode="after")
    def _one_password(self) -> BrokerConfig:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give 'password' or 'password_file', not both")
        return self

    def resolved(self, base: Path) -> BrokerConfig:
        """The same settings with relative file paths taken from ``base``."""
        return self.model_copy(
            update={
                "tls": self.tls.resolved(base) if self.tls else None,
                "password_file": base / self.password_file if self.password_file else None,
            }
        )

    def secret(self) -> str | None:
        """The password: given inline, or read now from ``password_file``.

        Raises:
            ConfigError: the password file cannot be read.
        """
        if self.password is not None:
            return self.password.get_secret_value()
        if self.password_file is None:
            return None
        try:
            # One line as written; an editor's trailing newline is not part of it.
            return self.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            problem = ConfigProblem(str(self.password_file), "password_file", why)
            raise ConfigError([problem]) from None

    @property
    def host(self) -> str:
        """Host name or address of the broker."""
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        """TCP port of the broker."""
        parts = urlsplit(self.url)
        return parts.port or DEFAULT_PORTS[parts.scheme]


def connect_properties(*, session_expiry_s: int, receive_maximum: int) -> Properties:
    """CONNECT properties: session lifetime and Receive Maximum.

    The broker keeps our session for ``session_expiry_s`` and sends at most
    ``receive_maximum`` unacknowledged QoS 1 messages at once (our backpressure).
    """
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = session_expiry_s
    props.ReceiveMaximum = receive_maximum
    return props


def first_leaf(error: BaseException) -> BaseException:
    """The first plain exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
