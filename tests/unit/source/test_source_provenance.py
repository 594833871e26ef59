"""Source annotations and signed provenance: THREATS S-02, issue 4's SLSA rule."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pullguard.services.runtime.errors import InvalidRequest
from pullguard.services.runtime.findings import Severity, Verdict
from pullguard.services.runtime.patterns import value_matches as matches
from pullguard.services.source.checks import (
    DescriptorUrls,
    Exchange,
    UpstreamSource,
    check_source,
)
from pullguard.services.source.provenance import (
    SOURCE_ANNOTATION,
    ManifestEvidence,
    SourceRule,
    VerifiedProvenance,
)

DIGEST = "sha256:" + "d" * 64
INDEX = "sha256:" + "e" * 64
BLOB = "sha256:" + "b" * 64
HUB = UpstreamSource(
    url="https://registry-1.docker.io",
    redirect_hosts=("production.cloudflare.docker.com",),
    spki_sha256=("a" * 64,),
)
MANIFEST = Exchange(
    url="https://registry-1.docker.io/v2/org/app/manifests/1",
    purpose="manifest",
    tls_spki_sha256="a" * 64,
)
APP = "https://github.com/org/app"
GHA = "https://github.com/actions/runner/github-hosted"
SLSA1 = "https://slsa.dev/provenance/v1"

REQUIRE_SOURCE = SourceRule(
    approved_sources=(APP, "https://github.com/trusted/*"), require_source_annotation=True
)
REQUIRE_PROVENANCE = SourceRule(
    provenance_required=True,
    builder_ids=(GHA,),
    source_repositories=("https://github.com/org/*",),
)
GOOD = VerifiedProvenance(
    predicate_type=SLSA1,
    builder_id=GHA,
    source_repository=APP,
    subject_digest=DIGEST,
    source_digest="sha1:" + "1" * 40,
    signer="https://token.actions.githubusercontent.com https://github.com/org/app/.github/workflows/release.yml@refs/tags/v1",
    found_at="referrer:sha256:" + "f" * 64,
)


def check(
    rule: SourceRule,
    annotations: dict[str, str] | None = None,
    provenance: tuple[VerifiedProvenance, ...] = (),
    parent_index: str = "",
    exchanges: tuple[Exchange, ...] = (MANIFEST,),
    descriptors: tuple[DescriptorUrls, ...] = (),
) -> Verdict:
    evidence = ManifestEvidence(
        digest=DIGEST,
        annotations=annotations or {},
        parent_index=parent_index,
        provenance=provenance,
    )
    return check_source(HUB, exchanges, descriptors, rule, evidence)


def found(verdict: Verdict) -> list[tuple[str, Severity]]:
    return [(f.code, f.severity) for f in verdict.findings]


def errors(verdict: Verdict) -> list[str]:
    return [f.code for f in verdict.findings if f.severity is Severity.ERROR]


# ---------------------------------------------------------------- S-02 annotations


def test_s02_source_annotation_is_recorded_not_trusted() -> None:
    verdict = check(SourceRule(), {SOURCE_ANNOTATION: "https://github.com/kubernetes/kubernetes"})
    assert found(verdict) == [("source.provenance_annotation", Severity.INFO)]


def test_s02_required_annotation_absent() -> None:
    verdict = check(REQUIRE_SOURCE, {})
    assert errors(verdict) == ["source.unapproved_source"]


def test_s02_required_annotation_not_approved() -> None:
    verdict = check(REQUIRE_SOURCE, {SOURCE_ANNOTATION: "https://github.com/kubernetes/kubernetes"})
    assert errors(verdict) == ["source.unapproved_source"]


@pytest.mark.parametrize("value", [APP, "https://github.com/trusted/tool"])
def test_s02_required_annotation_approved_is_info_only(value: str) -> None:
    verdict = check(REQUIRE_SOURCE, {SOURCE_ANNOTATION: value})
    assert found(verdict) == [("source.provenance_annotation", Severity.INFO)]
    assert verdict.findings[0].evidence["approved"] == "yes"


def test_s02_unapproved_annotation_without_requirement_is_a_warning() -> None:
    rule = replace(REQUIRE_SOURCE, require_source_annotation=False)
    verdict = check(rule, {SOURCE_ANNOTATION: "https://github.com/other/app"})
    assert verdict.allowed
    assert found(verdict) == [("source.unapproved_source", Severity.WARNING)]
    assert check(rule, {}).findings == ()


def test_s02_required_with_nothing_approved_denies_everything() -> None:
    rule = SourceRule(require_source_annotation=True)
    assert errors(check(rule, {SOURCE_ANNOTATION: APP})) == ["source.unapproved_source"]


def test_s02_other_annotations_change_nothing() -> None:
    annotations = {
        "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
        "org.opencontainers.image.base.name": "docker.io/library/debian:12",
        "org.opencontainers.image.vendor": "Docker",
        "org.opencontainers.image.url": APP,
    }
    assert errors(check(REQUIRE_SOURCE, annotations)) == ["source.unapproved_source"]


def test_s02_child_of_an_admitted_index_relies_on_the_index() -> None:
    verdict = check(REQUIRE_SOURCE, {}, parent_index=INDEX)
    assert found(verdict) == [("source.annotation_from_parent_index", Severity.INFO)]
    # A child's own annotation is judged, parent or not.
    own = check(REQUIRE_SOURCE, {SOURCE_ANNOTATION: "https://x.example/y"}, parent_index=INDEX)
    assert errors(own) == ["source.unapproved_source"]


def denials() -> dict[str, dict[str, object]]:
    evil = "https://evil.example/blob"
    return {
        "redirect": {
            "exchanges": (
                MANIFEST,
                Exchange(url=MANIFEST.url, purpose="blob", location=evil, tls_spki_sha256="a" * 64),
            )
        },
        "unexpected host": {"exchanges": (MANIFEST, Exchange(url=evil, purpose="blob"))},
        "tls": {"exchanges": (replace(MANIFEST, tls_spki_sha256="c" * 64),)},
        "no provenance": {"exchanges": ()},
        "foreign layer": {"descriptors": (DescriptorUrls(BLOB, "", (evil,)),)},
        "provenance": {"rule": replace(REQUIRE_SOURCE, provenance_required=True)},
        "builder": {
            "rule": replace(REQUIRE_SOURCE, provenance_required=True, builder_ids=("x",)),
            "provenance": (GOOD,),
        },
    }


@pytest.mark.parametrize("case", sorted(denials()))
def test_s02_an_approved_annotation_rescues_no_denial(case: str) -> None:
    kwargs = dict(denials()[case])
    rule = kwargs.pop("rule", REQUIRE_SOURCE)
    verdict = check(rule, {SOURCE_ANNOTATION: APP}, **kwargs)  # type: ignore[arg-type]
    assert not verdict.allowed
    assert ("source.provenance_annotation", Severity.INFO) in found(verdict)


@pytest.mark.parametrize(
    ("value", "approved"),
    [
        ("https://github.com/trusted/tool", True),
        ("https://github.com/trusted/", False),  # "*" is at least one character
        ("https://github.com/trusted/tool/sub", False),  # ... never a "/"
        ("https://github.com/trustedx/tool", False),
        ("https://github.com/Trusted/tool", False),  # no case folding
        ("https://github.com/trusted/tool ", False),
        ("https://github.com/trusted/tool\n", False),
        ("https://github.com/trusted/t\u043eol", False),  # homoglyph
        ("https://github.com/org/app", True),
        ("https://github.com/org/app.git", False),  # exact means exact
        ("https://github.com/org/app/", False),
        ("", False),
    ],
)
def test_s02_pattern_matching(value: str, approved: bool) -> None:
    assert matches(value, REQUIRE_SOURCE.approved_sources) is approved


# ---------------------------------------------------------------- signed provenance


def test_provenance_verified_names_builder_and_source() -> None:
    verdict = check(REQUIRE_PROVENANCE, provenance=(GOOD,))
    assert found(verdict) == [("source.provenance_verified", Severity.INFO)]
    message = verdict.findings[0].message
    assert GHA in message and f"{APP}@sha1:" in message
    assert verdict.findings[0].evidence["found_at"] == GOOD.found_at


def test_provenance_slsa_v0_2_counts() -> None:
    v02 = replace(GOOD, predicate_type="https://slsa.dev/provenance/v0.2")
    assert check(REQUIRE_PROVENANCE, provenance=(v02,)).allowed


def test_provenance_missing() -> None:
    assert errors(check(REQUIRE_PROVENANCE)) == ["source.provenance_missing"]


@pytest.mark.parametrize(
    "predicate_type",
    [
        "https://slsa.dev/provenance/v0.1",
        "https://in-toto.io/attestation/vulns",
        "https://cosign.sigstore.dev/attestation/v1",
        SLSA1 + " ",
        SLSA1.upper(),
        "",
    ],
)
def test_provenance_of_another_predicate_type_is_no_provenance(predicate_type: str) -> None:
    other = replace(GOOD, predicate_type=predicate_type)
    assert errors(check(REQUIRE_PROVENANCE, provenance=(other,))) == ["source.provenance_missing"]


def test_s02_predicate_type_annotation_is_not_provenance() -> None:
    # cosign shows predicateType as an unsigned layer annotation (cosign #3235);
    # only the type inside the verified statement reaches this layer.
    annotations = {"predicateType": SLSA1, "dev.cosignproject.cosign/predicateType": SLSA1}
    assert errors(check(REQUIRE_PROVENANCE, annotations)) == ["source.provenance_missing"]
    vulns = replace(GOOD, predicate_type="https://cosign.sigstore.dev/attestation/vuln/v1")
    verdict = check(REQUIRE_PROVENANCE, annotations, provenance=(vulns,))
    assert errors(verdict) == ["source.provenance_missing"]


@pytest.mark.parametrize("builder", ["https://github.com/attacker/runner", "", GHA + "/"])
def test_provenance_builder_mismatch(builder: str) -> None:
    other = replace(GOOD, builder_id=builder)
    verdict = check(REQUIRE_PROVENANCE, provenance=(other,))
    assert errors(verdict) == ["source.provenance_builder_mismatch"]


@pytest.mark.parametrize(
    "source",
    [
        "https://github.com/attacker/app",
        "https://github.com/org/app/../../attacker/app",
        "git+https://github.com/org/app@refs/heads/main",
        "",
    ],
)
def test_provenance_source_mismatch(source: str) -> None:
    other = replace(GOOD, source_repository=source)
    verdict = check(REQUIRE_PROVENANCE, provenance=(other,))
    assert errors(verdict) == ["source.provenance_source_mismatch"]


def test_provenance_for_another_image() -> None:
    other = replace(GOOD, subject_digest="sha256:" + "0" * 64)
    verdict = check(REQUIRE_PROVENANCE, provenance=(other,))
    assert errors(verdict) == ["source.provenance_subject_mismatch"]


def test_provenance_on_the_admitted_parent_index_counts() -> None:
    on_index = replace(GOOD, subject_digest=INDEX)
    assert errors(check(REQUIRE_PROVENANCE, provenance=(on_index,))) == [
        "source.provenance_subject_mismatch"
    ]
    verdict = check(REQUIRE_PROVENANCE, provenance=(on_index,), parent_index=INDEX)
    assert found(verdict) == [("source.provenance_verified", Severity.INFO)]
    assert INDEX in verdict.findings[0].message


def test_provenance_any_builder_and_source_when_the_rule_names_none() -> None:
    rule = SourceRule(provenance_required=True)
    assert check(rule, provenance=(replace(GOOD, builder_id="https://b.example/x"),)).allowed
    # ... but a statement that names no builder or source is no source evidence.
    assert errors(check(rule, provenance=(replace(GOOD, builder_id=""),))) == [
        "source.provenance_builder_mismatch"
    ]
    assert errors(check(rule, provenance=(replace(GOOD, source_repository=""),))) == [
        "source.provenance_source_mismatch"
    ]


def test_provenance_one_good_statement_among_bad_ones() -> None:
    bad = replace(GOOD, builder_id="https://github.com/attacker/runner")
    assert check(REQUIRE_PROVENANCE, provenance=(bad, bad, GOOD)).allowed


def test_provenance_reports_the_closest_miss() -> None:
    statements = (
        replace(GOOD, predicate_type="https://in-toto.io/attestation/vulns"),
        replace(GOOD, source_repository="https://github.com/attacker/app"),
        replace(GOOD, builder_id="https://github.com/attacker/runner"),
    )
    verdict = check(REQUIRE_PROVENANCE, provenance=statements)
    assert errors(verdict) == ["source.provenance_source_mismatch"]


def test_provenance_not_required() -> None:
    rule = replace(REQUIRE_PROVENANCE, provenance_required=False)
    assert check(rule).findings == ()
    assert found(check(rule, provenance=(GOOD,))) == [("source.provenance_verified", Severity.INFO)]
    bad = replace(GOOD, source_repository="https://github.com/attacker/app")
    verdict = check(rule, provenance=(bad,))
    assert verdict.allowed
    assert found(verdict) == [("source.provenance_source_mismatch", Severity.WARNING)]


def test_provenance_statements_are_bounded() -> None:
    bad = replace(GOOD, builder_id="https://github.com/attacker/runner")
    verdict = check(REQUIRE_PROVENANCE, provenance=(bad,) * 100 + (GOOD,))
    assert errors(verdict) == ["source.provenance_builder_mismatch"]


def test_provenance_without_the_manifest_digest_cannot_be_checked() -> None:
    evidence = ManifestEvidence(provenance=(GOOD,))
    with pytest.raises(InvalidRequest):
        check_source(HUB, [MANIFEST], (), REQUIRE_PROVENANCE, evidence)


def test_verified_provenance_rescues_no_transport_denial() -> None:
    evil = Exchange(url="https://evil.example/blob", purpose="blob")
    verdict = check(REQUIRE_PROVENANCE, provenance=(GOOD,), exchanges=(MANIFEST, evil))
    assert errors(verdict) == ["source.unexpected_host"]


def test_blob_stage_judges_no_annotation_or_provenance() -> None:
    rule = replace(REQUIRE_PROVENANCE, require_source_annotation=True)
    assert check_source(HUB, [MANIFEST], (), rule, None).findings == ()
    assert errors(check(rule)) == ["source.unapproved_source", "source.provenance_missing"]
