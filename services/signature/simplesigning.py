"""The cosign simple-signing payload: strict parsing and the claims it must make.

cosign signs this JSON document (``application/vnd.dev.cosign.simplesigning.v1+json``)::

    {"critical": {"identity": {"docker-reference": "<registry>/<repository>"},
                  "image": {"docker-manifest-digest": "sha256:<hex>"},
                  "type": "cosign container image signature"},
     "optional": null}

Following containers/image's ``containers-signature(5)``, a consumer must
reject any payload whose ``critical`` object holds an unrecognised or
unexpected member (THREATS G-04), so every object in ``critical`` must have
exactly the members above, each of the right type. ``optional`` is null or an
object; only its ``creator`` (string) and ``timestamp`` (integer) are read,
and they are informational. A key that cosign's Go decoder reads as one of
these members under another spelling (``"Critical"``, ``"docker-\u212aeference"``...)
is refused with :data:`KEY_CASE_COLLISION`, before the exact-member checks.

The payload is parsed only after its signature verified under a trusted key,
so this parser never sees bytes an untrusted signer chose.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pullguard.services.runtime.digests import is_digest
from pullguard.services.runtime.goschemas import SIMPLE_SIGNING
from pullguard.services.signature.strictjson import (
    StrictJsonError,
    key_case_problem,
    loads_strict,
)

MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
SIGNATURE_TYPE = "cosign container image signature"
#: A payload key that cosign reads as a member under another spelling.
KEY_CASE_COLLISION = "signature.payload_key_case_collision"

DOCKER_HUB = "docker.io"
#: Docker Hub's registry host as cosign writes it (go-containerregistry's default).
DOCKER_HUB_INDEX = "index.docker.io"

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


class PayloadError(ValueError):
    """The payload is not a well-formed cosign simple-signing payload.

    ``code`` is a finding code, ``None`` for the caller's code for malformed payloads.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class SimpleSigningPayload:
    """What a verified payload claims."""

    docker_reference: str
    manifest_digest: str
    creator: str | None = None
    timestamp: int | None = None


def _exact_object(value: Any, where: str, members: Sequence[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where} is a {_kind(value)}, expected an object")
    unexpected = sorted(set(value) - set(members))
    if unexpected:
        raise PayloadError(f"{where} has unexpected member {unexpected[0][:60]!r}")
    missing = [m for m in members if m not in value]
    if missing:
        raise PayloadError(f"{where} has no {missing[0]!r} member")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{where} is a {_kind(value)}, expected a string")
    return value


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def parse_payload(data: bytes) -> SimpleSigningPayload:
    """Parse and check a payload's shape; raise PayloadError when it is not exact."""
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise PayloadError(f"payload is not strict JSON: {exc}") from None
    problem = key_case_problem(document, SIMPLE_SIGNING)
    if problem is not None:
        raise PayloadError(f"payload: {problem}", KEY_CASE_COLLISION)
    top = _exact_object(document, "payload", ("critical", "optional"))
    critical = _exact_object(top["critical"], "critical", ("identity", "image", "type"))
    signature_type = _string(critical["type"], "critical.type")
    if signature_type != SIGNATURE_TYPE:
        raise PayloadError(
            f"got critical.type {signature_type[:80]!r}, expected {SIGNATURE_TYPE!r}"
        )
    image = _exact_object(critical["image"], "critical.image", ("docker-manifest-digest",))
    identity = _exact_object(critical["identity"], "critical.identity", ("docker-reference",))
    creator: str | None = None
    timestamp: int | None = None
    optional = top["optional"]
    if optional is not None:
        if not isinstance(optional, dict):
            raise PayloadError(f"optional is a {_kind(optional)}, expected an object or null")
        if "creator" in optional:
            creator = _string(optional["creator"], "optional.creator")
        if "timestamp" in optional:
            if type(optional["timestamp"]) is not int:
                raise PayloadError(
                    f"optional.timestamp is a {_kind(optional['timestamp'])}, expected an integer"
                )
            timestamp = optional["timestamp"]
    return SimpleSigningPayload(
        docker_reference=_string(
            identity["docker-reference"], "critical.identity.docker-reference"
        ),
        manifest_digest=_string(
            image["docker-manifest-digest"], "critical.image.docker-manifest-digest"
        ),
        creator=creator,
        timestamp=timestamp,
    )


def expected_repositories(canonical_host: str, repository: str) -> tuple[str, ...]:
    """The repository names a payload may give for ``<canonical_host>/<repository>``.

    Docker Hub is also spelled ``index.docker.io`` (cosign writes that form);
    the path must still be exact, so ``docker.io/alpine`` does not name
    ``docker.io/library/alpine``.
    """
    names = [f"{canonical_host}/{repository}"]
    if canonical_host == DOCKER_HUB:
        names.append(f"{DOCKER_HUB_INDEX}/{repository}")
    return tuple(names)


def repository_of(docker_reference: str) -> str:
    """``docker_reference`` without a well-formed ``:tag`` and/or ``@digest`` suffix.

    A malformed suffix is left in place, so such a reference matches no repository.
    """
    name = docker_reference
    at = name.find("@")
    if at >= 0:
        if not is_digest(name[at + 1 :]):
            return docker_reference
        name = name[:at]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        if not _TAG_RE.fullmatch(name[colon + 1 :]):
            return docker_reference
        name = name[:colon]
    return name


def names_repository(docker_reference: str, expected: Sequence[str]) -> bool:
    """True when the payload's docker-reference names one of ``expected`` exactly."""
    return repository_of(docker_reference) in expected
