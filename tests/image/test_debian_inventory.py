"""Issue 13: the inventory of a real Debian image, as the gate records it.

mmdebstrap writes Debian 12 (bookworm) minbase from Debian's own mirror into a
tarball (cached under build/debian-rootfs: about a minute once), the tarball
becomes the single layer of an OCI image as it is, and the image is pulled
through `pullguard up` with a vulnerability gate (real docker-registry,
skopeo). The report's inventory must be exactly what the image's own dpkg
says: `dpkg-query -W --admindir=<rootfs>/var/lib/dpkg` lists the same
packages at the same versions, each with its purl
``pkg:deb/debian/NAME@VERSION?arch=...&distro=debian-12``, and the os-release
is Debian 12's. The inventory is written to tests/artifacts/vulnerability/.

It needs Debian's mirror, so it runs with the image tests:
``PULLGUARD_IMAGE_TEST=1 pytest tests/image/test_debian_inventory.py``
(``DEBIAN_MIRROR`` overrides the mirror, as in scripts/make-base-image.sh).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.e2e import conftest as e2e
from tests.support.images import (
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    BuiltImage,
    pull,
    push,
)
from tests.support.osv import osv_folder
from tests.support.registry_process import RegistryProcess
from tests.support.shared import REPO
from tests.support.stack import Pullguard

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]
# The e2e tier's stack fixtures: a real docker-registry and `pullguard up`.
upstream = e2e.upstream
pullguard_factory = e2e.pullguard_factory

CACHE = REPO / "build" / "debian-rootfs"
SUITE = "bookworm"
ARTIFACTS = REPO / "tests" / "artifacts" / "vulnerability"
DPKG_FORMAT = "${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Status}\\n"


def debian_rootfs() -> Path:
    """Debian 12 minbase as mmdebstrap writes it, without device nodes (format
    refuses those) and apt's downloaded lists; made once, then reused."""
    tarball = CACHE / f"{SUITE}-minbase.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is not installed: run `make system-deps`")
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial.tar")
    mirror = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
    done = subprocess.run(
        [
            "mmdebstrap", "--quiet", "--variant=minbase", "--skip=output/dev",
            "--aptopt=APT::Install-Recommends \"false\"",
            "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
            SUITE, str(partial), mirror,
        ],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"mmdebstrap failed:\n{done.stderr[-3000:]}"
    partial.rename(tarball)
    return tarball


def image_of(tarball: Path, layout: Path) -> BuiltImage:
    """An OCI layout whose one layer is ``tarball`` as it is, gzip-compressed."""
    raw = tarball.read_bytes()
    layer = gzip.compress(raw, compresslevel=1, mtime=0)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/bash"]},
            "rootfs": {"type": "layers", "diff_ids": [_sha256(raw)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": _sha256(layer), "size": len(layer)}],
        }
    ).encode()
    for blob in (config, layer, manifest):
        path = layout / "blobs" / "sha256" / _sha256(blob).split(":", 1)[1]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": _sha256(manifest),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "12"},
    }
    (layout / "index.json").write_text(
        json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]})
    )
    return BuiltImage(layout, "12", manifest, config, [layer])


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dpkg_installed(tarball: Path, root: Path) -> dict[str, tuple[str, str]]:
    """name -> (version, arch) of every installed package, as the rootfs's own dpkg says."""
    with tarfile.open(tarball) as tar:
        wanted = [m for m in tar.getmembers() if m.name.startswith("./var/lib/dpkg/")]
        tar.extractall(root, members=wanted, filter="data")
    done = subprocess.run(
        ["dpkg-query", "-W", "-f", DPKG_FORMAT, f"--admindir={root}/var/lib/dpkg"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    rows = [line.split("\t") for line in done.stdout.splitlines()]
    return {name: (version, arch) for name, version, arch, status in rows if status == "installed"}


def os_release(tarball: Path) -> dict[str, str]:
    with tarfile.open(tarball) as tar:
        for name in ("./etc/os-release", "./usr/lib/os-release"):
            try:
                member = tar.getmember(name)
            except KeyError:
                continue
            if member.issym():
                continue
            data = tar.extractfile(member)
            assert data is not None
            text = data.read().decode()
            pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
            return {key: value.strip('"') for key, value in pairs}
    raise AssertionError("no os-release in the rootfs")


def test_a_real_debian_images_inventory_is_what_its_dpkg_says(
    upstream: RegistryProcess, pullguard_factory: Callable[..., Pullguard], tmp_path: Path
) -> None:
    tarball = debian_rootfs()
    push(image_of(tarball, tmp_path / "layout"), upstream.address, "library/debian")
    expected = dpkg_installed(tarball, tmp_path / "rootfs")
    release = os_release(tarball)
    assert release["ID"] == "debian" and release["VERSION_ID"] == "12", release

    pg = pullguard_factory(
        upstream.url,
        vulnerabilities={"osv": str(osv_folder(tmp_path / "osv")), "deny": {"cvss_min": 9.0}},
        policy={"rules": [{"match": "lab/**", "signature": "none"}]},
    )
    pulled = pull(f"{pg.address}/lab/library/debian:12", tmp_path / "out", "12")
    assert pulled.returncode == 0, pulled.stderr + pg.log()
    checked = pg.cli("check", "lab/library/debian:12", "--json")
    report: dict[str, Any] = json.loads(checked.stdout)
    assert report["decision"] == "ALLOW", report["reason"]

    inventory = report["inventory"]
    got = {p["name"]: p for p in inventory}
    assert len(got) == len(inventory), "a package listed twice"
    assert sorted(got) == sorted(expected)
    for name, (version, arch) in expected.items():
        package = got[name]
        assert (package["version"], package["ecosystem"]) == (version, "Debian:12"), package
        purl = urlsplit(package["purl"])
        path, _, purl_version = purl.path.partition("@")
        assert (purl.scheme, unquote(path)) == ("pkg", f"deb/debian/{name}"), package["purl"]
        assert unquote(purl_version) == version, package["purl"]
        qualifiers = {k: v[0] for k, v in parse_qs(purl.query).items()}
        assert qualifiers["arch"] == arch and qualifiers["distro"] == "debian-12", package["purl"]
    [stats] = report["layer_stats"]
    assert stats["inventory"]["os_release"]["id"] == "debian"
    assert stats["inventory"]["os_release"]["version_id"] == "12"
    _write_artifact(report, release, len(expected))


def _write_artifact(report: dict[str, Any], release: dict[str, str], dpkg_count: int) -> None:
    """The inventory as the integrator quotes it: count, OS, a few lines, the matches."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    inventory = sorted(report["inventory"], key=lambda p: p["name"])
    os_found = report["layer_stats"][0]["inventory"]["os_release"]
    matches = report.get("vulnerabilities", {}).get("matches", [])
    lines = [
        f"image: mmdebstrap --variant=minbase {SUITE} (one layer), digest {report['digest']}",
        f"os-release: {release.get('PRETTY_NAME')} (ID={os_found['id']},"
        f" VERSION_ID={os_found['version_id']})",
        f"packages in the report: {len(inventory)}; dpkg-query -W (installed): {dpkg_count}",
        f"advisories matched: {len(matches)} (OSV fixtures of tests/data/osv only)",
        *[
            f"  {m['id']} {m['package']} {m['installed_version']} ({m['ecosystem']}):"
            f" {m['outcome']}"
            for m in matches
        ],
        "",
        *[f"{p['name']}\t{p['version']}\t{p['purl']}" for p in inventory],
    ]
    path = ARTIFACTS / "debian-12-minbase-inventory.txt"
    path.write_text("\n".join(lines) + "\n")
    print(f"inventory: {path}")
