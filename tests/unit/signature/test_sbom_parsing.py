"""The package list of a signed SBOM predicate: CycloneDX and SPDX JSON, and hostile ones.

The documents follow what syft and trivy write (CycloneDX 1.4/1.5:
``components[]`` with ``purl``, ``metadata.component`` for the image;
SPDX 2.3: ``packages[]`` with a ``PACKAGE-MANAGER`` purl in ``externalRefs``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pullguard.services.runtime.purl import PurlError, parse_purl
from pullguard.services.signature.sbom import (
    CYCLONEDX,
    MAX_COMPONENTS,
    MAX_DEPTH,
    SBOM_INVALID,
    SBOM_LIMIT,
    SPDX,
    SbomError,
    read_sbom,
    sbom_format,
)
from pullguard.services.signature.strictjson import loads_strict

LIBLZMA5 = "pkg:deb/debian/liblzma5@5.6.0-0.2?arch=amd64&upstream=xz-utils&distro=debian-13"

CYCLONEDX_15: dict[str, Any] = {
    "$schema": "http://cyclonedx.org/schema/bom-1.5.schema.json",
    "bomFormat": "CycloneDX",
    "specVersion": "1.5",
    "serialNumber": "urn:uuid:1b671687-395b-41f5-a30f-a58921a69b79",
    "version": 1,
    "metadata": {
        "timestamp": "2026-12-01T10:00:00Z",
        "tools": {"components": [{"type": "application", "author": "anchore", "name": "syft"}]},
        "component": {
            "bom-ref": "image",
            "type": "container",
            "name": "registry.example/app",
            "version": "sha256:" + "11" * 32,
        },
    },
    "components": [
        {
            "bom-ref": "pkg:deb/debian/liblzma5",
            "type": "library",
            "publisher": "Sebastian Andrzej Siewior",
            "name": "liblzma5",
            "version": "5.6.0-0.2",
            "licenses": [{"license": {"id": "PD"}}],
            "cpe": "cpe:2.3:a:liblzma5:liblzma5:5.6.0-0.2:*:*:*:*:*:*:*",
            "purl": LIBLZMA5,
            "properties": [{"name": "syft:package:type", "value": "deb"}],
        },
        {
            "type": "application",
            "name": "/usr/local/bin/app",
            "version": "",
            "components": [
                {
                    "type": "library",
                    "name": "golang.org/x/net",
                    "version": "v0.10.0",
                    "purl": "pkg:golang/golang.org/x/net@v0.10.0",
                }
            ],
        },
        {
            "type": "library",
            "name": "Jinja2",
            "version": "3.1.2",
            "purl": "pkg:pypi/jinja2@3.1.2",
        },
        {"type": "library", "name": "@babel/core", "purl": "pkg:npm/%40babel/core@7.22.0"},
        {
            "type": "library",
            "name": "log4j-core",
            "purl": "pkg:maven/org.apache.logging.log4j/log4j-core@2.14.1",
        },
        {"type": "file", "name": "/etc/passwd"},
        {"type": "library", "name": "thing", "purl": "pkg:generic/thing@1.0"},
    ],
}

CYCLONEDX_14 = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.4",
    "version": 1,
    "components": [
        {
            "type": "library",
            "name": "busybox",
            "version": "1.36.1-r2",
            "purl": "pkg:apk/alpine/busybox@1.36.1-r2?arch=x86_64&distro=alpine-3.20.3",
        },
        {
            "type": "library",
            "name": "openssl-libs",
            "version": "1:3.0.7-27.el9",
            "purl": "pkg:rpm/redhat/openssl-libs@3.0.7-27.el9?arch=x86_64&epoch=1&distro=rhel-9.4",
        },
    ],
}

SPDX_23: dict[str, Any] = {
    "spdxVersion": "SPDX-2.3",
    "dataLicense": "CC0-1.0",
    "SPDXID": "SPDXRef-DOCUMENT",
    "name": "registry.example/app",
    "documentNamespace": "https://anchore.com/syft/image/app-5d3e",
    "creationInfo": {"created": "2026-12-01T10:00:00Z", "creators": ["Tool: syft-1.18.0"]},
    "packages": [
        {
            "name": "liblzma5",
            "SPDXID": "SPDXRef-Package-deb-liblzma5",
            "versionInfo": "5.6.0-0.2",
            "downloadLocation": "NOASSERTION",
            "externalRefs": [
                {
                    "referenceCategory": "SECURITY",
                    "referenceType": "cpe23Type",
                    "referenceLocator": "cpe:2.3:a:liblzma5:liblzma5:5.6.0-0.2:*:*:*:*:*:*:*",
                },
                {
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": LIBLZMA5,
                },
            ],
        },
        {
            "name": "jinja2",
            "SPDXID": "SPDXRef-Package-python-jinja2",
            "versionInfo": "3.1.2",
            "externalRefs": [
                {
                    "referenceCategory": "PACKAGE_MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": "pkg:pypi/Jinja2",
                }
            ],
        },
        {"name": "no-refs", "SPDXID": "SPDXRef-x", "versionInfo": "1"},
    ],
    "relationships": [],
}


def rows(kind: str, document: Any) -> list[tuple[str, str, str]]:
    return [(p.ecosystem, p.name, p.version) for p in read_sbom(kind, document).packages]


def test_predicate_types_from_the_signed_statement() -> None:
    assert sbom_format("https://cyclonedx.org/bom") == CYCLONEDX
    assert sbom_format("https://cyclonedx.org/bom/v1.5") == CYCLONEDX
    assert sbom_format("https://spdx.dev/Document") == SPDX
    assert sbom_format("https://spdx.dev/Document/v2.3") == SPDX
    for other in (
        "https://slsa.dev/provenance/v1",
        "https://cosign.sigstore.dev/attestation/vuln/v1",
        "https://cyclonedx.org/bomb",
        "https://spdx.dev/Document/v2.3/" + "x" * 100,
    ):
        assert sbom_format(other) is None


def test_cyclonedx_15_components_with_purls() -> None:
    contents = read_sbom(CYCLONEDX, CYCLONEDX_15)
    assert [(p.ecosystem, p.name, p.version) for p in contents.packages] == [
        ("Debian:13", "liblzma5", "5.6.0-0.2"),
        ("PyPI", "jinja2", "3.1.2"),
        ("npm", "@babel/core", "7.22.0"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"),
        ("Go", "golang.org/x/net", "v0.10.0"),  # nested in the binary's component
    ]
    xz = contents.packages[0]
    assert (xz.source_name, xz.arch, xz.purl) == ("xz-utils", "amd64", LIBLZMA5)
    # The binary (no purl), a file and a generic purl: not matchable.
    assert contents.skipped == 3 and contents.problems == []


def test_cyclonedx_14_os_packages_take_the_release_from_distro() -> None:
    assert rows(CYCLONEDX, CYCLONEDX_14) == [
        ("Alpine:v3.20", "busybox", "1.36.1-r2"),
        ("Red Hat:enterprise_linux:9", "openssl-libs", "1:3.0.7-27.el9"),
    ]


def test_spdx_23_packages_with_package_manager_purls() -> None:
    contents = read_sbom(SPDX, SPDX_23)
    # versionInfo fills a purl without a version.
    assert rows(SPDX, SPDX_23) == [
        ("Debian:13", "liblzma5", "5.6.0-0.2"),
        ("PyPI", "jinja2", "3.1.2"),
    ]
    assert contents.skipped == 1


def test_a_predicate_parsed_by_the_strict_loader_reads_the_same() -> None:
    parsed = loads_strict(json.dumps(CYCLONEDX_15).encode())
    assert rows(CYCLONEDX, parsed) == rows(CYCLONEDX, CYCLONEDX_15)


# -- hostile SBOMs: a finding naming what is wrong, never a crash ------------


@pytest.mark.parametrize(
    ("kind", "document", "says"),
    [
        (CYCLONEDX, "a string", "predicate is a string"),
        (CYCLONEDX, [1, 2], "predicate is an array"),
        (CYCLONEDX, {"bomFormat": "SPDX"}, "bomFormat"),
        (CYCLONEDX, {"components": {"a": 1}}, "components is an object"),
        (SPDX, {"packages": []}, "spdxVersion"),
        (SPDX, {"spdxVersion": "SPDX-2.3", "packages": "x"}, "packages is a string"),
    ],
)
def test_documents_that_are_not_sboms_raise(kind: str, document: Any, says: str) -> None:
    with pytest.raises(SbomError) as raised:
        read_sbom(kind, document)
    assert says in str(raised.value) and raised.value.code == SBOM_INVALID


def test_wrong_types_inside_are_skipped_and_named() -> None:
    document = {
        "bomFormat": "CycloneDX",
        "components": [
            "not an object",
            {"purl": 42},
            {"purl": "http://not-a-purl"},
            {"purl": "pkg:pypi/ok@1.0", "components": "nope"},
            {"purl": "pkg:pypi/" + "n" * 600 + "@1"},
        ],
    }
    contents = read_sbom(CYCLONEDX, document)
    assert [p.name for p in contents.packages] == ["ok"]
    messages = [m for _, m in contents.problems]
    assert {c for c, _ in contents.problems} == {SBOM_INVALID}
    assert any("components[0] is a string" in m for m in messages)
    assert any("components[1].purl" in m for m in messages)
    assert any("components[3].components is not an array" in m for m in messages)
    assert any("longer than 512" in m for m in messages)


def test_huge_component_count_is_cut_at_the_bound() -> None:
    components = [{"purl": f"pkg:npm/p{i}@1.0.0"} for i in range(MAX_COMPONENTS + 10)]
    contents = read_sbom(CYCLONEDX, {"bomFormat": "CycloneDX", "components": components})
    assert len(contents.packages) == MAX_COMPONENTS
    assert contents.problems[0][0] == SBOM_LIMIT


def test_deep_nesting_stops_at_the_bound() -> None:
    node: dict[str, Any] = {"purl": "pkg:npm/deepest@1.0.0"}
    for i in range(MAX_DEPTH + 5):
        node = {"purl": f"pkg:npm/level{i}@1.0.0", "components": [node]}
    contents = read_sbom(CYCLONEDX, {"bomFormat": "CycloneDX", "components": [node]})
    assert len(contents.packages) == MAX_DEPTH
    assert [c for c, _ in contents.problems] == [SBOM_LIMIT]
    assert "deeper than 16" in contents.problems[0][1]


def test_problems_kept_are_bounded() -> None:
    components = ["x"] * 10_000
    contents = read_sbom(CYCLONEDX, {"bomFormat": "CycloneDX", "components": components})
    assert len(contents.problems) == 8 and contents.packages == []


def test_purl_parsing() -> None:
    parsed = parse_purl("pkg:npm/%40scope/na%2Fme@1.0.0?Arch=x&b=%41#sub/path")
    assert (parsed.kind, parsed.namespace, parsed.name, parsed.version) == (
        "npm",
        ("@scope",),
        "na/me",
        "1.0.0",
    )
    assert dict(parsed.qualifiers) == {"arch": "x", "b": "A"}
    assert parse_purl("pkg:golang/golang.org/x/net").version == ""
    for bad in ("", "npm/x@1", "pkg:x", "pkg:/@1", "pkg:" + "a" * 2000, "pkg:9bad/x@1"):
        with pytest.raises(PurlError):
            parse_purl(bad)
