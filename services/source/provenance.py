"""Where the image says it comes from, and what signed evidence proves it.

Two kinds of source evidence, never confused (THREATS S-02):

- the ``org.opencontainers.image.source`` annotation of the manifest (or
  index) is an unsigned claim. A rule may require it to name an approved
  source (``source.unapproved_source`` otherwise): a filter that refuses,
  never trust that admits. An approved annotation is recorded as INFO and
  relaxes nothing else.
- a SLSA provenance statement that the signature layer verified (its
  signature against ``rule.provenance.signers``, its subject against this
  image) is the strongest source evidence there is. A rule that requires
  provenance admits only an image with one whose predicate type is SLSA
  provenance, whose builder is approved and whose source repository matches
  (``source.provenance_*`` otherwise). Annotations that merely say
  ``predicateType: https://slsa.dev/provenance/v1`` never count: only what
  the signature layer read inside the verified statement reaches this module.

A manifest reached through an admitted parent index (``plan.parent_index``)
may rely on that index's evidence: the index's digest fixes the child's
digest, and the index was admitted under the same policy version. So a child
without an annotation of its own passes the annotation rule, and provenance
whose subject is the parent index counts for the child.

Patterns (``approved_sources``, ``source_repositories``) are exact strings,
or globs where ``*`` stands for one or more characters other than ``/``.
Values are compared exactly: no case folding, no trailing-slash or ``.git``
tricks; a value with whitespace, control or non-ASCII characters matches
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.findings import Finding
from pullguard.services.runtime.patterns import printable_ascii, value_matches

SOURCE_ANNOTATION = "org.opencontainers.image.source"
#: Predicate types of SLSA provenance; nothing else is provenance.
SLSA_PROVENANCE_TYPES = ("https://slsa.dev/provenance/v0.2", "https://slsa.dev/provenance/v1")
#: Verified provenance statements examined per request (cosign's own bound
#: on signatures and attestations per image is 100).
MAX_PROVENANCE = 100


@dataclass(frozen=True)
class SourceRule:
    """The parts of a policy rule the source layer enforces."""

    foreign_url_hosts: tuple[str, ...] = ()
    approved_sources: tuple[str, ...] = ()
    require_source_annotation: bool = False
    provenance_required: bool = False
    builder_ids: tuple[str, ...] = ()
    source_repositories: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifiedProvenance:
    """A SLSA provenance statement the signature layer verified."""

    predicate_type: str
    builder_id: str
    source_repository: str
    subject_digest: str
    source_digest: str = ""
    signer: str = ""
    found_at: str = ""


@dataclass(frozen=True)
class ManifestEvidence:
    """What the manifest stage knows about the manifest itself."""

    #: The manifest digest hashverify computed.
    digest: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: An admitted index of this repository that lists the manifest, if any.
    parent_index: str = ""
    provenance: tuple[VerifiedProvenance, ...] = ()


def _listed(patterns: tuple[str, ...]) -> str:
    return ", ".join(patterns)[:200] or "(none approved)"


def annotation_findings(rule: SourceRule, evidence: ManifestEvidence) -> list[Finding]:
    """Findings for the ``org.opencontainers.image.source`` annotation."""
    claimed = evidence.annotations.get(SOURCE_ANNOTATION)
    if claimed is None:
        if not rule.require_source_annotation:
            return []
        if evidence.parent_index:
            return [
                Finding.info(
                    "source.annotation_from_parent_index",
                    f"no {SOURCE_ANNOTATION} of its own; the admitted index"
                    f" {evidence.parent_index} that lists it passed this rule",
                    index=evidence.parent_index,
                )
            ]
        return [
            Finding.error(
                "source.unapproved_source",
                f"got no {SOURCE_ANNOTATION} annotation,"
                f" expected one of [{_listed(rule.approved_sources)}]",
            )
        ]
    if value_matches(claimed, rule.approved_sources):
        return [
            Finding.info(
                "source.provenance_annotation",
                f"unverified {SOURCE_ANNOTATION}: {claimed[:300]} (an approved source;"
                " an annotation grants no trust)",
                value=claimed,
                approved="yes",
            )
        ]
    if rule.require_source_annotation or rule.approved_sources:
        make = Finding.error if rule.require_source_annotation else Finding.warning
        return [
            make(
                "source.unapproved_source",
                f"got {SOURCE_ANNOTATION} {claimed[:300]!r},"
                f" expected one of [{_listed(rule.approved_sources)}]",
                value=claimed,
            )
        ]
    # S-02: without a rule about it, the annotation is a claim for the report.
    return [
        Finding.info(
            "source.provenance_annotation",
            f"unverified {SOURCE_ANNOTATION}: {claimed[:300]}",
            value=claimed,
        )
    ]


#: How far a statement got, for reporting the closest miss.
_STAGES = (
    "source.provenance_missing",
    "source.provenance_subject_mismatch",
    "source.provenance_builder_mismatch",
    "source.provenance_source_mismatch",
)


def _judge(
    entry: VerifiedProvenance, rule: SourceRule, subjects: frozenset[str]
) -> tuple[int, str] | None:
    """None when ``entry`` satisfies the rule, else (stage, got/expected text)."""
    if entry.predicate_type not in SLSA_PROVENANCE_TYPES:
        return 0, (
            f"got predicate type {entry.predicate_type[:120]!r},"
            f" expected one of [{', '.join(SLSA_PROVENANCE_TYPES)}]"
        )
    if entry.subject_digest not in subjects:
        return 1, (
            f"got a statement about {entry.subject_digest[:140] or '(no subject)'},"
            f" expected {' or '.join(sorted(subjects))}"
        )
    if not printable_ascii(entry.builder_id) or (
        rule.builder_ids and entry.builder_id not in rule.builder_ids
    ):
        return 2, (
            f"got builder {entry.builder_id[:200] or '(none)'!r},"
            f" expected one of [{_listed(rule.builder_ids)}]"
        )
    if not printable_ascii(entry.source_repository) or (
        rule.source_repositories
        and not value_matches(entry.source_repository, rule.source_repositories)
    ):
        return 3, (
            f"got source repository {entry.source_repository[:200] or '(none)'!r},"
            f" expected one of [{_listed(rule.source_repositories)}]"
        )
    return None


def provenance_findings(rule: SourceRule, evidence: ManifestEvidence) -> list[Finding]:
    """Findings for the verified SLSA provenance against ``rule.provenance``.

    Builder ids are exact; an empty ``builder_ids`` or ``source_repositories``
    accepts any value, but a statement must name a builder and a source
    repository to count at all.
    """
    entries = evidence.provenance[:MAX_PROVENANCE]
    if entries and not evidence.digest:
        # Provenance that cannot be bound to this manifest proves nothing.
        raise InvalidRequest("verified provenance given without the manifest digest")
    if not entries and not rule.provenance_required:
        return []
    subjects = frozenset(d for d in (evidence.digest, evidence.parent_index) if d)
    closest: tuple[int, str] | None = None
    for entry in entries:
        miss = _judge(entry, rule, subjects)
        if miss is None:
            return [_verified(entry, evidence)]
        if closest is None or miss[0] > closest[0]:
            closest = miss
    make = Finding.error if rule.provenance_required else Finding.warning
    if closest is None:
        return [
            make(
                "source.provenance_missing",
                "got no verified SLSA provenance, expected one from an approved builder"
                f" and source [{_listed(rule.source_repositories)}]",
            )
        ]
    stage, detail = closest
    return [make(_STAGES[stage], f"signed provenance: {detail}", statements=len(entries))]


def _verified(entry: VerifiedProvenance, evidence: ManifestEvidence) -> Finding:
    source = entry.source_repository
    if entry.source_digest:
        source = f"{source}@{entry.source_digest}"
    via = ""
    if entry.subject_digest != evidence.digest:
        via = f" (through index {entry.subject_digest})"
    return Finding.info(
        "source.provenance_verified",
        f"built by {entry.builder_id} from {source}, signed by {entry.signer or '(unnamed)'}{via}",
        builder=entry.builder_id,
        source=entry.source_repository,
        source_digest=entry.source_digest,
        signer=entry.signer,
        found_at=entry.found_at,
        predicate_type=entry.predicate_type,
    )
