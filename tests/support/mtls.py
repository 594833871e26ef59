"""Throw-away certificate authorities for ``services_tls`` tests.

:func:`make_ca` writes a CA; :meth:`Authority.issue` writes a certificate and
key it signed, valid for 127.0.0.1 and ``localhost`` both as a server and as a
client (one ``services_tls`` block serves the gateway and the layers alike).
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pullguard.services.runtime.config import ServicesTls


@dataclass(frozen=True)
class Issued:
    ca: Path
    certificate: Path
    key: Path

    def config(self) -> dict[str, str]:
        """The ``services_tls`` mapping for a configuration file."""
        return {"ca": str(self.ca), "certificate": str(self.certificate), "key": str(self.key)}

    def services_tls(self, trust: Path | None = None) -> ServicesTls:
        """This certificate, trusting ``trust`` (default: its own CA)."""
        return ServicesTls(
            ca=(trust or self.ca).read_bytes(),
            certificate=self.certificate.read_bytes(),
            key=self.key.read_bytes(),
        )


@dataclass(frozen=True)
class Authority:
    directory: Path
    name: x509.Name
    key: ec.EllipticCurvePrivateKey

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    def issue(self, common_name: str) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), self.name)
            .public_key(key.public_key())
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file = self.directory / f"{common_name}.pem"
        key_file = self.directory / f"{common_name}.key"
        cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return Issued(self.ca, cert_file, key_file)


def _builder(subject: x509.Name, issuer: x509.Name) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )


def make_ca(directory: Path, common_name: str) -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    certificate = (
        _builder(name, name)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    (directory / "ca.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return Authority(directory, name, key)
