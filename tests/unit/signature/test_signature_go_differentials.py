"""Signature documents that Python and Go's ``encoding/json`` read differently (issue 7).

cosign, go-securesystemslib and in-toto-golang decode signature manifests,
simple-signing payloads, DSSE envelopes and in-toto statements with Go's
``encoding/json``: keys match fields case-insensitively (with the Kelvin sign
and the long s), the last match winning. A key that folds onto a known field
without being it is refused with a code per document, spelled plainly or
with ``\\u`` escapes, at every depth.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pullguard.services.signature import dsse
from pullguard.services.signature.attachments import AttachmentError, parse_attachment
from pullguard.services.signature.simplesigning import PayloadError, parse_payload
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict
from pullguard.services.signature.verifier import Artifact
from tests.support.cosign import (
    DSSE_ENVELOPE,
    LocalSigner,
    MemoryStaging,
    SignatureLayer,
    dsse_envelope,
    key_bundle,
    trusting,
)
from tests.support.cosign import statement as make_statement
from tests.unit.signature.test_signature_attestations import (
    SLSA_V02,
    SLSA_V1,
    V02_PREDICATE,
    V1_PREDICATE,
)
from tests.unit.signature.test_signature_attestations import codes as attestation_codes
from tests.unit.signature.test_signature_attestations import run as run_attestations
from tests.unit.signature.test_signature_bundles import DIGEST as BUNDLE_DIGEST
from tests.unit.signature.test_signature_bundles import codes as bundle_codes
from tests.unit.signature.test_signature_bundles import run as run_bundles
from tests.unit.signature.test_signature_verifier import (
    DIGEST,
    LOCATION,
    REPOSITORY,
    payload,
    run,
    verify,
)
from tests.unit.signature.test_signature_verifier import codes as signature_codes

MANIFEST_COLLISION = "signature.manifest_key_case_collision"
PAYLOAD_COLLISION = "signature.payload_key_case_collision"
ENVELOPE_COLLISION = "signature.envelope_key_case_collision"
STATEMENT_COLLISION = "signature.statement_key_case_collision"
KELVIN = "\u212a"
LONG_S = "\u017f"


@pytest.fixture(scope="module")
def alice() -> LocalSigner:
    return LocalSigner("alice.pub")


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------ signature manifests


def _sig_manifest() -> dict[str, Any]:
    layer = {
        "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
        "digest": DIGEST,
        "size": 10,
        "annotations": {"dev.cosignproject.cosign/signature": "AAAA"},
    }
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": DIGEST},
        "layers": [layer],
    }


_MANIFEST_CASES = {
    "layers beside Layers": lambda d: d.__setitem__("Layers", []),
    "layers, long s": lambda d: d.__setitem__(f"layer{LONG_S}", []),
    "layer digest": lambda d: d["layers"][0].__setitem__("Digest", DIGEST),
    "layer annotations": lambda d: d["layers"][0].__setitem__("Annotations", {}),
    "subject": lambda d: d.__setitem__("SUBJECT", {"digest": DIGEST}),
    "subject digest": lambda d: d.__setitem__("subject", {"digest": DIGEST, "DIGEST": DIGEST}),
}


@pytest.mark.parametrize("mutate", _MANIFEST_CASES.values(), ids=_MANIFEST_CASES.keys())
def test_signature_manifest_key_case_collision(mutate: Any) -> None:
    doc = _sig_manifest()
    mutate(doc)
    with pytest.raises(AttachmentError) as caught:
        parse_attachment(_dumps(doc), 10)
    assert caught.value.code == MANIFEST_COLLISION


def test_signature_manifest_escaped_key_and_exact_manifest() -> None:
    body = _dumps(_sig_manifest())
    assert len(parse_attachment(body, 10).layers) == 1
    escaped = body.replace(b'"layers": ', b'"\\u004cayers": [], "layers": ', 1)
    with pytest.raises(AttachmentError) as caught:
        parse_attachment(escaped, 10)
    assert caught.value.code == MANIFEST_COLLISION
    assert "'Layers' is 'layers' to a Go client" in caught.value.message


def test_signature_manifest_collision_reaches_the_verdict(alice: LocalSigner) -> None:
    staging = MemoryStaging()
    doc = _sig_manifest()
    doc["Layers"] = []
    outcome = run([Artifact(LOCATION, staging.put(_dumps(doc)))], staging, [alice])
    assert not outcome.verdict.allowed
    assert signature_codes(outcome) == [MANIFEST_COLLISION]


# ------------------------------------------------------------ simple signing


def _payload_doc() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(payload())
    return document


_PAYLOAD_CASES = {
    "Critical": lambda d: d.__setitem__("Critical", d["critical"]),
    "Optional": lambda d: d.__setitem__("OPTIONAL", None),
    "critical.Type": lambda d: d["critical"].__setitem__("Type", "x"),
    "critical.Image": lambda d: d["critical"].__setitem__("Image", {}),
    "identity, Kelvin sign": lambda d: d["critical"]["identity"].__setitem__(
        f"doc{KELVIN}er-reference", "evil.example/app"
    ),
    "image digest": lambda d: d["critical"]["image"].__setitem__(
        "Docker-Manifest-Digest", "sha256:" + "00" * 32
    ),
}


@pytest.mark.parametrize("mutate", _PAYLOAD_CASES.values(), ids=_PAYLOAD_CASES.keys())
def test_payload_key_case_collision(mutate: Any) -> None:
    doc = _payload_doc()
    mutate(doc)
    with pytest.raises(PayloadError) as caught:
        parse_payload(_dumps(doc))
    assert caught.value.code == PAYLOAD_COLLISION


def test_payload_optional_is_a_map_and_other_keys_are_only_unexpected() -> None:
    doc = _payload_doc()
    doc["optional"] = {"creator": "a", "Creator": "b"}
    assert parse_payload(_dumps(doc)).creator == "a"
    doc["critical"]["identity"]["docker-referencex"] = "x"
    with pytest.raises(PayloadError) as caught:
        parse_payload(_dumps(doc))
    assert caught.value.code is None  # unexpected member: signature.invalid


def test_signed_payload_with_escaped_kelvin_is_refused(alice: LocalSigner) -> None:
    # Signed by a trusted key, and still refused: cosign would read the other reference.
    # cosign's decoder stores the last key that folds onto docker-reference.
    body = payload().replace(
        b'"},"image"', b'","doc\\u212aer-reference":"evil.example/app"},"image"', 1
    )
    assert body != payload()
    outcome = verify([alice.layer(body)], [alice])
    assert not outcome.verdict.allowed
    assert signature_codes(outcome) == [PAYLOAD_COLLISION]
    assert verify([alice.layer(payload())], [alice]).verdict.allowed


# ------------------------------------------------------------ DSSE envelopes


def _envelope(alice: LocalSigner, predicate_type: str = SLSA_V02, predicate: Any = None) -> Any:
    body = make_statement(DIGEST, predicate_type, predicate or V02_PREDICATE, REPOSITORY)
    return dsse_envelope([alice], body)


_ENVELOPE_CASES = {
    "PayloadType": lambda d: d.__setitem__("PayloadType", "text/plain"),
    "Payload": lambda d: d.__setitem__("Payload", ""),
    "signatures, long s": lambda d: d.__setitem__(f"signature{LONG_S}", []),
    "Signatures": lambda d: d.__setitem__("Signatures", []),
    "signature Sig": lambda d: d["signatures"][0].__setitem__("Sig", "AAAA"),
    "signature KeyID, Kelvin sign": lambda d: d["signatures"][0].__setitem__(f"{KELVIN}eyid", "x"),
}


@pytest.mark.parametrize("mutate", _ENVELOPE_CASES.values(), ids=_ENVELOPE_CASES.keys())
def test_envelope_key_case_collision(alice: LocalSigner, mutate: Any) -> None:
    doc = _envelope(alice)
    assert dsse.parse_envelope(_dumps(doc)).payload_type == dsse.IN_TOTO_PAYLOAD_TYPE
    mutate(doc)
    with pytest.raises(dsse.EnvelopeError) as caught:
        dsse.parse_envelope(_dumps(doc))
    assert caught.value.code == ENVELOPE_COLLISION


def test_envelope_collision_reaches_the_attestation_verdict(alice: LocalSigner) -> None:
    doc = _envelope(alice)
    doc["PayloadType"] = "text/plain"
    layer = SignatureLayer(_dumps(doc), {}, DSSE_ENVELOPE)
    outcome = run_attestations([layer], trusting(alice))
    assert outcome.statements == ()
    assert attestation_codes(outcome) == [ENVELOPE_COLLISION]


# ------------------------------------------------------------ in-toto statements


def _statement_envelope(statement: dict[str, Any] | bytes) -> dsse.Envelope:
    body = statement if isinstance(statement, bytes) else _dumps(statement)
    return dsse.Envelope(dsse.IN_TOTO_PAYLOAD_TYPE, body, b"sig")


def _statement(predicate_type: str = SLSA_V02, predicate: Any = None) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        make_statement(DIGEST, predicate_type, predicate or V02_PREDICATE, REPOSITORY)
    )
    return document


_STATEMENT_CASES = {
    "_TYPE": (SLSA_V02, lambda d: d.__setitem__("_TYPE", "x")),
    "PredicateType": (SLSA_V02, lambda d: d.__setitem__("PredicateType", SLSA_V1)),
    "subject, long s": (SLSA_V02, lambda d: d.__setitem__(f"{LONG_S}ubject", [])),
    "subject name": (SLSA_V02, lambda d: d["subject"][0].__setitem__("Name", "x")),
    "subject digest": (SLSA_V02, lambda d: d["subject"][0].__setitem__("DIGEST", {})),
    "Predicate": (SLSA_V02, lambda d: d.__setitem__("Predicate", {})),
    "v0.2 builder": (SLSA_V02, lambda d: d["predicate"].__setitem__("Builder", {"id": "evil"})),
    "v0.2 builder id": (SLSA_V02, lambda d: d["predicate"]["builder"].__setitem__("ID", "evil")),
    "v0.2 configSource uri": (
        SLSA_V02,
        lambda d: d["predicate"]["invocation"]["configSource"].__setitem__("URI", "evil"),
    ),
    "v0.2 materials uri": (
        SLSA_V02,
        lambda d: d["predicate"]["materials"][0].__setitem__("Uri", "evil"),
    ),
    "v1 builder id": (
        SLSA_V1,
        lambda d: d["predicate"]["runDetails"]["builder"].__setitem__("Id", "evil"),
    ),
    "v1 externalParameters": (
        SLSA_V1,
        lambda d: d["predicate"]["buildDefinition"].__setitem__("ExternalParameters", {}),
    ),
    "v1 resolvedDependencies uri": (
        SLSA_V1,
        lambda d: d["predicate"]["buildDefinition"]["resolvedDependencies"][0].__setitem__(
            "URI", "evil"
        ),
    ),
}


@pytest.mark.parametrize(
    ("predicate_type", "mutate"), _STATEMENT_CASES.values(), ids=_STATEMENT_CASES.keys()
)
def test_statement_key_case_collision(predicate_type: str, mutate: Any) -> None:
    predicate = V1_PREDICATE if predicate_type == SLSA_V1 else V02_PREDICATE
    doc = _statement(predicate_type, json.loads(json.dumps(predicate)))
    assert dsse.parse_statement(_statement_envelope(doc)).predicate_type == predicate_type
    mutate(doc)
    with pytest.raises(dsse.EnvelopeError) as caught:
        dsse.parse_statement(_statement_envelope(doc))
    assert caught.value.code == STATEMENT_COLLISION


def test_statement_escaped_key_and_where() -> None:
    body = _dumps(_statement()).replace(b'"id": ', b'"\\u0049D": "evil", "id": ', 1)
    with pytest.raises(dsse.EnvelopeError) as caught:
        dsse.parse_statement(_statement_envelope(body))
    assert caught.value.code == STATEMENT_COLLISION
    assert "predicate.builder: key 'ID' is 'id'" in str(caught.value)


def test_statement_maps_and_unknown_predicates_are_not_walked() -> None:
    doc = _statement("https://example.com/other", {"Builder": 1, "builder": 2})
    doc["subject"][0]["digest"]["SHA256"] = "x"  # a digest set is a map in Go
    assert dsse.parse_statement(_statement_envelope(doc)).predicate == {"Builder": 1, "builder": 2}
    v1 = _statement(SLSA_V1, json.loads(json.dumps(V1_PREDICATE)))
    v1["predicate"]["buildDefinition"]["externalParameters"]["Workflow"] = {}
    assert dsse.parse_statement(_statement_envelope(v1)).predicate_type == SLSA_V1


def test_signed_statement_collision_reaches_the_attestation_verdict(alice: LocalSigner) -> None:
    predicate = {**V02_PREDICATE, "Builder": {"id": "https://evil.example/builder"}}
    body = make_statement(DIGEST, SLSA_V02, predicate, REPOSITORY)
    layer = SignatureLayer(_dumps(dsse_envelope([alice], body)), {}, DSSE_ENVELOPE)
    outcome = run_attestations([layer], trusting(alice))
    assert outcome.statements == ()
    assert attestation_codes(outcome) == [STATEMENT_COLLISION]


# ------------------------------------------------------------ the loader


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": "\\ud800"}', "lone surrogate"),  # Go reads U+FFFD
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b'{"a": "\xff"}', "not UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b'{"sig": 1, "\\u0073ig": 2}', "duplicate key"),
        (b'{"a": 1e400}', "overflows"),
        (b'{"a": 123456789012345678901}', "out of range"),
    ],
)
def test_other_differentials_refused_by_the_loader(data: bytes, message: str) -> None:
    with pytest.raises(StrictJsonError) as caught:
        loads_strict(data)
    assert message in str(caught.value)


def test_surrogate_pair_is_one_character() -> None:
    assert loads_strict(b'{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


def test_collisions_in_a_bundle_envelope_and_statement(alice: LocalSigner) -> None:
    envelope = dsse_envelope([alice], make_statement(BUNDLE_DIGEST))
    envelope["PayloadType"] = "text/plain"
    outcome = run_bundles([key_bundle({"dsseEnvelope": envelope})], keys=(alice,), keyless=())
    assert bundle_codes(outcome) == [ENVELOPE_COLLISION]
    body = make_statement(BUNDLE_DIGEST).replace(b'"subject"', b'"Subject": [], "subject"', 1)
    envelope = dsse_envelope([alice], body)
    outcome = run_bundles([key_bundle({"dsseEnvelope": envelope})], keys=(alice,), keyless=())
    assert bundle_codes(outcome) == [STATEMENT_COLLISION]
