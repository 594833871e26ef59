"""Embedded ``data`` in a manifest's descriptors: a claim like any other.

image-spec: "the decoded data MUST be identical to the referenced content
and SHOULD be verified against the digest and size fields". The format layer
checks this while it parses; hashverify checks it again over the bytes it
read itself, because content digests are this layer's job (THREATS I-2).
pullguard never uses ``data`` as content, so a mismatch is a lie, and the
manifest carrying it is refused.

The manifest is read only, never re-serialised. Whether it is valid JSON, or
free of duplicate keys, is the format layer's verdict: a document that does
not parse here has no descriptors to check.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from pullguard.services.hashverify.claims import unusable_claim
from pullguard.services.runtime.digests import computed_digest
from pullguard.services.runtime.findings import Finding

#: Where descriptors sit in images, indexes and (old) artifact manifests.
_SINGLE = ("config", "subject")
_LISTS = ("layers", "manifests", "blobs")
#: Descriptors examined per manifest; format bounds them more tightly.
MAX_DESCRIPTORS = 20_000


def _descriptors(document: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(document, dict):
        return
    for name in _SINGLE:
        if isinstance(document.get(name), dict):
            yield name, document[name]
    count = 0
    for name in _LISTS:
        items = document.get(name)
        if not isinstance(items, list):
            continue
        for i, item in enumerate(items):
            count += 1
            if count > MAX_DESCRIPTORS:
                return
            if isinstance(item, dict):
                yield f"{name}[{i}]", item


def data_findings(manifest: bytes) -> list[Finding]:
    """Findings for every descriptor whose ``data`` is not the content it names."""
    try:
        document = json.loads(manifest)
    except (ValueError, RecursionError):
        return []  # not JSON: format refuses it; there is nothing to compare
    findings: list[Finding] = []
    for where, descriptor in _descriptors(document):
        if "data" not in descriptor:
            continue
        finding = _check(where, descriptor)
        if finding is not None:
            findings.append(finding)
    return findings


def _check(where: str, descriptor: dict[str, Any]) -> Finding | None:
    data, digest, size = descriptor["data"], descriptor.get("digest"), descriptor.get("size")
    if not isinstance(digest, str) or isinstance(size, bool) or not isinstance(size, int):
        return Finding.error(
            "hash.data_mismatch", f"{where}.data: no digest and size to check it against"
        )
    unusable = unusable_claim(digest, f"{where}.data: digest")
    if unusable is not None:
        return unusable
    if not isinstance(data, str):
        return Finding.error("hash.data_mismatch", f"{where}.data: expected base64 text")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return Finding.error("hash.data_mismatch", f"{where}.data: not valid base64")
    if len(content) != size:
        return Finding.error(
            "hash.data_mismatch",
            f"{where}.data: got {len(content)} bytes, expected size {size}",
            digest=digest,
        )
    actual = computed_digest(content, digest)
    if actual != digest:
        return Finding.error(
            "hash.data_mismatch",
            f"{where}.data: got {actual}, expected {digest}",
            digest=digest,
        )
    return None
