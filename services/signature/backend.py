"""The interface between the domain and the sigstore library (``sigstore_adapter``).

The domain never imports the library; it calls a :class:`BundleBackend`
that the servicer (or the CLI) builds from a trusted root, and receives
these plain results. Unit tests can pass a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pullguard.services.signature.certs import Certificate


class BundleFailure(Exception):
    """Verification failed; ``code`` is the finding code, ``message`` why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate bundle that verified: what it signed and who signed it."""

    #: "message" or "dsse".
    kind: str
    certificate: Certificate
    #: The identity policy's answer for the certificate (the signer's name).
    signer: str
    payload_type: str = ""
    payload: bytes = b""


@dataclass(frozen=True)
class LogEntry:
    """A transparency-log entry whose inclusion proof, checkpoint and SET verified."""

    kind: str
    version: str
    body: bytes
    integrated_time: int | None


#: Decides a certificate's signer name, or None when it names no accepted signer.
AcceptCertificate = Callable[[Certificate], "str | None"]


class BundleBackend(Protocol):
    def verify_certificate_bundle(
        self, data: bytes, artifact_sha256: bytes, accept: AcceptCertificate
    ) -> CertificateBundle:
        """Verify a certificate bundle (see ``sigstore_adapter``); raise BundleFailure."""
        ...

    def verify_log_entries(self, data: bytes) -> list[LogEntry]:
        """Verify every log entry of a bundle; raise BundleFailure."""
        ...

    def verify_embedded_sct(self, certificate: Certificate, chain: list[Certificate]) -> None:
        """Check the certificate's SCT against the trusted root's CT logs; raise BundleFailure."""
        ...
