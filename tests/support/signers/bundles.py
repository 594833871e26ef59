"""In-toto statements, sigstore bundles and their referrer manifests, as cosign writes them.

Statements: :func:`cosign_sign_statement` (cosign v3's image signature:
predicateType ``https://sigstore.dev/cosign/sign/v1``, empty predicate) and
:func:`slsa_v02_statement` / :func:`slsa_v1_statement` (SLSA provenance).

Key-based bundles (:func:`key_dsse_bundle`, :func:`key_message_bundle`) are
what ``cosign attest --new-bundle-format --key`` writes offline: a v0.3
bundle whose verification material is only the key hint
(base64 of the SHA-256 of the key's SubjectPublicKeyInfo DER), no tlog
entries, no timestamps. sigstore-python cannot verify those (it wants a
certificate); pullguard checks them with the configured key.

:func:`bundle_referrer` wraps a bundle in the referrer manifest cosign 2.5
pushes (byte-compatible field order, its quirks included);
:func:`simplesigning_referrer` is the ``--registry-referrers-mode=oci-1-1``
form of a ``.sig`` manifest. :func:`legacy_keyless_layer` turns a keyless
message-signature bundle over a simple-signing payload into the ``.sig``
layer cosign 2.x writes for keyless signing (certificate, chain and Rekor
SET as annotations).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tests.support.cosign import SIGNATURE_ANNOTATION, LocalSigner, SignatureLayer
from tests.support.signers.cosign_cli import COSIGN_SIGN_PREDICATE, slsa_v02_predicate
from tests.support.signers.oci import OCI_MANIFEST, Artifact, sha256

IN_TOTO = "application/vnd.in-toto+json"
STATEMENT_V01 = "https://in-toto.io/Statement/v0.1"
STATEMENT_V1 = "https://in-toto.io/Statement/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
#: What the fallback index states for a bundle referrer (go-containerregistry
#: copies the config media type; cosign's manifest artifactType is lost there).
BUNDLE_INDEX_ARTIFACT_TYPE = EMPTY_MEDIA_TYPE
SIG_ARTIFACT_TYPE = "application/vnd.dev.cosign.artifact.sig.v1+json"
DSSE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
CHAIN_ANNOTATION = "dev.sigstore.cosign/chain"
REKOR_BUNDLE_ANNOTATION = "dev.sigstore.cosign/bundle"


def _compact(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def in_toto_statement(
    digest: str,
    name: str,
    predicate_type: str,
    predicate: Mapping[str, object],
    statement_type: str = STATEMENT_V1,
) -> bytes:
    """An in-toto statement whose one subject is ``name`` with ``digest``."""
    algorithm, hexdigest = digest.split(":", 1)
    return _compact(
        {
            "_type": statement_type,
            "subject": [{"name": name, "digest": {algorithm: hexdigest}}],
            "predicateType": predicate_type,
            "predicate": dict(predicate),
        }
    )


def cosign_sign_statement(digest: str, name: str) -> bytes:
    """cosign v3's image signature statement (empty predicate)."""
    return in_toto_statement(digest, name, COSIGN_SIGN_PREDICATE, {})


def slsa_v02_statement(digest: str, name: str, builder_id: str, source: str) -> bytes:
    """SLSA provenance v0.2 naming ``builder_id`` and ``source`` (a repository URL)."""
    return in_toto_statement(
        digest, name, SLSA_V02, slsa_v02_predicate(builder_id, source), STATEMENT_V01
    )


def slsa_v1_statement(digest: str, name: str, builder_id: str, source: str) -> bytes:
    """SLSA provenance v1 (GitHub Actions build type) naming ``builder_id`` and ``source``."""
    predicate = {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {
                "workflow": {"ref": "refs/heads/main", "repository": source, "path": "ci.yml"}
            },
            "resolvedDependencies": [{"uri": f"git+{source}@refs/heads/main"}],
        },
        "runDetails": {"builder": {"id": builder_id}},
    }
    return in_toto_statement(digest, name, SLSA_V1, predicate)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding, which is what gets signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def dsse_envelope(statement: bytes, signer: LocalSigner, payload_type: str = IN_TOTO) -> bytes:
    """A DSSE envelope in cosign's ``.att`` layer form (one signature, empty keyid)."""
    signature = signer.sign(pae(payload_type, statement))
    return _compact(
        {
            "payloadType": payload_type,
            "payload": base64.b64encode(statement).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )


def attestation_layer(envelope: bytes, predicate_type_annotation: str) -> SignatureLayer:
    """A ``.att`` layer: the envelope, an empty signature annotation, the unsigned predicateType."""
    return SignatureLayer(
        envelope,
        {SIGNATURE_ANNOTATION: "", "predicateType": predicate_type_annotation},
        DSSE_MEDIA_TYPE,
    )


def key_hint(signer: LocalSigner) -> str:
    """cosign's key hint: base64 of the SHA-256 of the public key's SPKI DER."""
    key = serialization.load_pem_public_key(signer.pem.encode())
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def key_dsse_bundle(statement: bytes, signer: LocalSigner) -> bytes:
    """A v0.3 bundle with a DSSE envelope, signed by ``signer`` (no log, no timestamp)."""
    signature = signer.sign(pae(IN_TOTO, statement))
    return _compact(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": key_hint(signer)}},
            "dsseEnvelope": {
                "payload": base64.b64encode(statement).decode(),
                "payloadType": IN_TOTO,
                "signatures": [{"sig": base64.b64encode(signature).decode()}],
            },
        }
    )


def key_message_bundle(message: bytes, signer: LocalSigner) -> bytes:
    """A v0.3 message-signature bundle over ``message`` (give the manifest bytes)."""
    return _compact(
        {
            "mediaType": BUNDLE_V03,
            "verificationMaterial": {"publicKey": {"hint": key_hint(signer)}},
            "messageSignature": {
                "messageDigest": {
                    "algorithm": "SHA2_256",
                    "digest": base64.b64encode(hashlib.sha256(message).digest()).decode(),
                },
                "signature": base64.b64encode(signer.sign(message)).decode(),
            },
        }
    )


def bundle_content(bundle: bytes) -> str:
    """``dsse-envelope`` or ``message-signature``: the content annotation's value."""
    return "dsse-envelope" if "dsseEnvelope" in json.loads(bundle) else "message-signature"


def bundle_predicate_type(bundle: bytes) -> str | None:
    """The predicateType of a DSSE bundle's statement (None for a message signature)."""
    document = json.loads(bundle)
    if "dsseEnvelope" not in document:
        return None
    statement = json.loads(base64.b64decode(document["dsseEnvelope"]["payload"]))
    return str(statement["predicateType"])


def bundle_referrer(
    bundle: bytes,
    subject: Mapping[str, object],
    predicate_type: str | None = None,
    created: str | None = None,
) -> Artifact:
    """The referrer manifest ``cosign attest --new-bundle-format`` pushes for ``bundle``.

    ``subject`` is the image's descriptor (mediaType, size, digest).
    ``predicate_type`` is the (unsigned) ``dev.sigstore.bundle.predicateType``
    annotation; by default the bundle's own. Field order and the
    ``artifactType`` inside the config descriptor follow cosign 2.5.
    """
    annotations = {"dev.sigstore.bundle.content": bundle_content(bundle)}
    stated = predicate_type if predicate_type is not None else bundle_predicate_type(bundle)
    if stated is not None:
        annotations["dev.sigstore.bundle.predicateType"] = stated
    annotations["org.opencontainers.image.created"] = created or dt.datetime.now(dt.UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "size": len(EMPTY),
            "digest": sha256(EMPTY),
            "artifactType": BUNDLE_V03,
        },
        "layers": [{"mediaType": BUNDLE_V03, "size": len(bundle), "digest": sha256(bundle)}],
        "annotations": annotations,
        "subject": dict(subject),
        "artifactType": BUNDLE_V03,
    }
    return Artifact(
        _compact(document), OCI_MANIFEST, {sha256(EMPTY): EMPTY, sha256(bundle): bundle}
    )


def simplesigning_referrer(
    layers: Sequence[SignatureLayer], subject: Mapping[str, object]
) -> Artifact:
    """The ``oci-1-1`` referrer form of a ``.sig`` manifest: sig config type, a subject."""
    payloads = [layer.payload for layer in layers]
    config = _compact(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in payloads],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [sha256(p) for p in payloads]},
            "config": {},
        }
    )
    document = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": SIG_ARTIFACT_TYPE, "size": len(config), "digest": sha256(config)},
        "layers": [
            {
                "mediaType": layer.media_type,
                "size": len(layer.payload),
                "digest": sha256(layer.payload),
                "annotations": layer.annotations,
            }
            for layer in layers
        ],
        "subject": dict(subject),
    }
    blobs = {sha256(config): config, **{sha256(p): p for p in payloads}}
    return Artifact(_compact(document), OCI_MANIFEST, blobs)


def _pem(der: bytes) -> str:
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM).decode()


def legacy_keyless_layer(
    payload: bytes, bundle: Mapping[str, Any], chain: Sequence[bytes]
) -> SignatureLayer:
    """cosign 2.x's keyless ``.sig`` layer from a message-signature bundle over ``payload``.

    ``bundle`` is the parsed JSON of a keyless bundle (v0.3) whose message
    is the simple-signing ``payload``; ``chain`` is the CA certificates
    (DER, from the trusted root). The layer carries the signature, the
    Fulcio certificate and chain (PEM) and the Rekor bundle (the entry's SET,
    body, integrated time, index and log id) as cosign stores them.
    """
    material = bundle["verificationMaterial"]
    certificate = base64.b64decode(material["certificate"]["rawBytes"])
    entry = material["tlogEntries"][0]
    rekor = {
        "SignedEntryTimestamp": entry["inclusionPromise"]["signedEntryTimestamp"],
        "Payload": {
            "body": entry["canonicalizedBody"],
            "integratedTime": int(entry["integratedTime"]),
            "logIndex": int(entry["logIndex"]),
            "logID": base64.b64decode(entry["logId"]["keyId"]).hex(),
        },
    }
    assert (
        bundle["messageSignature"]["messageDigest"]["digest"]
        == base64.b64encode(hashlib.sha256(payload).digest()).decode()
    ), "the bundle does not sign this payload"
    return SignatureLayer(
        payload,
        {
            SIGNATURE_ANNOTATION: bundle["messageSignature"]["signature"],
            CERTIFICATE_ANNOTATION: _pem(certificate),
            CHAIN_ANNOTATION: "".join(_pem(c) for c in chain),
            REKOR_BUNDLE_ANNOTATION: json.dumps(rekor, separators=(",", ":")),
        },
    )
