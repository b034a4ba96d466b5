"""A throwaway PKI made in the test: a CA, a broker certificate and client certificates.

``server_certificate`` issues further broker certificates from the same CA: for
another host name, or already expired, to prove that TLS fails closed.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAMES = ("localhost", "127.0.0.1")
"""Where the test brokers listen: the names a good broker certificate is made out to."""


@dataclass(frozen=True)
class Pki:
    ca: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    issuer: str,
    *,
    ca: bool = False,
    server_names: tuple[str, ...] = (),
    expired: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    # An expired certificate ended a day ago; a valid one lasts the day of the test.
    not_after = now - dt.timedelta(days=1) if expired else now + dt.timedelta(days=1)
    server = bool(server_names)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=2))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in server_names]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_pki(directory: Path, ca_name: str = "Test Police CA") -> Pki:
    """A CA and certificates for a broker on 127.0.0.1 and for one gateway client."""
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue(ca_name, ca_key, ca_key, ca_name, ca=True)
    client_key = ec.generate_private_key(ec.SECP256R1())
    pki = Pki(
        ca=directory / "ca.pem",
        ca_key=directory / "ca.key",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(pem))
    _write_key(ca_key, pki.ca_key)
    server_certificate(pki, pki.server_cert, pki.server_key)
    pki.client_cert.write_bytes(_issue("GW-001", client_key, ca_key, ca_name).public_bytes(pem))
    _write_key(client_key, pki.client_key)
    return pki


def server_certificate(
    pki: Pki,
    cert: Path,
    key: Path,
    *,
    names: tuple[str, ...] = SERVER_NAMES,
    expired: bool = False,
) -> None:
    """Write a broker certificate for ``names`` signed by ``pki``'s CA (and its key)."""
    ca_cert = x509.load_pem_x509_certificate(pki.ca.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    issuer = ca_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    server_key = ec.generate_private_key(ec.SECP256R1())
    issued = _issue(names[0], server_key, ca_key, str(issuer), server_names=names, expired=expired)
    cert.write_bytes(issued.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, key)
