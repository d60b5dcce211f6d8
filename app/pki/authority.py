"""A certificate authority: makes the CA, issues server/client certificates, signs cluster
requests and revocation lists.

Every certificate it issues names its holder in the subject's common name (CN), which the
broker takes as the MQTT username (`use_identity_as_username`) and client id
(`use_username_as_clientid`). Cluster names match `[a-z0-9-]` (`topics.check_name`); the
hub's and the broker's names contain a dot, so no cluster can ever share them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

CLOCK_SKEW = dt.timedelta(minutes=1)
"""Certificates and CRLs start this long before they are made, for clocks a little behind."""


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key() -> ec.EllipticCurvePrivateKey:
    """An ECDSA P-256 key: small, fast, and understood by OpenSSL, mosquitto, EMQX, HiveMQ."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def serial_hex(cert: x509.Certificate) -> str:
    """The serial number as lowercase hex: how the store and the CRL name a certificate."""
    return format(cert.serial_number, "x")


def common_name(subject: x509.Name) -> str:
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        return ""
    value = names[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def load_key(path: Path) -> PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{path}: only EC and RSA keys are supported")
    return key


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


@dataclass(frozen=True, slots=True)
class Revoked:
    serial: str
    """Lowercase hex."""
    revoked_at: float
    """Epoch seconds."""


class Authority:
    """Signs with one CA certificate and its key (a root made by `create`, or an operator's
    intermediate loaded with `load`)."""

    def __init__(self, certificate: x509.Certificate, key: PrivateKey) -> None:
        if certificate.public_key() != key.public_key():
            raise ValueError("the CA certificate and key do not belong together")
        self.certificate = certificate
        self.key = key

    @classmethod
    def create(
        cls, name: str = "Transport Informer CA", lifetime: dt.timedelta = dt.timedelta(days=3650)
    ) -> Authority:
        key = new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = utcnow()
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Authority:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return cls(cert, load_key(key_path))

    def issue(
        self,
        public_key: PublicKey,
        name: str,
        *,
        lifetime: dt.timedelta,
        hosts: Sequence[str] = (),
        server: bool = False,
        client: bool = True,
        now: dt.datetime | None = None,
    ) -> x509.Certificate:
        """A leaf certificate with CN=`name`: a client certificate (TLS client auth), a
        server certificate for `hosts` (names and IP addresses), or both."""
        now = now or utcnow()
        usages = [ExtendedKeyUsageOID.SERVER_AUTH] if server else []
        usages += [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(min(now + lifetime, self.certificate.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        if hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_host_names(hosts)), critical=False
            )
        return builder.sign(self.key, hashes.SHA256())

    def sign_request(
        self, request: x509.CertificateSigningRequest, cluster: str, lifetime: dt.timedelta
    ) -> x509.Certificate:
        """A cluster's client certificate for the key in a checked request
        (`requests.load_request`): CN is the registered name, whatever else it asked for."""
        public_key = request.public_key()
        if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            raise ValueError("only EC and RSA keys are supported")
        return self.issue(public_key, cluster, lifetime=lifetime)

    def revocation_list(
        self, revoked: Iterable[Revoked], validity: dt.timedelta, now: dt.datetime | None = None
    ) -> bytes:
        """A CRL (PEM) of `revoked`, valid for `validity`. OpenSSL refuses EVERY client of a
        CA whose CRL has expired, so whoever writes it must renew it well before then."""
        now = now or utcnow()
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.certificate.subject)
            .last_update(now - CLOCK_SKEW)
            .next_update(now + validity)
        )
        for entry in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder()
                .serial_number(int(entry.serial, 16))
                .revocation_date(dt.datetime.fromtimestamp(entry.revoked_at, dt.UTC))
                .build()
            )
        return builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
