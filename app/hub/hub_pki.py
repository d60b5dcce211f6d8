"""The hub's certificates and its signer, resolved from settings (`pki_dir` or each file)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from app.config import HubSettings
from app.pki.authority import Authority, common_name
from app.pki.layout import PkiDir
from app.transport.tls import client_context


@dataclass(frozen=True, slots=True)
class HubPki:
    ca_file: Path
    cert_file: Path
    key_file: Path
    signer_cert_file: Path
    signer_key_file: Path
    crl_file: Path

    @classmethod
    def from_settings(cls, settings: HubSettings) -> HubPki | None:
        """None without `pki_dir` and `cert_file`: the hub runs in insecure mode."""
        if settings.pki_dir is None and settings.cert_file is None:
            return None
        base = PkiDir(Path(settings.pki_dir or "."))

        def pick(value: str | None, default: Path, what: str) -> Path:
            if value is not None:
                return Path(value)
            if settings.pki_dir is None:
                raise ValueError(f"{what} is not set (and there is no pki_dir to find it in)")
            return default

        return cls(
            ca_file=pick(settings.ca_file, base.ca_cert, "ca_file"),
            cert_file=pick(settings.cert_file, base.hub_cert, "cert_file"),
            key_file=pick(settings.key_file, base.hub_key, "key_file"),
            signer_cert_file=pick(settings.signer_cert_file, base.ca_cert, "signer_cert_file"),
            signer_key_file=pick(settings.signer_key_file, base.ca_key, "signer_key_file"),
            crl_file=pick(settings.crl_file, base.crl, "crl_file"),
        )

    def ca_bundle(self) -> bytes:
        return self.ca_file.read_bytes()

    def authority(self) -> Authority:
        return Authority.load(self.signer_cert_file, self.signer_key_file)

    def name(self) -> str:
        """The hub's identity: its certificate's CN, which the broker makes its client id."""
        cert = x509.load_pem_x509_certificate(self.cert_file.read_bytes())
        return common_name(cert.subject)

    def client_context(self) -> ssl.SSLContext:
        return client_context(self.ca_file, self.cert_file, self.key_file)
