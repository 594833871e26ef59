"""Issue 13 (6): the console and the JSON API show a decision's inventory and advisories.

A report as the gate records one (the merged inventory, each layer's own
inventory in ``layer_stats``, the vulnerability layer's matches and
findings) goes into a real decision log behind the real console app
(test_console's fixture). Package names come from images: the hostile ones
must render escaped on every page that shows them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pullguard.gateway.console.inventory import (
    image_os,
    package_layers,
    packages_page,
    severity,
    vulnerabilities,
    without_inventory,
)
from pullguard.services.runtime.errors import InvalidRequest
from tests.gateway.test_console import OPERATOR, TOKENS, VIEWER, Console, _console, _log_in

GATED = "b" * 32
HOSTILE = "<script>alert(2)</script>"
ESCAPED = "&lt;script&gt;alert(2)&lt;/script&gt;"
FIXED = "5.6.1+really5.4.5-1"
OS_RELEASE = {
    "path": "etc/os-release",
    "id": "debian",
    "version_id": "12",
    "pretty_name": "Debian GNU/Linux 12 (bookworm)",
}


def _deb(name: str, version: str, source: str = "") -> dict[str, str]:
    return {
        "ecosystem": "Debian",
        "name": name,
        "version": version,
        "purl": f"pkg:deb/debian/{name}@{version}?arch=amd64",
        "source_name": source,
        "source_version": "",
        "arch": "amd64",
    }


def _merged(entry: dict[str, str]) -> dict[str, str]:
    purl = entry["purl"].replace("?arch=amd64", "?arch=amd64&distro=debian-12")
    return {
        key: value for key, value in {**entry, "ecosystem": "Debian:12", "purl": purl}.items()
    } | {"arch": ""}


def gated_report(extra_packages: int = 0) -> dict[str, Any]:
    """A decision the gate denied: layer 1's dpkg status replaces layer 0's (an upgrade,
    so every Debian package is layer 1's), and layer 2 adds an npm package named like
    markup; os-release comes from layer 0."""
    base = [_deb("libc6", "2.36-9"), _deb("liblzma5", "5.6.0-0.2", "xz-utils")]
    upgraded = [_deb("libc6", "2.36-9"), _deb("liblzma5", FIXED, "xz-utils")]
    upgraded += [_deb(f"pkg{i:05d}", "1.0") for i in range(extra_packages)]
    hostile = {
        "ecosystem": "npm",
        "name": HOSTILE,
        "version": "1.0.0",
        "purl": "pkg:npm/%3Cscript%3E@1.0.0",
        "source_name": "",
        "source_version": "",
        "arch": "",
    }

    def layer(index: int, path: str, kind: str, packages: list[dict[str, str]]) -> dict[str, Any]:
        return {
            "digest": f"sha256:{index:064d}",
            "inventory": {
                "index": index,
                "sources": [{"path": path, "kind": kind, "packages": packages}],
                "removed": [],
                "os_release": OS_RELEASE if index == 0 else None,
                "incomplete": [],
            },
        }

    merged = [_merged(p) for p in upgraded] + [hostile]
    finding = {
        "code": "vulnerability.advisory",
        "severity": "ERROR",
        "message": f"xz-utils (liblzma5) {FIXED}: DEBIAN-CVE-2024-3094",
        "evidence": {
            "package": "xz-utils",
            "binary": "liblzma5",
            "installed_version": FIXED,
            "id": "DEBIAN-CVE-2024-3094",
        },
    }
    return {
        "decision_id": GATED,
        "time": "2098-01-01T00:00:00.000+00:00",
        "reference": "lab/team/vuln:v1",
        "repository": "lab/team/vuln",
        "decision": "DENY",
        "outcome": "denied",
        "denied_by": "vulnerability",
        "reason": "xz-utils: DEBIAN-CVE-2024-3094",
        "policy_version": "p1",
        "layers": [
            {
                "layer": "vulnerability",
                "step": "vulnerabilities",
                "decision": "DENY",
                "duration_ms": 3.0,
                "error": "",
                "findings": [finding],
            }
        ],
        "layer_stats": [
            layer(0, "var/lib/dpkg/status", "dpkg", base),
            layer(1, "var/lib/dpkg/status", "dpkg", upgraded),
            layer(2, "app/node_modules/x/package.json", "npm", [hostile]),
        ],
        "inventory": merged,
        "vulnerabilities": {
            "database": "sha256:feed",
            "matches": [
                {
                    "package": "glibc",
                    "ecosystem": "Debian:12",
                    "installed_version": "2.36-9",
                    "id": "DEBIAN-CVE-2023-4911",
                    "aliases": ["CVE-2023-4911"],
                    "fixed_version": "",
                    "cvss": 7.8,
                    "outcome": "allowed",
                    "reason": "allowed until 2099-12-31: no setuid binaries here (SEC-9)",
                },
                {
                    "package": "xz-utils",
                    "ecosystem": "Debian:12",
                    "installed_version": FIXED,
                    "id": "DEBIAN-CVE-2024-3094",
                    "aliases": ["CVE-2024-3094", HOSTILE],
                    "fixed_version": "5.6.1+really5.4.5-2",
                    "cvss": 10.0,
                    "outcome": "deny",
                    "reason": "listed in deny.ids (CVE-2024-3094)",
                },
            ],
        },
    }


# --- reading a report -------------------------------------------------------------------


def test_the_os_and_each_packages_layer_follow_the_merge() -> None:
    report = gated_report()
    assert image_os(report) == OS_RELEASE | {"path": "etc/os-release"}
    layers = package_layers(report)
    # Layer 1's status replaced layer 0's: its packages are layer 1's.
    assert layers[("Debian", "liblzma5", FIXED)] == 1
    assert ("Debian", "liblzma5", "5.6.0-0.2") not in layers
    assert layers[("npm", HOSTILE, "1.0.0")] == 2


def test_a_whiteout_takes_the_os_release_and_the_layer_away() -> None:
    report = gated_report()
    report["layer_stats"][2]["inventory"]["removed"] = ["etc/", "var/lib/dpkg/status"]
    assert image_os(report) is None
    assert ("Debian", "libc6", "2.36-9") not in package_layers(report)


def test_packages_are_paged_by_name_with_a_filter() -> None:
    report = gated_report(extra_packages=250)
    first = packages_page(report, "", "", 100)
    assert first.total == 253 and len(first.packages) == 100
    assert first.packages[0]["name"] == HOSTILE  # "<" sorts first
    seen = [p["name"] for p in first.packages]
    cursor = first.next_cursor
    while cursor:
        page = packages_page(report, "", cursor, 100)
        seen += [p["name"] for p in page.packages]
        cursor = page.next_cursor
    assert len(seen) == 253 and seen == sorted(seen)
    only = packages_page(report, "LZMA", "", 100)
    assert [(p["name"], p["version"], p["layer"]) for p in only.packages] == [
        ("liblzma5", FIXED, 1)
    ]
    assert only.packages[0]["purl"].endswith("&distro=debian-12")
    with pytest.raises(InvalidRequest):
        packages_page(report, "", "not-a-cursor", 100)


def test_matches_come_denied_first_with_severity_binary_and_waiver() -> None:
    shown = vulnerabilities(gated_report())
    assert shown["gated"] and shown["database"] == "sha256:feed"
    xz, glibc = shown["matches"]
    assert (xz["id"], xz["verdict"], xz["severity"], xz["binary"]) == (
        "DEBIAN-CVE-2024-3094",
        "denied",
        "critical",
        "liblzma5",
    )
    assert glibc["verdict"] == "waived" and "2099-12-31" in glibc["reason"]
    assert vulnerabilities({"decision_id": "x"})["gated"] is False
    assert [severity(s) for s in (-1, 0, 3.9, 4.0, 7.0, 9.0, None)] == [
        "unknown",
        "none",
        "low",
        "medium",
        "high",
        "critical",
        "unknown",
    ]


def test_the_raw_report_on_the_page_leaves_the_package_lists_out() -> None:
    trimmed = without_inventory(gated_report(extra_packages=10))
    assert trimmed["inventory"] == "13 packages: see Packages"
    assert all(s["inventory"] == "see Packages" for s in trimmed["layer_stats"])


# --- over HTTP --------------------------------------------------------------------------


@pytest.fixture
async def console(tmp_path: Path) -> AsyncIterator[Console]:
    async for served in _console(tmp_path, TOKENS):
        served.pipeline.decisions.record(gated_report(extra_packages=120))
        yield served


async def test_the_decision_page_shows_advisories_os_and_packages_escaped(
    console: Console,
) -> None:
    await _log_in(console, VIEWER)
    page = await (await console.get(f"/decisions/{GATED}")).text()
    assert 'id="vulnerability-matches"' in page and "DEBIAN-CVE-2024-3094" in page
    assert "xz-utils (liblzma5)" in page and "critical (10.0)" in page
    assert "waived</strong>: allowed until 2099-12-31" in page
    assert "Debian GNU/Linux 12 (bookworm)" in page
    assert f'href="/decisions/{GATED}/packages">all 123 packages' in page
    assert page.count("<tr>") < 100  # 50 packages, not 123
    assert ESCAPED in page and "<script" not in page


async def test_the_packages_page_filters_pages_and_escapes(console: Console) -> None:
    for path in (f"/decisions/{GATED}/packages", f"/decisions/{GATED}"):
        stranger = await console.get(path)
        assert stranger.status == 303 and stranger.headers["Location"] == "/login", path
    await _log_in(console, VIEWER)
    first = await (await console.get(f"/decisions/{GATED}/packages?limit=50")).text()
    assert ESCAPED in first and "<script" not in first
    assert "123 packages." in first
    nxt = first.split('id="next-page" href="', 1)[1].split('"', 1)[0].replace("&amp;", "&")
    second = await (await console.get(nxt)).text()
    assert "pkg00047" in second and "pkg00046" not in second
    hunted = await (await console.get(f"/decisions/{GATED}/packages?q=%3Cscript")).text()
    assert "1 packages match" in hunted and ESCAPED in hunted and "<script" not in hunted
    long = await console.get(f"/decisions/{GATED}/packages?q=" + "x" * 101)
    assert long.status == 400


async def test_the_quarantine_entry_shows_advisories_and_packages_too(console: Console) -> None:
    await _log_in(console, OPERATOR)
    plain = await (await console.get(f"/quarantine/{console.denied}")).text()
    assert "Vulnerabilities" not in plain  # no gate on that rule: nothing to show
    entry = console.pipeline.quarantine.entry_dir(console.denied) / "report.json"
    entry.write_text(json.dumps({**gated_report(), "decision_id": console.denied}))
    page = await (await console.get(f"/quarantine/{console.denied}")).text()
    assert 'id="vulnerability-matches"' in page and "DEBIAN-CVE-2024-3094" in page
    assert "liblzma5" in page and 'id="release"' in page
    assert ESCAPED in page and "<script" not in page


async def test_the_api_serves_packages_and_vulnerabilities_to_a_viewer(console: Console) -> None:
    for path in (
        f"/api/v1/decisions/{GATED}/packages",
        f"/api/v1/decisions/{GATED}/vulnerabilities",
    ):
        refused = await console.get(path)
        assert refused.status == 401, path
        assert (await console.get(path, "pgt_wrong")).status == 401, path
    body = await (await console.get(f"/api/v1/decisions/{GATED}/packages?limit=100", VIEWER)).json()
    assert body["total"] == 123 and len(body["packages"]) == 100
    assert body["os_release"]["version_id"] == "12"
    rest = await (await console.get(body["next"], VIEWER)).json()
    assert len(rest["packages"]) == 23 and "next" not in rest
    found = await (
        await console.get(f"/api/v1/decisions/{GATED}/packages?q=liblzma", VIEWER)
    ).json()
    assert [p["layer"] for p in found["packages"]] == [1]
    vulns = await (await console.get(f"/api/v1/decisions/{GATED}/vulnerabilities", VIEWER)).json()
    assert [m["id"] for m in vulns["matches"]] == ["DEBIAN-CVE-2024-3094", "DEBIAN-CVE-2023-4911"]
    missing = await console.get("/api/v1/decisions/" + "c" * 32 + "/packages", VIEWER)
    assert missing.status == 404
    # The decision itself is still its own route.
    whole = await (await console.get(f"/api/v1/decisions/{GATED}", VIEWER)).json()
    assert len(whole["inventory"]) == 123


def _with_sbom(report: dict[str, Any]) -> dict[str, Any]:
    """The gated report with one match that only a signed SBOM listed."""
    sbom = {
        "digest": "sha256:5b0b",
        "format": "cyclonedx",
        "signer": HOSTILE,
        "packages": [{"ecosystem": "Go", "name": "golang.org/x/net", "version": "v0.10.0"}],
    }
    vulns = report["vulnerabilities"]
    vulns["sboms"] = [sbom]
    vulns["matches"].append(
        {
            "package": "golang.org/x/net",
            "ecosystem": "Go",
            "installed_version": "v0.10.0",
            "id": "GO-2023-2102",
            "aliases": ["CVE-2023-39325"],
            "fixed_version": "0.17.0",
            "cvss": 7.5,
            "outcome": "deny",
            "reason": "cvss 7.5 >= 7.0",
            "origin": "sbom sha256:5b0b",
        }
    )
    return report


def test_a_match_says_whether_the_scan_or_a_signed_sbom_found_it() -> None:
    shown = vulnerabilities(_with_sbom(gated_report()))
    origins = {m["id"]: m["origin"] for m in shown["matches"]}
    assert origins["GO-2023-2102"] == "sbom sha256:5b0b"
    assert origins["DEBIAN-CVE-2024-3094"] == "scan"  # older reports have no origin
    assert shown["sboms"] == [
        {"digest": "sha256:5b0b", "format": "cyclonedx", "signer": HOSTILE, "packages": 1}
    ]
    trimmed = without_inventory(_with_sbom(gated_report()))
    assert trimmed["vulnerabilities"]["sboms"][0]["packages"] == "1 packages"


async def test_the_decision_page_names_the_sbom_behind_a_match(tmp_path: Path) -> None:
    async for served in _console(tmp_path, TOKENS):
        served.pipeline.decisions.record(_with_sbom(gated_report()))
        await _log_in(served, VIEWER)
        page = await (await served.get(f"/decisions/{GATED}")).text()
        assert 'id="sboms"' in page and "<code>sbom sha256:5b0b</code>" in page
        assert "layer scan" in page
        assert ESCAPED in page and "<script" not in page
