"""Issue 13 part 1 end to end: an image built from real package databases,
pushed to docker-registry and pulled through `pullguard up` with skopeo,
under a rule that asks for the inventory. The decision report carries each
layer's inventory as format read it, whiteouts included; merging it gives
the image's packages with the Debian release applied."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pullguard.services.runtime.inventory import (
    LayerInventory,
    OsRelease,
    Package,
    PackageSource,
    merge_layers,
)
from tests.support.images import build_image, pull, push
from tests.support.registry_process import RegistryProcess
from tests.support.stack import Pullguard
from tests.unit.format.inventory_build import fixture

StartPullguard = Callable[..., Pullguard]
SITE = "usr/lib/python3/dist-packages"


def _from_report(entry: dict[str, object]) -> LayerInventory:
    """The report's JSON form of one LayerInventory, back to the domain type."""
    data = entry["inventory"]
    assert isinstance(data, dict)
    release = data["os_release"]
    return LayerInventory(
        index=data["index"],
        sources=[
            PackageSource(s["path"], s["kind"], tuple(Package(**p) for p in s["packages"]))
            for s in data["sources"]
        ],
        removed=data["removed"],
        os_release=OsRelease(**release) if release else None,
        incomplete=data["incomplete"],
    )


def test_inventory_reaches_the_decision_report(
    upstream: RegistryProcess, pullguard_factory: StartPullguard, tmp_path: Path
) -> None:
    meta = b"Metadata-Version: 2.1\nName: %s\nVersion: %s\n\n"
    image = build_image(
        tmp_path / "src",
        "v1",
        [
            {
                "etc/hostname": b"box\n",
                "usr/lib/os-release": fixture("debian-os-release"),
                "var/lib/dpkg/status": fixture("dpkg-status"),
                f"{SITE}/mdurl-0.1.2.dist-info/METADATA": fixture("mdurl-METADATA"),
                f"{SITE}/idna-3.6.dist-info/METADATA": meta % (b"idna", b"3.6"),
            },
            {
                # pip uninstall idna in a later layer.
                f"{SITE}/.wh.idna-3.6.dist-info": b"",
                "app/node_modules/debug/package.json": b'{"name":"debug","version":"4.3.4"}',
            },
        ],
    )
    push(image, upstream.address, "team/debian-app")
    plain = build_image(tmp_path / "plain", "v1", [{"var/lib/dpkg/status": fixture("dpkg-status")}])
    push(plain, upstream.address, "team/plain")
    policy = {
        "rules": [
            {"match": "lab/team/plain", "signature": "none"},
            {"match": "lab/**", "signature": "none", "layers": {"inventory": True}},
        ],
        "deny": ["**/evil/**"],
    }
    pg = pullguard_factory(upstream.url, policy=policy)

    result = pull(f"{pg.address}/lab/team/debian-app:v1", tmp_path / "out", "v1")
    assert result.returncode == 0, result.stderr + pg.log()

    check = pg.cli("check", "lab/team/debian-app:v1", "--json")
    assert check.returncode == 0, check.stderr
    report = json.loads(check.stdout)
    assert report["decision"] == "ALLOW" and report["digest"] == image.digest
    stats = report["layer_stats"]
    assert [s["digest"] for s in stats] == image.blob_digests[1:]
    lower, upper = (_from_report(s) for s in stats)
    assert lower.os_release is not None and lower.os_release.version_id == "12"
    assert {s.kind for s in lower.sources} == {"dpkg", "python"}
    assert upper.removed == [f"{SITE}/idna-3.6.dist-info"]
    assert lower.incomplete == [] and upper.incomplete == []

    merged = merge_layers([lower, upper])
    listed = {(p.ecosystem, p.name, p.version) for p in merged.packages}
    assert ("Debian:12", "libc6", "2.36-9+deb12u14") in listed
    assert ("PyPI", "mdurl", "0.1.2") in listed
    assert ("npm", "debug", "4.3.4") in listed
    assert not any(name == "idna" for _, name, _ in listed)
    assert len(listed) == 7 + 2

    # A rule that does not ask reads no database.
    result = pull(f"{pg.address}/lab/team/plain:v1", tmp_path / "out-plain", "v1")
    assert result.returncode == 0, result.stderr + pg.log()
    report = json.loads(pg.cli("check", "lab/team/plain:v1", "--json").stdout)
    assert report["layer_stats"] and "inventory" not in report["layer_stats"][0]
