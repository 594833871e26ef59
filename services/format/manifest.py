"""Manifest and index bodies against the OCI image spec and Docker schema2.

:func:`check_manifest` is the one parser of manifests in pullguard: the gateway
learns which blobs an image has only from the :class:`ManifestSummary` of a
body this module accepted. The checks follow THREATS section B:

- F-01 a body with ``manifests`` and ``config``/``layers`` is ambiguous,
  whatever the Content-Type says (CVE-2021-41190);
- F-03/F-04 strict JSON (see :mod:`jsonstrict`), and no key that a Go
  client would read as another field than pullguard does (a case variant
  of a manifest, index, descriptor or platform field), at any depth;
- F-06 the body's ``mediaType`` must equal the Content-Type's media type;
  without one, only an OCI Content-Type whose structure agrees is accepted;
- F-07 Docker schema1 is refused, by header and by body;
- F-08/F-09/F-10 descriptor digests and sizes (see :mod:`descriptors`);
- F-11 size limits; F-12 the number of index entries (depth is the
  gateway's to track: one document cannot show it); no two index entries
  may claim one platform a runtime could be asked for (:mod:`platforms`);
- F-14 artifacts: an artifact (empty config, or another config type) passes
  only when the rule lists its type (``artifactType``, else the config's
  media type); an empty config needs ``artifactType``; image layers must have
  allowed layer types;
- F-15 a ``subject`` makes the manifest a referrer: recorded (INFO
  ``format.referrer``), never trusted for anything.

A summary is returned only with an allowing verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pullguard.services.format.descriptors import (
    Descriptor,
    parse_annotations,
    parse_descriptor,
    parse_media_type,
)
from pullguard.services.format.jsonstrict import (
    StrictJsonError,
    is_int,
    key_case_findings,
    loads_strict,
)
from pullguard.services.format.mediatypes import (
    DOCKER_LIST,
    IMAGE_CONFIG_TYPES,
    IMAGE_LAYER_TYPES,
    IMPLICIT_TYPES,
    INDEX_TYPES,
    KNOWN_TYPES,
    OCI_EMPTY,
    SCHEMA1_TYPES,
    header_media_type,
)
from pullguard.services.format.platforms import duplicate_platforms
from pullguard.services.runtime.config import Limits
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.goschemas import MANIFEST
from pullguard.services.runtime.staging import StagingStore

LAYER = "format"
#: Findings kept per verdict; a body with thousands of bad descriptors
#: should not produce a report of thousands of lines.
MAX_FINDINGS = 50

Kind = Literal["image", "index"]
Structure = Literal["image", "index", "none"]


@dataclass(frozen=True)
class ManifestSummary:
    """What an accepted manifest or index describes."""

    kind: Kind
    #: The media type the body was validated as; served back as Content-Type.
    media_type: str
    config: Descriptor | None = None
    layers: tuple[Descriptor, ...] = ()
    manifests: tuple[Descriptor, ...] = ()
    subject: Descriptor | None = None
    artifact_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ManifestResult:
    """A manifest verdict, with the summary when it allows."""

    verdict: Verdict
    #: Set only when ``verdict.allowed``.
    summary: ManifestSummary | None = None


def bounded_verdict(findings: list[Finding]) -> Verdict:
    """A verdict of at most :data:`MAX_FINDINGS` findings, the most severe first,
    so that cutting a long report can never drop the finding that denies."""
    if len(findings) <= MAX_FINDINGS:
        return Verdict.of(LAYER, findings)
    kept = sorted(findings, key=lambda f: -int(f.severity))[:MAX_FINDINGS]
    dropped = len(findings) - MAX_FINDINGS
    note = Finding.info("format.findings_truncated", f"{dropped} more findings not shown")
    return Verdict.of(LAYER, [*kept, note])


def _deny(code: str, message: str, **evidence: object) -> ManifestResult:
    return ManifestResult(Verdict.of(LAYER, [Finding.error(code, message, **evidence)]))


def check_manifest(
    data: bytes,
    content_type: str,
    limits: Limits,
    layer_media_types: tuple[str, ...] = (),
    artifact_types: tuple[str, ...] = (),
) -> ManifestResult:
    """Check a manifest or index body served with ``content_type``.

    ``layer_media_types`` is the rule's list of allowed layer types; empty
    means :data:`IMAGE_LAYER_TYPES` for images and any type for artifacts.
    ``artifact_types`` lists the artifact types the rule admits besides
    container images. Never raises on hostile input.
    """
    header = header_media_type(content_type)
    if header in SCHEMA1_TYPES:
        return _deny(
            "format.schema1_unsupported",
            f"got Content-Type {header}, Docker schema1 is not supported",
        )
    try:
        document = loads_strict(data, limits.manifest_bytes)
    except StrictJsonError as exc:
        return _deny(exc.code, exc.message)
    if not isinstance(document, dict):
        return _deny("format.invalid_manifest", "expected a JSON object at the top level")
    collisions = key_case_findings(document, MANIFEST)
    if collisions:
        # Go reads another document than this one: nothing below would be
        # about what a runtime pulls.
        return ManifestResult(bounded_verdict(collisions))
    schema_version = document.get("schemaVersion")
    if (
        "fsLayers" in document
        or "signatures" in document
        or (is_int(schema_version) and schema_version == 1)
    ):
        return _deny("format.schema1_unsupported", "body is Docker schema1, which is not supported")
    if "manifests" in document and ("config" in document or "layers" in document):
        # CVE-2021-41190: one digest, two meanings. No header makes it safe.
        return _deny(
            "format.ambiguous_manifest",
            "body has manifests and config/layers: it is both an index and a manifest",
        )
    findings: list[Finding] = []
    if not (is_int(schema_version) and schema_version == 2):
        findings.append(
            Finding.error(
                "format.invalid_schema_version",
                f"got schemaVersion {str(schema_version)[:40]}, expected the integer 2",
            )
        )
    media_type = _resolve_media_type(document, header, findings)
    if media_type is None:
        return ManifestResult(bounded_verdict(findings))
    if media_type in INDEX_TYPES:
        summary = _parse_index(document, media_type, limits, artifact_types, findings)
    else:
        summary = _parse_image(
            document, media_type, limits, layer_media_types, artifact_types, findings
        )
    verdict = bounded_verdict(findings)
    return ManifestResult(verdict, summary if verdict.allowed else None)


def _structure(document: dict[str, Any]) -> Structure:
    if "manifests" in document:
        return "index"
    if "config" in document or "layers" in document:
        return "image"
    return "none"


def _agrees(media_type: str, structure: Structure) -> bool:
    if structure == "none":
        return True  # missing required fields are reported by the parser
    return (media_type in INDEX_TYPES) == (structure == "index")


def _resolve_media_type(
    document: dict[str, Any], header: str, findings: list[Finding]
) -> str | None:
    """The media type the body is validated as, or ``None`` with a finding (F-06)."""
    structure = _structure(document)
    if "mediaType" in document:
        body = document["mediaType"]
        if not isinstance(body, str):
            findings.append(Finding.error("format.invalid_manifest", "mediaType must be a string"))
            return None
        if body in SCHEMA1_TYPES:
            findings.append(Finding.error("format.schema1_unsupported", f"got mediaType {body}"))
            return None
        if body != header:
            findings.append(
                Finding.error(
                    "format.mediatype_mismatch",
                    f"got mediaType {body[:100]}, expected Content-Type {header[:100] or '(none)'}",
                    body=body,
                    header=header,
                )
            )
            return None
        if body not in KNOWN_TYPES:
            findings.append(
                Finding.error("format.unknown_mediatype", f"got mediaType {body[:100]}")
            )
            return None
        if not _agrees(body, structure):
            findings.append(
                Finding.error(
                    "format.mediatype_mismatch",
                    f"got a body shaped as {structure}, expected one shaped as {body}",
                )
            )
            return None
        return body
    if header not in IMPLICIT_TYPES or not _agrees(header, structure):
        findings.append(
            Finding.error(
                "format.missing_mediatype",
                f"body has no mediaType and Content-Type {header[:100] or '(none)'}"
                f" does not determine a {structure} body",
            )
        )
        return None
    return header


def _parse_common(
    document: dict[str, Any], findings: list[Finding]
) -> tuple[Descriptor | None, str, dict[str, str]]:
    """``subject``, ``artifactType`` and ``annotations``, shared by both kinds."""
    subject = None
    if "subject" in document:
        subject = parse_descriptor(document["subject"], "subject", findings)
    artifact_type = ""
    if "artifactType" in document:
        artifact_type = parse_media_type(document["artifactType"], "artifactType", findings) or ""
    annotations: dict[str, str] = {}
    if "annotations" in document:
        annotations = parse_annotations(document["annotations"], "annotations", findings) or {}
    if subject is not None:
        # A referrer (signature, SBOM, attestation) of another manifest. Its
        # subject is a discovery hint only: nothing about it is trusted here.
        findings.append(
            Finding.info(
                "format.referrer",
                f"refers to {subject.digest} ({subject.media_type[:100]})",
                subject=subject.digest,
            )
        )
    return subject, artifact_type, annotations


def _parse_image(
    document: dict[str, Any],
    media_type: str,
    limits: Limits,
    layer_media_types: tuple[str, ...],
    artifact_types: tuple[str, ...],
    findings: list[Finding],
) -> ManifestSummary:
    config = None
    if "config" not in document:
        findings.append(Finding.error("format.invalid_manifest", "config is required"))
    else:
        config = parse_descriptor(document["config"], "config", findings)
    subject, artifact_type, annotations = _parse_common(document, findings)
    artifact = False
    if config is not None:
        artifact = _check_image_kind(config, artifact_type, artifact_types, findings)
    # An admitted artifact's layers are its own business, unless the rule lists types.
    allowed_layers: frozenset[str] | None = frozenset(layer_media_types) or (
        None if artifact else IMAGE_LAYER_TYPES
    )
    layers: list[Descriptor] = []
    raw_layers = document.get("layers")
    if not isinstance(raw_layers, list):
        findings.append(Finding.error("format.invalid_manifest", "layers must be a list"))
    elif len(raw_layers) > limits.layers:
        findings.append(
            Finding.error(
                "format.too_many_layers",
                f"got {len(raw_layers)} layers, limit {limits.layers}",
            )
        )
    else:
        for i, raw in enumerate(raw_layers):
            layer = parse_descriptor(raw, f"layers[{i}]", findings)
            if layer is None:
                continue
            if allowed_layers is not None and layer.media_type not in allowed_layers:
                findings.append(
                    Finding.error(
                        "format.layer_mediatype_not_allowed",
                        f"layers[{i}]: got {layer.media_type}, expected an allowed layer type",
                        media_type=layer.media_type,
                    )
                )
            layers.append(layer)
    return ManifestSummary(
        kind="image",
        media_type=media_type,
        config=config,
        layers=tuple(layers),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def _check_image_kind(
    config: Descriptor,
    artifact_type: str,
    artifact_types: tuple[str, ...],
    findings: list[Finding],
) -> bool:
    """Container images pass; an artifact passes only when the rule lists its
    type (F-14). True for an admitted artifact (no image config)."""
    if config.media_type == OCI_EMPTY and not artifact_type:
        findings.append(
            Finding.error(
                "format.artifact_type_required",
                f"config is {OCI_EMPTY} but artifactType is not set",
            )
        )
        return False
    if config.media_type in IMAGE_CONFIG_TYPES:
        if artifact_type and artifact_type not in artifact_types:
            findings.append(
                Finding.error(
                    "format.artifact_not_allowed",
                    f"got artifactType {artifact_type} on an image, expected none",
                    artifact_type=artifact_type,
                )
            )
        return False
    # The artifact's type: artifactType when set, else the config's media type
    # (an empty config always has an artifactType by now).
    kind = artifact_type or config.media_type
    if kind in artifact_types:
        return True
    findings.append(
        Finding.error(
            "format.artifact_not_allowed",
            f"got artifact {kind}, expected a container image or an allowed artifact type",
            artifact_type=artifact_type,
            config_media_type=config.media_type,
        )
    )
    return False


def _parse_index(
    document: dict[str, Any],
    media_type: str,
    limits: Limits,
    artifact_types: tuple[str, ...],
    findings: list[Finding],
) -> ManifestSummary:
    subject, artifact_type, annotations = _parse_common(document, findings)
    if artifact_type and artifact_type not in artifact_types:
        findings.append(
            Finding.error(
                "format.artifact_not_allowed",
                f"got index artifactType {artifact_type}, expected none",
                artifact_type=artifact_type,
            )
        )
    entries: list[Descriptor] = []
    raw_entries = document.get("manifests")
    if not isinstance(raw_entries, list):
        findings.append(Finding.error("format.invalid_manifest", "manifests must be a list"))
    elif len(raw_entries) > limits.index_entries:
        findings.append(
            Finding.error(
                "format.too_many_entries",
                f"got {len(raw_entries)} index entries, limit {limits.index_entries}",
            )
        )
    else:
        # Docker manifest lists make platform REQUIRED; OCI indexes do not.
        platform_required = media_type == DOCKER_LIST
        for i, raw in enumerate(raw_entries):
            where = f"manifests[{i}]"
            entry = parse_descriptor(raw, where, findings, with_platform=True)
            if entry is None:
                continue
            if entry.media_type not in KNOWN_TYPES:
                findings.append(
                    Finding.error(
                        "format.unknown_mediatype",
                        f"{where}: got {entry.media_type}, expected a manifest or index type",
                        media_type=entry.media_type,
                    )
                )
            elif platform_required and not entry.platform:
                findings.append(
                    Finding.error("format.invalid_descriptor", f"{where}: platform is required")
                )
            entries.append(entry)
        # A runtime runs the first match: no two entries may claim one platform.
        findings.extend(duplicate_platforms(raw_entries))
    return ManifestSummary(
        kind="index",
        media_type=media_type,
        manifests=tuple(entries),
        subject=subject,
        artifact_type=artifact_type,
        annotations=annotations,
    )


def read_staged(staging_store: StagingStore, session: str, key: str, limit: int) -> bytes:
    """At most ``limit + 1`` staged bytes: enough for the size check to be exact."""
    with staging_store.open(session, key) as handle:
        return handle.read(limit + 1)


def check_staged_manifest(
    staging_store: StagingStore,
    session: str,
    key: str,
    content_type: str,
    limits: Limits,
    layer_media_types: tuple[str, ...] = (),
    artifact_types: tuple[str, ...] = (),
) -> ManifestResult:
    """:func:`check_manifest` over the bytes staged under ``key``."""
    data = read_staged(staging_store, session, key, limits.manifest_bytes)
    return check_manifest(data, content_type, limits, layer_media_types, artifact_types)
