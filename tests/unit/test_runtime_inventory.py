"""The merge of layer inventories and the purls (pure functions, issue 13)."""

from __future__ import annotations

import pytest

from pullguard.services.format.tarstream import TarEntry, TarReader
from pullguard.services.runtime.config import LayerRule
from pullguard.services.runtime.inventory import (
    LayerInventory,
    OsRelease,
    Package,
    PackageSource,
    merge_layers,
)
from pullguard.services.runtime.protoconv import (
    inventory_from_proto,
    inventory_to_proto,
    layer_rule_from_proto,
)
from pullguard.services.runtime.purl import golang_purl, npm_purl, purl, pypi_purl
from pullguard.v1 import common_pb2
from tests.unit.format.inventory_build import layer, reg


def source(path: str, kind: str, *names: str) -> PackageSource:
    ecosystem = {"dpkg": "Debian", "python": "PyPI", "npm": "npm"}[kind]
    return PackageSource(path, kind, tuple(Package(ecosystem, n, "1.0") for n in names))


def names(layers: list[LayerInventory]) -> list[str]:
    return sorted(p.name for p in merge_layers(layers).packages)


def test_later_file_at_the_same_path_replaces() -> None:
    lower = LayerInventory(0, [source("var/lib/dpkg/status", "dpkg", "a", "b")])
    upper = LayerInventory(1, [source("var/lib/dpkg/status", "dpkg", "a")])
    assert names([lower, upper]) == ["a"]
    # Order is the layers' index, not the list's.
    assert names([upper, lower]) == ["a"]


def test_whiteout_removes_the_path_and_what_is_under_it() -> None:
    lower = LayerInventory(
        0,
        [
            source("site/x-1.dist-info/METADATA", "python", "x"),
            source("site/x-1.dist-infox/METADATA", "python", "y"),
            source("app/node_modules/z/package.json", "npm", "z"),
        ],
    )
    upper = LayerInventory(1, removed=["site/x-1.dist-info", "app/node_modules/z/package.json"])
    assert names([lower, upper]) == ["y"]


def test_opaque_directory_hides_lower_layers_only() -> None:
    lower = LayerInventory(0, [source("app/node_modules/a/package.json", "npm", "a")])
    upper = LayerInventory(
        1,
        [source("app/node_modules/b/package.json", "npm", "b")],
        removed=["app/node_modules/"],
    )
    assert names([lower, upper]) == ["b"]
    root = LayerInventory(1, removed=["/"])
    assert names([lower, root]) == []


def test_os_release_precedence_and_removal() -> None:
    usr = OsRelease("usr/lib/os-release", "debian", "11")
    etc = OsRelease("etc/os-release", "debian", "12")
    merged = merge_layers([LayerInventory(0, os_release=usr), LayerInventory(1, os_release=etc)])
    assert merged.os_release == etc
    merged = merge_layers(
        [
            LayerInventory(0, os_release=etc),
            LayerInventory(1, os_release=usr),
        ]
    )
    assert merged.os_release == etc
    merged = merge_layers(
        [LayerInventory(0, os_release=etc), LayerInventory(1, removed=["etc/os-release"])]
    )
    assert merged.os_release is None


def test_incomplete_from_any_layer_and_duplicates_once() -> None:
    merged = merge_layers(
        [
            LayerInventory(0, [source("a/x.dist-info/METADATA", "python", "x")], incomplete=["b"]),
            LayerInventory(1, [source("b/x.dist-info/METADATA", "python", "x")], incomplete=["a"]),
        ]
    )
    assert merged.incomplete == ("a", "b")
    assert [p.name for p in merged.packages] == ["x"]
    assert len(merged.sources) == 2


@pytest.mark.parametrize(
    ("os_id", "version", "ecosystem", "prefix"),
    [
        ("debian", "12", "Debian:12", "pkg:deb/debian/a@1.0?distro=debian-12"),
        # OSV's names: LTS releases carry ":LTS", the others do not.
        ("ubuntu", "22.04", "Ubuntu:22.04:LTS", "pkg:deb/ubuntu/a@1.0?distro=ubuntu-22.04"),
        ("ubuntu", "24.04", "Ubuntu:24.04:LTS", "pkg:deb/ubuntu/a@1.0?distro=ubuntu-24.04"),
        ("ubuntu", "24.10", "Ubuntu:24.10", "pkg:deb/ubuntu/a@1.0?distro=ubuntu-24.10"),
        ("ubuntu", "23.04", "Ubuntu:23.04", "pkg:deb/ubuntu/a@1.0?distro=ubuntu-23.04"),
        ("", "", "Debian", "pkg:deb/debian/a@1.0"),
    ],
)
def test_release_applied_to_os_packages(
    os_id: str, version: str, ecosystem: str, prefix: str
) -> None:
    release = OsRelease("etc/os-release", os_id, version) if os_id else None
    merged = merge_layers(
        [LayerInventory(0, [source("var/lib/dpkg/status", "dpkg", "a")], os_release=release)]
    )
    assert merged.packages[0].ecosystem == ecosystem
    assert merged.packages[0].purl == prefix


def test_purls_encode_what_would_change_their_meaning() -> None:
    assert purl("deb", "debian", "a/b", "1:2+3~4", {"arch": "x?y", "z": ""}) == (
        "pkg:deb/debian/a%2Fb@1:2%2B3~4?arch=x%3Fy"
    )
    assert npm_purl("@scope/na me", "1.0.0") == "pkg:npm/%40scope/na%20me@1.0.0"
    assert pypi_purl("Zope.Interface__X", "5") == "pkg:pypi/zope-interface-x@5"
    assert golang_purl("github.com/a/b/v2", "v2.0.1") == "pkg:golang/github.com/a/b/v2@v2.0.1"
    assert purl("npm", "", "x", "1#@") == "pkg:npm/x@1%23%40"


def test_inventory_proto_round_trip() -> None:
    inventory = LayerInventory(
        3,
        [source("var/lib/dpkg/status", "dpkg", "a")],
        removed=["x/"],
        os_release=OsRelease("etc/os-release", "debian", "12", "Debian"),
        incomplete=["format.inventory_limit"],
    )
    assert inventory_from_proto(inventory_to_proto(inventory)) == inventory


def test_layer_policy_inventory_flag() -> None:
    assert layer_rule_from_proto(common_pb2.LayerPolicy()) == LayerRule()
    alone = layer_rule_from_proto(common_pb2.LayerPolicy(inventory=True))
    assert alone == LayerRule(inventory=True) and alone.inspect
    assert common_pb2.LayerPolicy(inventory=True).inventory


def test_tar_reader_hands_each_entry_its_bytes_across_chunks() -> None:
    contents = {"a": b"x" * 1000, "b": b"", "c": bytes(range(256)) * 7, "d": b"tail"}
    tar = layer(*(reg(name, data) for name, data in contents.items()))
    received: dict[str, bytearray] = {}
    closed: list[str] = []

    class Sink:
        def __init__(self, name: str) -> None:
            self.name = name
            received[name] = bytearray()

        def write(self, data: memoryview) -> None:
            received[self.name] += data

        def close(self) -> None:
            closed.append(self.name)

    def on_entry(entry: TarEntry) -> Sink | None:
        return Sink(entry.name) if entry.name != "d" else None

    reader = TarReader(on_entry, max_entry_size=1 << 20)
    for start in range(0, len(tar), 7):
        reader.feed(tar[start : start + 7])
    reader.close()
    assert closed == ["a", "b", "c"]
    assert {k: bytes(v) for k, v in received.items()} == {
        k: v for k, v in contents.items() if k != "d"
    }
