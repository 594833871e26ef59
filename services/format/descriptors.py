"""Content descriptors as manifests state them, checked field by field.

Every check appends findings to a list the caller owns and returns ``None``
when the descriptor cannot be used, so one bad descriptor does not hide the
problems of the next. Nothing is normalised: a digest in uppercase hex is
refused, not lowered (THREATS F-09), and a size of ``1000.0`` or ``true`` is
not an integer (F-04).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from pullguard.services.format.jsonstrict import MAX_SIZE, is_size
from pullguard.services.format.mediatypes import is_media_type
from pullguard.services.runtime.descriptors import Descriptor as Descriptor
from pullguard.services.runtime.digests import DigestSyntaxError, computed_digest, parse_digest
from pullguard.services.runtime.findings import Finding

# The OCI grammar for any digest, registered algorithm or not: a digest that
# matches it but names an algorithm pullguard cannot recompute is
# "unsupported" rather than "invalid" (THREATS F-08).
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_PLATFORM_PART_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Most URLs one descriptor may carry; real foreign layers name one or two.
MAX_URLS = 16


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:100]


def check_digest(value: Any, where: str) -> Finding | None:
    """A finding when ``value`` is not a digest pullguard can recompute."""
    if not isinstance(value, str):
        return Finding.error(
            "format.invalid_digest", f"{where}: got {_short(value)}, expected a digest string"
        )
    try:
        parse_digest(value)
    except DigestSyntaxError:
        if _ANY_DIGEST_RE.fullmatch(value):
            algorithm = value.split(":", 1)[0]
            if algorithm not in ("sha256", "sha512"):
                return Finding.error(
                    "format.unsupported_digest_algorithm",
                    f"{where}: got algorithm {algorithm[:40]}, expected sha256 or sha512",
                    digest=value,
                )
        return Finding.error(
            "format.invalid_digest", f"{where}: malformed digest {_short(value)}", digest=value
        )
    return None


def parse_annotations(value: Any, where: str, findings: list[Finding]) -> dict[str, str] | None:
    """A string-to-string map, or ``None`` with a finding."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        findings.append(
            Finding.error(
                "format.invalid_manifest", f"{where}: expected a map of strings to strings"
            )
        )
        return None
    return dict(value)


def parse_media_type(value: Any, where: str, findings: list[Finding]) -> str | None:
    """A media type (grammar only, any value), or ``None`` with a finding."""
    if not isinstance(value, str) or not is_media_type(value):
        findings.append(
            Finding.error(
                "format.invalid_descriptor", f"{where}: got {_short(value)}, expected a media type"
            )
        )
        return None
    return value


def _parse_urls(value: Any, where: str, findings: list[Finding]) -> tuple[str, ...] | None:
    if (
        not isinstance(value, list)
        or len(value) > MAX_URLS
        or not all(isinstance(u, str) and u for u in value)
    ):
        findings.append(
            Finding.error(
                "format.invalid_descriptor",
                f"{where}: expected a list of at most {MAX_URLS} non-empty strings",
            )
        )
        return None
    return tuple(value)


def _check_data(value: Any, digest: str, size: int, where: str) -> Finding | None:
    """Embedded ``data`` must decode to exactly the content the digest names."""
    if not isinstance(value, str):
        return Finding.error("format.invalid_descriptor", f"{where}: expected base64 text")
    try:
        content = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return Finding.error("format.invalid_descriptor", f"{where}: not valid base64")
    if len(content) != size:
        return Finding.error(
            "format.data_mismatch", f"{where}: got {len(content)} bytes, expected size {size}"
        )
    actual = computed_digest(content, digest)
    if actual != digest:
        return Finding.error("format.data_mismatch", f"{where}: got {actual}, expected {digest}")
    return None


def parse_platform(value: Any, where: str, findings: list[Finding]) -> str | None:
    """``"os/architecture[/variant]"`` of an index entry's platform object."""
    problem = None
    if not isinstance(value, dict):
        problem = "expected an object"
    else:
        parts = [value.get("os"), value.get("architecture")]
        if "variant" in value:
            parts.append(value["variant"])
        if not all(isinstance(p, str) and _PLATFORM_PART_RE.fullmatch(p) for p in parts):
            problem = "os, architecture and variant must be short names"
        elif "os.version" in value and not isinstance(value["os.version"], str):
            problem = "os.version must be a string"
        elif any(
            name in value
            and not (isinstance(value[name], list) and all(isinstance(f, str) for f in value[name]))
            for name in ("os.features", "features")
        ):
            problem = "features must be lists of strings"
        else:
            return "/".join(parts)  # type: ignore[arg-type]
    findings.append(Finding.error("format.invalid_descriptor", f"{where}: {problem}"))
    return None


def parse_descriptor(
    value: Any, where: str, findings: list[Finding], *, with_platform: bool = False
) -> Descriptor | None:
    """Check one descriptor; ``None`` (with findings) when it cannot be used."""
    if not isinstance(value, dict):
        findings.append(Finding.error("format.invalid_descriptor", f"{where}: expected an object"))
        return None
    before = len(findings)
    media_type = parse_media_type(value.get("mediaType"), f"{where}.mediaType", findings)
    digest = value.get("digest")
    problem = check_digest(digest, f"{where}.digest")
    if problem is not None:
        findings.append(problem)
    size = value.get("size")
    if not is_size(size):
        findings.append(
            Finding.error(
                "format.invalid_size",
                f"{where}.size: got {_short(size)}, expected an integer from 0 to {MAX_SIZE}",
            )
        )
    urls: tuple[str, ...] | None = ()
    if "urls" in value:
        urls = _parse_urls(value["urls"], f"{where}.urls", findings)
    annotations: dict[str, str] | None = {}
    if "annotations" in value:
        annotations = parse_annotations(value["annotations"], f"{where}.annotations", findings)
    artifact_type: str | None = ""
    if "artifactType" in value:
        artifact_type = parse_media_type(value["artifactType"], f"{where}.artifactType", findings)
    platform: str | None = ""
    if with_platform and "platform" in value:
        platform = parse_platform(value["platform"], f"{where}.platform", findings)
    if len(findings) > before:
        return None
    assert isinstance(digest, str) and isinstance(size, int)
    if "data" in value:
        mismatch = _check_data(value["data"], digest, size, f"{where}.data")
        if mismatch is not None:
            findings.append(mismatch)
            return None
    assert media_type is not None and urls is not None and annotations is not None
    assert artifact_type is not None and platform is not None
    return Descriptor(media_type, digest, size, urls, annotations, artifact_type, platform)
