"""Signature artifacts cosign refuses to make, built in its published format.

Every artifact here is signed for real (by a :class:`LocalSigner` key, or a
key the test trusts) so that only the one property under test is wrong:

- :func:`wrong_digest` — a valid signature whose payload names another
  manifest digest (THREATS G-02), to be placed at this image's ``.sig``;
- :func:`wrong_repository` — a valid signature naming another repository
  (the docker-reference; cosign itself never checks it);
- :func:`flood` — a ``.sig`` manifest with more signature layers than the
  limit (G-08);
- :func:`oversized` — one signature whose payload is larger than the limit
  (G-09), padded inside ``optional`` so it stays a valid signature;
- :func:`foreign_subject_referrer` — a bundle referrer listed for this
  image whose ``subject`` is another digest (F-15);
- :func:`lying_attestation` — a ``.att`` whose unsigned ``predicateType``
  annotation claims SLSA provenance while the signed statement is another
  predicate (G-07).

The manifests follow tests/support/cosign.py's :func:`signature_manifest`
(cosign's ``.sig`` form) and :mod:`.bundles` (cosign's bundle referrer).
"""

from __future__ import annotations

from collections.abc import Mapping

from tests.support.cosign import (
    LocalSigner,
    SignatureLayer,
    signature_manifest,
    simple_signing_payload,
)
from tests.support.signers.bundles import (
    SLSA_V02,
    attestation_layer,
    bundle_referrer,
    cosign_sign_statement,
    dsse_envelope,
    in_toto_statement,
    key_dsse_bundle,
)
from tests.support.signers.oci import OCI_MANIFEST, Artifact

VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"


def sig_artifact(layers: list[SignatureLayer]) -> Artifact:
    """A ``.sig`` manifest holding ``layers``, with its blobs."""
    manifest, blobs = signature_manifest(layers)
    return Artifact(manifest, OCI_MANIFEST, blobs)


def wrong_digest(signer: LocalSigner, name: str, signed_digest: str) -> Artifact:
    """A signature by ``signer`` for ``name`` at ``signed_digest`` (not the image's)."""
    return sig_artifact([signer.layer(simple_signing_payload(name, signed_digest))])


def wrong_repository(signer: LocalSigner, signed_name: str, digest: str) -> Artifact:
    """A signature by ``signer`` for this ``digest`` under ``signed_name`` (another repository)."""
    return sig_artifact([signer.layer(simple_signing_payload(signed_name, digest))])


def flood(signer: LocalSigner, name: str, digest: str, count: int) -> Artifact:
    """``count`` valid signature layers, each over its own payload (distinct blobs)."""
    layers = [
        signer.layer(simple_signing_payload(name, digest, optional={"n": str(i)}))
        for i in range(count)
    ]
    return sig_artifact(layers)


def oversized(signer: LocalSigner, name: str, digest: str, size: int) -> Artifact:
    """One valid signature whose payload is at least ``size`` bytes."""
    payload = simple_signing_payload(name, digest, optional={"padding": "x" * size})
    return sig_artifact([signer.layer(payload)])


def foreign_subject_referrer(
    signer: LocalSigner, name: str, signed_digest: str, subject: Mapping[str, object]
) -> Artifact:
    """A bundle referrer whose statement and ``subject`` both name ``signed_digest``'s image.

    Listed in another image's fallback index, it is a referrer injected
    under the wrong subject: it must be ignored there.
    """
    bundle = key_dsse_bundle(cosign_sign_statement(signed_digest, name), signer)
    return bundle_referrer(bundle, subject)


def lying_attestation(signer: LocalSigner, name: str, digest: str) -> Artifact:
    """A ``.att`` layer: signed vuln statement, unsigned annotation claiming SLSA v0.2."""
    statement = in_toto_statement(
        digest, name, VULN_PREDICATE, {"scanner": {"uri": "pkg:github/aquasecurity/trivy"}}
    )
    return sig_artifact([attestation_layer(dsse_envelope(statement, signer), SLSA_V02)])


def provenance_attestation(
    signer: LocalSigner, statement: bytes, predicate_type: str = SLSA_V02
) -> Artifact:
    """A ``.att`` manifest holding one honest attestation layer over ``statement``."""
    return sig_artifact([attestation_layer(dsse_envelope(statement, signer), predicate_type)])
