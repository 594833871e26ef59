"""The few upstream documents the fetcher itself must read: artifact manifests,
referrers indexes and ``Link`` headers.

Minimal on purpose (format does the full check of what it stages). Duplicate
JSON keys are refused, since two readers could otherwise see two different
documents; descriptors are returned exactly as stated.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx

from pullguard.services.fetcher.models import Descriptor, FetchDenied
from pullguard.services.runtime.digests import is_digest
from pullguard.services.runtime.strictjson import unique_object

#: A ``Link`` entry: ``<url>`` then parameters (RFC 8288).
#: Written so that no two parts can match the same characters: no backtracking blow-up.
_LINK_RE = re.compile(
    r'\s*<([^<>]*)>((?:\s*;\s*[^;,"=\s]+(?:\s*=\s*(?:"[^"]*"|[^;,"\s]*))?)*)\s*(?:,|$)'
)
_REL_RE = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]+))', re.IGNORECASE)
MAX_LINKS = 16


def parse_artifact_manifest(body: bytes) -> list[Descriptor]:
    """The config and layer descriptors of an image manifest, as stated."""
    code = "fetch.artifact_malformed"
    data = _json_object(body, code, "an artifact manifest")
    layers = data.get("layers")
    if not isinstance(data.get("config"), dict) or not isinstance(layers, list):
        raise FetchDenied.of(code, "got an artifact manifest without config and layers")
    return [
        parse_descriptor(item, where, code)
        for item, where in [
            (data["config"], "config"),
            *((layer, f"layers[{i}]") for i, layer in enumerate(layers)),
        ]
    ]


def parse_referrers_index(body: bytes, room: int) -> list[Descriptor]:
    """The ``manifests`` of a referrers API page, as stated.

    ``room`` is how many more entries may be accepted; more is
    ``fetch.too_many_referrers`` before any entry is parsed.
    """
    code = "fetch.referrers_malformed"
    data = _json_object(body, code, "a referrers index")
    media_type = data.get("mediaType", "application/vnd.oci.image.index.v1+json")
    if media_type != "application/vnd.oci.image.index.v1+json":
        raise FetchDenied.of(
            code,
            f"got a referrers response of mediaType {str(media_type)[:100]!r}, expected"
            " an OCI image index",
        )
    manifests = data.get("manifests")
    if not isinstance(manifests, list):
        raise FetchDenied.of(code, "got a referrers response without a manifests list")
    if len(manifests) > room:
        raise FetchDenied.of(
            "fetch.too_many_referrers",
            f"got more referrers than the {room} still allowed",
            limit=room,
        )
    return [parse_descriptor(item, f"manifests[{i}]", code) for i, item in enumerate(manifests)]


def next_link(
    header: str, current: httpx.URL, code: str = "fetch.referrers_malformed"
) -> httpx.URL | None:
    """The ``rel="next"`` target of a ``Link`` header, resolved against ``current``.

    Raises ``code`` (the paged document's ``fetch.<kind>_malformed``) for a
    header that does not parse.
    """
    if not header.strip():
        return None
    position = 0
    for _ in range(MAX_LINKS):
        match = _LINK_RE.match(header, position)
        if match is None:
            raise FetchDenied.of(code, "got an unparsable Link header")
        target, params = match.group(1), match.group(2)
        for rel in _REL_RE.finditer(params):
            values = (rel.group(1) or rel.group(2) or "").lower().split()
            if "next" in values:
                try:
                    return current.join(target)
                except httpx.InvalidURL:
                    raise FetchDenied.of(code, "got an unparsable Link target") from None
        position = match.end()
        if position >= len(header):
            return None
    raise FetchDenied.of(code, f"got more than {MAX_LINKS} links")


def parse_descriptor(item: Any, where: str, code: str) -> Descriptor:
    """One descriptor as stated; :class:`FetchDenied` ``code`` if its shape is wrong."""

    def bad(problem: str) -> FetchDenied:
        return FetchDenied.of(code, f"got {where} {problem}")

    if not isinstance(item, dict):
        raise bad("that is not an object")
    media_type, digest, size = item.get("mediaType"), item.get("digest"), item.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise bad("without a mediaType or digest string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise bad("without a non-negative integer size")
    if not is_digest(digest):
        raise bad(f"with invalid digest {digest[:140]!r}")
    urls = item.get("urls", [])
    annotations = item.get("annotations", {})
    artifact_type = item.get("artifactType", "")
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise bad("with urls that are not a list of strings")
    if not isinstance(annotations, dict) or not all(
        isinstance(v, str) for v in annotations.values()
    ):
        raise bad("with annotations that are not a map of strings")
    if not isinstance(artifact_type, str):
        raise bad("with an artifactType that is not a string")
    return Descriptor(media_type, digest, size, tuple(urls), dict(annotations), artifact_type)


def _json_object(body: bytes, code: str, what: str) -> dict[str, Any]:
    try:
        data = json.loads(body, object_pairs_hook=unique_object)
    except (ValueError, RecursionError) as exc:
        raise FetchDenied.of(code, f"got {what} that is not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise FetchDenied.of(code, f"got {what} that is not a JSON object")
    return data
