"""Issue 13 part 4 through the whole stack: signed SBOMs as a second source.

Images built from Debian's own files (as tests/e2e/test_vulnerability_pull.py
builds them) are pushed to a real docker-registry on 127.0.0.1, signed with
the real cosign 2.5 (``cosign sign --key``) and given an SBOM with ``cosign
attest --key --type cyclonedx|spdxjson --predicate``; skopeo pulls them
through ``pullguard up``. The rule trusts one key (``ci``) for signatures and
so for SBOMs; the OSV fixtures hold CVE-2024-3094 (xz-utils, Debian:13) and
CVE-2023-39325 (golang.org/x/net < 0.17.0), both on the deny list.

- A signed SBOM naming a vulnerable Go module the scan cannot see (a
  statically linked binary without build info) denies, naming it and the SBOM.
- The same SBOM signed by another key is ignored: admitted, and the report
  says it was ignored (THREATS F-15(b)).
- A signed SBOM that lists a fixed liblzma5 where the scan found the
  vulnerable one hides nothing: denied, and the disagreement is reported.

One module-scoped stack serves every case.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_vulnerability_pull import FIXED, VULNERABLE, Stack, base_layer
from tests.support.cosign import cosign_binary, generate_key_pair
from tests.support.images import build_image, push
from tests.support.osv import osv_folder
from tests.support.registry_process import RegistryProcess
from tests.support.signers.cosign_cli import attest, sign_tag
from tests.support.stack import Pullguard, report_findings, write_config

pytestmark = pytest.mark.e2e

XNET = "v0.10.0"  # golang.org/x/net before 0.17.0: CVE-2023-39325
LIBC6 = "2.36-9+deb12u4"


def deb(name: str, version: str, source: str = "") -> str:
    upstream = f"&upstream={source}" if source else ""
    return f"pkg:deb/debian/{name}@{version}?arch=amd64{upstream}&distro=debian-13"


def cyclonedx(liblzma5: str, xnet: str | None) -> dict[str, Any]:
    """A CycloneDX 1.5 BOM as syft writes one for such an image."""
    components: list[dict[str, Any]] = [
        {
            "type": "library",
            "name": "libc6",
            "version": LIBC6,
            "purl": deb("libc6", LIBC6, "glibc"),
        },
        {
            "type": "library",
            "name": "liblzma5",
            "version": liblzma5,
            "purl": deb("liblzma5", liblzma5, "xz-utils"),
        },
    ]
    if xnet is not None:
        components.append(
            {
                "type": "application",
                "name": "/usr/local/bin/server",
                "components": [
                    {
                        "type": "library",
                        "name": "golang.org/x/net",
                        "version": xnet,
                        "purl": f"pkg:golang/golang.org/x/net@{xnet}",
                    }
                ],
            }
        )
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {"component": {"type": "container", "name": "app"}},
        "components": components,
    }


def spdx(liblzma5: str) -> dict[str, Any]:
    """An SPDX 2.3 document listing only liblzma5, at ``liblzma5``."""
    return {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "app",
        "documentNamespace": "https://pullguard.test/spdx/app",
        "creationInfo": {"created": "2026-12-01T00:00:00Z", "creators": ["Tool: test"]},
        "packages": [
            {
                "name": "liblzma5",
                "SPDXID": "SPDXRef-Package-liblzma5",
                "versionInfo": liblzma5,
                "downloadLocation": "NOASSERTION",
                "externalRefs": [
                    {
                        "referenceCategory": "PACKAGE-MANAGER",
                        "referenceType": "purl",
                        "referenceLocator": deb("liblzma5", liblzma5, "xz-utils"),
                    }
                ],
            }
        ],
    }


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    if cosign_binary() is None:
        pytest.fail("cosign is not installed: run `make system-deps`")
    root = Path(tempfile.mkdtemp(prefix="pgs-"))
    upstream = RegistryProcess(root / "upstream")
    upstream.start()
    pg: Pullguard | None = None
    try:
        ci_key, ci_pub = generate_key_pair(root / "keys" / "ci")
        mallory_key, _ = generate_key_pair(root / "keys" / "mallory")
        fixed = build_image(root / "src" / "fixed", "v1", [base_layer(FIXED)])
        vulnerable = build_image(root / "src" / "vuln", "v1", [base_layer(VULNERABLE)])
        cases = [
            ("sbom/static", fixed, ci_key, cyclonedx(FIXED, XNET), "cyclonedx"),
            ("sbom/untrusted", fixed, mallory_key, cyclonedx(FIXED, XNET), "cyclonedx"),
            ("sbom/hiding", vulnerable, ci_key, spdx(FIXED), "spdxjson"),
        ]
        for repository, image, key, predicate, kind in cases:
            push(image, upstream.address, repository)
            reference = f"{upstream.address}/{repository}@{image.digest}"
            sign_tag(reference, ci_key)
            attest(reference, key, predicate, kind)
        path, config = write_config(
            root,
            upstream.url,
            vulnerabilities={
                "osv": str(osv_folder(root / "osv", ("Debian", "Go"))),
                "deny": {"ids": ["CVE-2024-3094", "CVE-2023-39325"]},
            },
            policy={"rules": [{"match": "lab/sbom/**", "signature": {"keys": [str(ci_pub)]}}]},
        )
        pg = Pullguard(path, config)
        pg.start()
        yield Stack(root, upstream, pg)
    finally:
        if pg is not None:
            pg.stop()
        upstream.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_a_signed_sbom_names_a_vulnerable_module_the_scan_cannot_see(stack: Stack) -> None:
    ok, stderr = stack.pull("sbom/static")
    assert not ok, "an image whose signed SBOM lists a vulnerable module was admitted"
    assert "golang.org/x/net" in stderr and "CVE-2023-39325" in stderr, stderr

    report = stack.check("sbom/static")
    assert report["decision"] == "DENY"
    [finding] = report_findings(report, "vulnerability", "vulnerability.advisory")
    assert finding["evidence"]["package"] == "golang.org/x/net"
    assert finding["evidence"]["installed_version"] == XNET
    [sbom] = report["vulnerabilities"]["sboms"]
    assert sbom["format"] == "cyclonedx" and sbom["signer"].endswith("cosign.pub")
    assert finding["evidence"]["origin"] == f"sbom {sbom['digest']}"
    assert "not found by the scan" in finding["message"]
    # The disagreement: only the SBOM lists the module (the SBOM lists two
    # of the real status file's packages: the rest are only in the scan).
    disagreements = report_findings(report, "vulnerability", "vulnerability.sbom_disagrees")
    [only] = [f for f in disagreements if f["evidence"]["disagreement"] == "sbom_only"]
    assert only["evidence"]["package"] == "golang.org/x/net"
    assert only["evidence"]["sbom"] == sbom["digest"]
    assert any(f["evidence"]["disagreement"] == "scan_only" for f in disagreements)


def test_an_sbom_signed_by_an_untrusted_key_is_ignored(stack: Stack) -> None:
    ok, stderr = stack.pull("sbom/untrusted")
    assert ok, stderr + stack.pg.log()[-3000:]
    report = stack.check("sbom/untrusted")
    assert report["decision"] == "ALLOW"
    ignored = report_findings(report, "signature", "signature.sbom_ignored")
    assert ignored and ignored[0]["evidence"]["rejected"] == "signature.untrusted_key", ignored
    assert "sboms" not in report["vulnerabilities"]
    assert all(m["origin"] == "scan" for m in report["vulnerabilities"]["matches"])


def test_a_signed_sbom_listing_a_fixed_version_hides_nothing(stack: Stack) -> None:
    ok, stderr = stack.pull("sbom/hiding")
    assert not ok, "a signed SBOM hid the scanned vulnerable liblzma5"
    assert "liblzma5" in stderr and "CVE-2024-3094" in stderr, stderr

    report = stack.check("sbom/hiding")
    assert report["decision"] == "DENY"
    [finding] = report_findings(report, "vulnerability", "vulnerability.advisory")
    assert finding["evidence"]["installed_version"] == VULNERABLE
    assert finding["evidence"]["origin"] == "scan"
    [sbom] = report["vulnerabilities"]["sboms"]
    assert sbom["format"] == "spdx"
    disagreements = report_findings(report, "vulnerability", "vulnerability.sbom_disagrees")
    [version] = [f for f in disagreements if f["evidence"]["disagreement"] == "version"]
    assert (version["evidence"]["scan_version"], version["evidence"]["sbom_version"]) == (
        VULNERABLE,
        FIXED,
    )
    assert sbom["digest"] in version["message"]
    scan_only = {
        f["evidence"]["package"]
        for f in disagreements
        if f["evidence"]["disagreement"] == "scan_only"
    }
    assert "libc6" in scan_only  # the SPDX document lists liblzma5 alone
    assert version["severity"] == "WARNING"
