"""Certificate signing requests: made by the agent (its key never leaves it), checked by
the hub before it signs anything."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from app.pki.authority import PrivateKey, common_name

MAX_REQUEST_BYTES = 16 * 1024
"""A CSR for a P-256 key is about 400 bytes of PEM, for RSA-4096 about 1,700."""
CURVES = (ec.SECP256R1, ec.SECP384R1)
RSA_BITS = (2048, 4096)


class BadRequest(ValueError):
    """The request cannot be signed; the message says why, for the caller."""


def make_request(key: PrivateKey, cluster: str) -> bytes:
    """A PEM CSR for `key`, subject CN=`cluster`."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cluster)]))
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(serialization.Encoding.PEM)


def load_request(pem: str, cluster: str) -> x509.CertificateSigningRequest:
    """Parse and check a CSR: at most `MAX_REQUEST_BYTES`, one PEM request whose signature
    proves possession of its key, a P-256/P-384 or 2048-4096-bit RSA key, and subject
    exactly CN=`cluster`."""
    data = pem.encode()
    if len(data) > MAX_REQUEST_BYTES:
        raise BadRequest(f"the CSR is {len(data)} bytes, over the limit of {MAX_REQUEST_BYTES}")
    if data.count(b"-----BEGIN CERTIFICATE REQUEST-----") != 1:
        raise BadRequest("expected exactly one PEM block 'BEGIN CERTIFICATE REQUEST'")
    try:
        request = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise BadRequest(f"the CSR does not parse: {exc}") from None
    if not request.is_signature_valid:
        raise BadRequest("the CSR's signature does not verify with its own key")
    key = request.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, CURVES):
            raise BadRequest(f"EC keys must be P-256 or P-384, not {key.curve.name}")
    elif isinstance(key, rsa.RSAPublicKey):
        if not RSA_BITS[0] <= key.key_size <= RSA_BITS[1]:
            raise BadRequest(f"RSA keys must have 2048 to 4096 bits, not {key.key_size}")
    else:
        raise BadRequest("the key must be EC (P-256, P-384) or RSA")
    if len(request.subject) != 1 or common_name(request.subject) != cluster:
        raise BadRequest(f"the CSR's subject must be exactly CN={cluster}")
    return request
