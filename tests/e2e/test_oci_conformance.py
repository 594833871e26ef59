"""The OCI distribution-spec conformance suite's Pull workflow against pullguard.

The suite (Go, vendored, Apache-2.0) lives in tests/conformance/oci-distribution;
it is built once with Debian's Go into .tools/bin and cached there. The
upstream is a real docker-registry seeded with skopeo; the suite runs
read-only against ``pullguard up``. pullguard serves only blobs of admitted
images, so the manifest is pulled once first, as every client does.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.support.registry import push_manifest_sync
from tests.support.registry_process import RegistryProcess

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "conformance" / "oci-distribution"
BINARY = ROOT / ".tools" / "bin" / "oci-conformance.test"


def _suite_binary() -> Path:
    sources = [p for p in (SUITE / "src" / "conformance").glob("*.go")]
    if BINARY.exists() and all(p.stat().st_mtime <= BINARY.stat().st_mtime for p in sources):
        return BINARY
    env = {
        **os.environ,
        "GOCACHE": str(ROOT / ".tools" / "go-cache"),
        "GOPATH": str(ROOT / ".tools" / "gopath"),
    }
    built = subprocess.run(
        [str(SUITE / "build.sh"), str(BINARY)], capture_output=True, text=True, env=env, timeout=900
    )
    if built.returncode != 0:
        pytest.fail(
            "cannot build the OCI conformance suite (run `make system-deps` for Go):\n"
            + built.stderr[-2000:]
        )
    return BINARY


def _seed(upstream: RegistryProcess, namespace: str, tag: str) -> list[str]:
    seeded = subprocess.run(
        [str(SUITE / "seed-image.sh"), upstream.address, namespace, tag],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert seeded.returncode == 0, seeded.stderr
    return seeded.stdout.split()


def test_pull_workflow_passes(upstream: RegistryProcess, pullguard_factory, tmp_path: Path) -> None:
    binary = _suite_binary()
    tag, manifest, blob = _seed(upstream, "conformance/ro", "v1")
    pg = pullguard_factory(upstream.url)
    # Blobs are served only for admitted images: pull the manifest once first.
    first = pg.get(
        "/v2/lab/conformance/ro/manifests/v1",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert first.status_code == 200, first.text
    assert httpx.get(f"{upstream.url}/v2/").status_code == 200
    env = {**os.environ, "CONFORMANCE_BIN": str(binary), "OCI_REPORT_DIR": "none"}
    run = subprocess.run(
        [
            str(SUITE / "run-pull.sh"),
            f"http://{pg.address}",
            "lab/conformance/ro",
            tag,
            manifest,
            blob,
            "-ginkgo.no-color",
            "-ginkgo.v",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    summary = re.search(r"Ran (\d+) of \d+ Specs.*?\n.*?(\d+) Passed \| (\d+) Failed", output, re.S)
    assert summary is not None, output[-4000:]
    ran, passed, failed = (int(g) for g in summary.groups())
    assert (ran, passed, failed) == (14, 14, 0), output[-6000:]
    assert run.returncode == 0


def test_content_discovery_tag_list_passes(
    upstream: RegistryProcess, pullguard_factory, tmp_path: Path
) -> None:
    """The Content Discovery workflow's tag-list specs (sorted, ``n``, ``last``),
    read-only: the tags exist upstream (OCI_TAG_LIST names them); the workflow's
    referrers specs are left out (pullguard serves no referrers API)."""
    binary = _suite_binary()
    _tag, manifest, _blob = _seed(upstream, "conformance/tags", "v1")
    document = httpx.get(
        f"{upstream.url}/v2/conformance/tags/manifests/{manifest}",
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json"},
    ).content
    tags = sorted({"v1", *(f"t{i:02d}" for i in range(12))})
    for tag in tags:
        push_manifest_sync(upstream.url, "conformance/tags", tag, document)
    # Pages of 5 from the upstream: pullguard reads them all.
    pg = pullguard_factory(upstream.url, limits={"tag_page_size": 5})
    env = {
        **os.environ,
        "OCI_ROOT_URL": f"http://{pg.address}",
        "OCI_NAMESPACE": "lab/conformance/tags",
        "OCI_TEST_CONTENT_DISCOVERY": "1",
        "OCI_TAG_LIST": ",".join(tags),
        "OCI_HIDE_SKIPPED_WORKFLOWS": "1",
        "OCI_REPORT_DIR": "none",
    }
    run = subprocess.run(
        [
            str(binary),
            "-ginkgo.no-color",
            "-ginkgo.v",
            "-ginkgo.focus",
            "listing tags|test tags",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    output = run.stdout + run.stderr
    summary = re.search(r"Ran (\d+) of \d+ Specs.*?\n.*?(\d+) Passed \| (\d+) Failed", output, re.S)
    assert summary is not None, output[-4000:]
    ran, passed, failed = (int(g) for g in summary.groups())
    assert ran >= 4 and passed == ran and failed == 0, output[-6000:]
    assert "GET start of tag is set by `last` query parameter" in output
    assert run.returncode == 0
