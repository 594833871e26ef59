"""``attest.mode: referrers``: the referrer manifests and the ``sha256-<hex>`` fallback index.

The registry here is an in-memory stand-in for the index's reads and writes
(including a hostile concurrent writer); the real docker-registry and cosign
run in tests/e2e/test_attestation_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pullguard.gateway.attest import referrers
from pullguard.gateway.attest.attester import Attester
from pullguard.gateway.attest.documents import (
    ATTESTATION_ARTIFACT,
    SIGNATURE_ARTIFACT,
    Subject,
    attestation_attachments,
    sha256,
    signature_attachments,
)
from pullguard.gateway.attest.keys import SigningKey
from pullguard.services.runtime.config import parse_config
from pullguard.services.runtime.errors import TargetError

SUBJECT = Subject("application/vnd.oci.image.manifest.v1+json", "sha256:" + "ab" * 32, 1234)
INDEX = referrers.OCI_INDEX
THEIRS = {
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": "sha256:" + "01" * 32,
    "size": 321,
    "artifactType": "application/example.sbom",
    "annotations": {"z": "last", "a": "first"},
    "x-unknown": [1, {"kept": True}],
}
OURS = {"mediaType": INDEX, "digest": "sha256:" + "02" * 32, "size": 9, "artifactType": "x"}


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return SigningKey(ec.generate_private_key(ec.SECP256R1()), "test")


class Registry:
    """Manifests by reference; ``meddle`` rewrites the index after each PUT (a racing writer)."""

    def __init__(self, index: bytes | None = None, meddle: bytes | None = None) -> None:
        self.tag = referrers.fallback_tag(SUBJECT.digest)
        self.manifests: dict[str, bytes] = {} if index is None else {self.tag: index}
        self.meddle = meddle
        self.puts = 0

    async def get_manifest(self, name: str, digest: str) -> bytes | None:
        return self.manifests.get(digest)

    async def put_manifest(
        self, name: str, reference: str, data: bytes, media_type: str, digest: str
    ) -> None:
        assert media_type == INDEX and sha256(data) == digest
        self.puts += 1
        self.manifests[reference] = self.meddle if self.meddle is not None else data

    def listed(self) -> list[dict[str, Any]]:
        return list(json.loads(self.manifests[self.tag])["manifests"])


def add(registry: Registry, entries: list[dict[str, Any]]) -> None:
    new = {entry["digest"] for entry in entries}
    asyncio.run(
        referrers.update_index(
            registry,
            "mirror/app",
            SUBJECT.digest,
            lambda listed: referrers.with_entries(listed, entries),
            lambda listed: new <= {entry.get("digest") for entry in listed},
        )
    )


def remove(registry: Registry, digests: set[str]) -> None:
    asyncio.run(
        referrers.update_index(
            registry,
            "mirror/app",
            SUBJECT.digest,
            lambda listed: referrers.without_entries(listed, digests),
            lambda listed: not digests & {entry.get("digest") for entry in listed},
        )
    )


def test_referrer_is_the_tags_manifest_with_a_subject_and_cosigns_artifact_type(
    key: SigningKey,
) -> None:
    tagged, referrer = signature_attachments(key, "h/app", SUBJECT.digest, {}, ("both", SUBJECT))
    assert tagged.tag.endswith(".sig") and not tagged.artifact_type
    assert referrer.tag == "" and referrer.artifact_type == SIGNATURE_ARTIFACT
    document = json.loads(referrer.manifest)
    assert document["subject"] == SUBJECT.descriptor()
    assert document["artifactType"] == SIGNATURE_ARTIFACT
    assert document["config"]["mediaType"] == SIGNATURE_ARTIFACT
    # One signature, two manifests: the same signed layer and annotation in both.
    assert document["layers"] == json.loads(tagged.manifest)["layers"]
    assert referrer.blobs == tagged.blobs
    assert referrer.descriptor() == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sha256(referrer.manifest),
        "size": len(referrer.manifest),
        "artifactType": SIGNATURE_ARTIFACT,
    }

    only = attestation_attachments(key, "h/app", SUBJECT.digest, {}, ("referrers", SUBJECT))
    assert [a.artifact_type for a in only] == [ATTESTATION_ARTIFACT]
    assert json.loads(only[0].manifest)["subject"]["digest"] == SUBJECT.digest


def test_fallback_index_keeps_other_entries_exactly_and_drops_only_pullguards() -> None:
    seeded = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [THEIRS]})
    registry = Registry(seeded.encode())
    add(registry, [OURS])
    assert registry.listed() == [THEIRS, OURS]
    assert list(registry.listed()[0]) == list(THEIRS)  # field order too
    add(registry, [OURS])  # already listed: nothing written
    assert registry.puts == 1
    remove(registry, {OURS["digest"]})
    assert registry.listed() == [THEIRS]

    fresh = Registry()
    add(fresh, [OURS])
    assert fresh.listed() == [OURS]
    remove(fresh, {OURS["digest"]})
    assert fresh.listed() == []  # emptied, never deleted


@pytest.mark.parametrize(
    ("index", "problem"),
    [
        (b"not json", "is not JSON"),
        (b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
         b'"manifests":[]}', "not an OCI image index"),
        (b'{"schemaVersion":1,"mediaType":"' + INDEX.encode() + b'","manifests":[]}',
         "not an OCI image index"),
        (b'{"schemaVersion":2,"mediaType":"' + INDEX.encode() + b'","manifests":[1]}',
         "not a descriptor"),
        (b"[" * 100000 + b"]" * 100000, "is not JSON"),
    ],
)  # fmt: skip
def test_a_fallback_tag_that_is_not_an_index_is_refused_not_overwritten(
    index: bytes, problem: str
) -> None:
    registry = Registry(index)
    with pytest.raises(TargetError, match=problem) as raised:
        add(registry, [OURS])
    assert "mirror/app:sha256-" in raised.value.message
    assert registry.puts == 0


def test_fallback_index_is_bounded() -> None:
    many = [{**THEIRS, "digest": f"sha256:{n:064x}"} for n in range(referrers.MAX_ENTRIES)]
    full = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": many}).encode()
    with pytest.raises(TargetError, match="would list more than"):
        add(Registry(full), [OURS])
    over = json.dumps(
        {"schemaVersion": 2, "mediaType": INDEX, "manifests": [*many, THEIRS]}
    ).encode()
    with pytest.raises(TargetError, match="lists more than"):
        remove(Registry(over), {OURS["digest"]})


def test_a_writer_that_keeps_replacing_the_index_fails_the_change_after_bounded_tries() -> None:
    theirs = json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [THEIRS]}).encode()
    registry = Registry(theirs, meddle=theirs)
    with pytest.raises(TargetError, match="kept changing"):
        add(registry, [OURS])
    assert registry.puts == referrers.MAX_ATTEMPTS


def test_referrers_mode_keeps_upstream_fallback_tags_out_of_the_target(
    key: SigningKey, tmp_path: Path
) -> None:
    text = (
        "upstreams: {lab: {url: 'http://127.0.0.1:5001', insecure: true}}\n"
        "target: {kind: registry, url: 'http://127.0.0.1:5002', insecure: true}\n"
        "attest: {key: k, mode: %s}\n"
    )
    fallback = referrers.fallback_tag(SUBJECT.digest)
    for mode, owned in (("referrers", True), ("both", True), ("tag", False)):
        attester = Attester(parse_config(text % mode, "c.yaml", tmp_path), key, None)
        assert attester.owns_tag(fallback) is owned, mode
        assert attester.owns_tag(fallback + ".sig")
        assert not attester.owns_tag("v1")
