"""The inventory of each layer (issue 13 part 1): real package databases in
real tar layers, read by format's layer inspection in its one pass, and
hostile databases that must end as findings, never as a crash."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullguard.services.format.inventory import limits, rpmdb
from pullguard.services.format.layers import LayerStats
from pullguard.services.format.servicer import stats_to_proto
from pullguard.services.runtime.config import LayerRule
from pullguard.services.runtime.findings import Finding, Severity
from pullguard.services.runtime.inventory import LayerInventory, merge_layers
from pullguard.services.runtime.staging import StagingStore
from tests.unit.format.inventory_build import (
    fixture,
    go_binary,
    layer,
    link,
    reg,
    rpm_header,
    rpm_package,
    rpmdb_sqlite,
    whiteout,
)
from tests.unit.format.tarbuild import inspect

INVENTORY = LayerRule(inventory=True)
MALFORMED = "format.inventory_malformed"
LIMIT = "format.inventory_limit"
UNSUPPORTED = "format.inventory_unsupported"


@pytest.fixture
def store(tmp_path: Path) -> StagingStore:
    return StagingStore(tmp_path / "staging")


@pytest.fixture(scope="module")
def hello_go(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return go_binary(tmp_path_factory.mktemp("go"))


def read(store: StagingStore, tar: bytes) -> tuple[list[Finding], LayerInventory]:
    findings, stats = inspect(store, tar, rule=INVENTORY)
    assert stats.completed, findings
    assert stats.inventory is not None
    # Whatever a layer holds, its inventory must go over the wire.
    stats_to_proto(stats).SerializeToString()
    return findings, stats.inventory


def only(inventory: LayerInventory) -> list[tuple[str, str, str]]:
    return [(p.name, p.version, p.purl) for s in inventory.sources for p in s.packages]


def warnings(findings: list[Finding], code: str) -> list[str]:
    return [f.message for f in findings if f.code == code and f.severity is not Severity.ERROR]


def no_errors(findings: list[Finding]) -> None:
    assert [f for f in findings if f.severity is Severity.ERROR] == []


# ------------------------------------------------------------ real databases


def debian_layer() -> bytes:
    return layer(
        reg("etc/hostname", b"x\n"),
        link("etc/os-release", "../usr/lib/os-release"),
        reg("usr/lib/os-release", fixture("debian-os-release")),
        reg("var/lib/dpkg/status", fixture("dpkg-status")),
    )


def test_dpkg_status_written_by_dpkg_query(store: StagingStore) -> None:
    findings, inventory = read(store, debian_layer())
    assert findings == []
    [source] = inventory.sources
    assert (source.path, source.kind) == ("var/lib/dpkg/status", "dpkg")
    packages = {p.name: p for p in source.packages}
    assert set(packages) == {
        "base-files",
        "libc6",
        "liblzma5",
        "xz-utils",
        "zlib1g",
        "libssl3",
        "tzdata",
    }
    libc = packages["libc6"]
    assert (libc.version, libc.arch, libc.source_name) == ("2.36-9+deb12u14", "amd64", "glibc")
    assert libc.purl == "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64"
    assert packages["zlib1g"].version == "1:1.2.13.dfsg-1"
    assert packages["liblzma5"].source_name == "xz-utils"
    # The symlink is not followed; the file it points at is read.
    assert inventory.os_release is not None
    assert (inventory.os_release.path, inventory.os_release.id) == ("usr/lib/os-release", "debian")
    assert inventory.os_release.version_id == "12"
    assert inventory.os_release.pretty_name == "Debian GNU/Linux 12 (bookworm)"


def test_merged_debian_packages_carry_the_release(store: StagingStore) -> None:
    _, inventory = read(store, debian_layer())
    merged = merge_layers([inventory])
    libc = next(p for p in merged.packages if p.name == "libc6")
    assert libc.ecosystem == "Debian:12"
    assert libc.purl == (
        "pkg:deb/debian/libc6@2.36-9%2Bdeb12u14?arch=amd64&distro=debian-12&upstream=glibc"
    )
    zlib = next(p for p in merged.packages if p.name == "zlib1g")
    assert zlib.purl.startswith("pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1?")
    assert merged.incomplete == ()


def test_inventory_is_off_unless_the_rule_asks(store: StagingStore) -> None:
    findings, stats = inspect(store, debian_layer())
    assert findings == [] and stats.completed
    assert stats.inventory is None
    assert not stats_to_proto(stats).HasField("inventory")


def test_distroless_status_d(store: StagingStore) -> None:
    stanza = fixture("dpkg-status").split(b"\n\n")[1]
    assert stanza.startswith(b"Package: libc6")
    _, inventory = read(
        store,
        layer(
            reg(
                "var/lib/dpkg/status.d/libc6",
                stanza.replace(b"Status: install ok installed\n", b""),
            ),
            reg("var/lib/dpkg/status.d/libc6.md5sums", b"d41d8cd98f00b204e9800998ecf8427e  x\n"),
        ),
    )
    assert [(s.path, s.kind) for s in inventory.sources] == [
        ("var/lib/dpkg/status.d/libc6", "dpkg")
    ]
    assert only(inventory)[0][:2] == ("libc6", "2.36-9+deb12u14")


def test_dpkg_removed_packages_are_not_listed(store: StagingStore) -> None:
    status = (
        b"Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n\n"
        b"Package: kept\nStatus: install ok installed\nVersion: 2.0\n"
    )
    _, inventory = read(store, layer(reg("var/lib/dpkg/status", status)))
    assert [name for name, _, _ in only(inventory)] == ["kept"]


def test_apk_installed(store: StagingStore) -> None:
    findings, inventory = read(store, layer(reg("lib/apk/db/installed", fixture("apk-installed"))))
    assert findings == []
    assert only(inventory) == [
        ("musl", "1.2.5-r0", "pkg:apk/alpine/musl@1.2.5-r0?arch=x86_64"),
        ("xz-libs", "5.6.1-r0", "pkg:apk/alpine/xz-libs@5.6.1-r0?arch=x86_64"),
    ]
    assert inventory.sources[0].packages[1].source_name == "xz"
    release = (
        b'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME="Alpine Linux v3.20"\n'
    )
    _, os_layer = read(store, layer(reg("etc/os-release", release)))
    merged = merge_layers([inventory, _at(os_layer, 1)])
    assert {p.ecosystem for p in merged.packages} == {"Alpine:v3.20"}
    assert merged.packages[1].purl == (
        "pkg:apk/alpine/xz-libs@5.6.1-r0?arch=x86_64&distro=alpine-3.20.3&upstream=xz"
    )


def test_rpmdb_sqlite(store: StagingStore, tmp_path: Path) -> None:
    database = rpmdb_sqlite(
        tmp_path,
        [
            rpm_package("bash", "5.1.8", "9.el9", epoch=None),
            rpm_package("openssl-libs", "3.0.7", "27.el9", epoch=1),
            rpm_header({1000: "gpg-pubkey", 1001: "fd431d51", 1002: "4ae0493b"}),
        ],
    )
    findings, inventory = read(store, layer(reg("usr/lib/sysimage/rpm/rpmdb.sqlite", database)))
    assert findings == []
    assert only(inventory) == [
        ("bash", "5.1.8-9.el9", "pkg:rpm/redhat/bash@5.1.8-9.el9?arch=x86_64"),
        (
            "openssl-libs",
            "1:3.0.7-27.el9",
            "pkg:rpm/redhat/openssl-libs@3.0.7-27.el9?arch=x86_64&epoch=1",
        ),
    ]
    openssl = inventory.sources[0].packages[1]
    assert (openssl.source_name, openssl.source_version) == ("openssl-libs", "1:3.0.7-27.el9")
    release = b'ID="rhel"\nVERSION_ID="9.4"\nPRETTY_NAME="Red Hat Enterprise Linux 9.4 (Plow)"\n'
    _, os_layer = read(store, layer(reg("etc/os-release", release)))
    merged = merge_layers([inventory, _at(os_layer, 1)])
    assert merged.packages[1].ecosystem == "Red Hat:enterprise_linux:9"
    assert merged.packages[1].purl == (
        "pkg:rpm/redhat/openssl-libs@3.0.7-27.el9?arch=x86_64&distro=rhel-9.4&epoch=1"
    )


def test_rpm_berkeley_db_is_reported_not_parsed(store: StagingStore) -> None:
    findings, inventory = read(store, layer(reg("var/lib/rpm/Packages", b"\0" * 4096)))
    assert warnings(findings, UNSUPPORTED)
    assert inventory.sources == [] and inventory.incomplete == [UNSUPPORTED]
    no_errors(findings)


def test_python_dist_info_and_egg_info(store: StagingStore) -> None:
    site = "usr/local/lib/python3.12/site-packages"
    findings, inventory = read(
        store,
        layer(
            reg(f"{site}/mdurl-0.1.2.dist-info/METADATA", fixture("mdurl-METADATA")),
            reg(f"{site}/mdurl-0.1.2.dist-info/RECORD", b"mdurl/__init__.py,,\n"),
            reg(f"{site}/x.wh.y-2.dist-info/METADATA", b"Name: x.wh.y\nVersion: 2\n"),
            reg(
                f"{site}/Foo_Bar.egg-info/PKG-INFO",
                b"Metadata-Version: 1.1\nName: Foo_Bar\nVersion: 1.0\n",
            ),
        ),
    )
    assert findings == []
    assert only(inventory) == [
        ("mdurl", "0.1.2", "pkg:pypi/mdurl@0.1.2"),
        ("x.wh.y", "2", "pkg:pypi/x-wh-y@2"),
        ("Foo_Bar", "1.0", "pkg:pypi/foo-bar@1.0"),
    ]
    assert {p.ecosystem for s in inventory.sources for p in s.packages} == {"PyPI"}


def test_npm_package_json(store: StagingStore) -> None:
    findings, inventory = read(
        store,
        layer(
            reg("app/node_modules/@babel/core/package.json", fixture("npm-package.json")),
            reg("app/node_modules/@babel/core/lib/package.json", b'{"type": "commonjs"}'),
            reg("app/node_modules/debug/package.json", b'{"name": "debug", "version": "4.3.4"}'),
            reg("app/package.json", b'{"name": "the-app", "version": "1.0.0"}'),
        ),
    )
    assert findings == []
    assert only(inventory) == [
        ("@babel/core", "7.24.4", "pkg:npm/%40babel/core@7.24.4"),
        ("debug", "4.3.4", "pkg:npm/debug@4.3.4"),
    ]


def test_go_binary_built_by_go(store: StagingStore, hello_go: bytes) -> None:
    findings, inventory = read(
        store,
        layer(
            reg("usr/local/bin/hello", hello_go, mode=0o755),
            reg("opt/not-executable", hello_go, mode=0o644),
        ),
    )
    assert findings == []
    [source] = inventory.sources
    assert (source.path, source.kind) == ("usr/local/bin/hello", "go")
    listed = [(p.name, p.version, p.purl) for p in source.packages]
    assert listed[0][0] == "stdlib" and listed[0][1].startswith("go1.")
    assert listed[1:] == [
        ("example.com/hello", "(devel)", "pkg:golang/example.com/hello@%28devel%29"),
        ("example.com/greeting", "v1.4.2", "pkg:golang/example.com/greeting@v1.4.2"),
    ]


def test_go_binary_at_a_path_that_is_not_utf8(store: StagingStore, hello_go: bytes) -> None:
    info, data = reg("usr/bin/x", hello_go, mode=0o755)
    info.name = b"usr/bin/h\xffllo".decode("utf-8", "surrogateescape")
    _, inventory = read(store, layer((info, data)))
    assert inventory.sources[0].path == "usr/bin/h\ufffdllo"


# ------------------------------------------------------------ layers and whiteouts


def _at(inventory: LayerInventory, index: int) -> LayerInventory:
    inventory.index = index
    return inventory


def test_layers_merge_in_order_with_whiteouts(store: StagingStore, tmp_path: Path) -> None:
    site = "usr/lib/python3/dist-packages"
    meta = b"Metadata-Version: 2.1\nName: %s\nVersion: %s\n\n"
    base = layer(
        reg("usr/lib/os-release", fixture("debian-os-release")),
        reg("var/lib/dpkg/status", fixture("dpkg-status")),
        reg(f"{site}/old-1.0.dist-info/METADATA", meta % (b"old", b"1.0")),
        reg(f"{site}/pinned-1.0.dist-info/METADATA", meta % (b"pinned", b"1.0")),
        reg("app/node_modules/left-pad/package.json", b'{"name":"left-pad","version":"1.0.0"}'),
    )
    upper = layer(
        # apt-get purge xz-utils: the status file is written anew.
        reg(
            "var/lib/dpkg/status",
            b"Package: libc6\nStatus: install ok installed\nVersion: 2.36-9+deb12u14\n",
        ),
        whiteout(f"{site}/old-1.0.dist-info"),
        whiteout("app/node_modules/"),
        reg("app/node_modules/right-pad/package.json", b'{"name":"right-pad","version":"2.0.0"}'),
    )
    _, lower_inventory = read(store, base)
    findings, upper_inventory = read(store, upper)
    no_errors(findings)
    assert upper_inventory.removed == [f"{site}/old-1.0.dist-info", "app/node_modules/"]
    merged = merge_layers([_at(upper_inventory, 1), _at(lower_inventory, 0)])
    assert sorted((p.ecosystem, p.name) for p in merged.packages) == [
        ("Debian:12", "libc6"),
        ("PyPI", "pinned"),
        ("npm", "right-pad"),
    ]
    assert merged.os_release is not None and merged.os_release.version_id == "12"


# ------------------------------------------------------------ hostile databases


def test_malformed_stanza_is_a_finding_naming_file_and_layer(store: StagingStore) -> None:
    status = fixture("dpkg-status") + b"\nthis line is no field\n"
    findings, inventory = read(store, layer(reg("var/lib/dpkg/status", status)))
    [message] = warnings(findings, MALFORMED)
    assert message.startswith("layers[0]: var/lib/dpkg/status: line ")
    assert len(only(inventory)) == 7
    assert inventory.incomplete == [MALFORMED]
    no_errors(findings)


@pytest.mark.parametrize(
    "status",
    [
        b"Package: a\nVersion: " + b"9" * 100_000 + b"\n",
        b"Package: a\x1b[31m\nVersion: 1\n",
        bytes(range(256)) * 64,
        b"Package: a\nPackage: b\nVersion: 1\n",
        b"Package: a\nStatus: install ok\nVersion: 1\n",
        b"Package: a\nSource: b 1.0\nVersion: 1\n",
    ],
    ids=["huge-field", "control-chars", "binary", "field-twice", "bad-status", "bad-source"],
)
def test_lying_dpkg_status(store: StagingStore, status: bytes) -> None:
    findings, inventory = read(store, layer(reg("var/lib/dpkg/status", status)))
    assert warnings(findings, MALFORMED)
    assert inventory.incomplete == [MALFORMED]
    no_errors(findings)


def test_a_million_dpkg_entries_stop_at_the_package_cap(store: StagingStore) -> None:
    status = b"".join(b"Package: p%d\nVersion: 1\n\n" % i for i in range(1_000_000))
    findings, inventory = read(store, layer(reg("var/lib/dpkg/status", status)))
    assert warnings(findings, LIMIT) == [
        f"layers[0]: var/lib/dpkg/status: more than {limits.MAX_PACKAGES} packages in the layer"
    ]
    assert len(only(inventory)) == limits.MAX_PACKAGES
    assert inventory.incomplete == [LIMIT]


def test_database_larger_than_its_cap_is_not_read(
    store: StagingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(limits.MAX_FILE_BYTES, "dpkg", 1000)
    findings, inventory = read(store, layer(reg("var/lib/dpkg/status", fixture("dpkg-status"))))
    assert warnings(findings, LIMIT) == [
        "layers[0]: var/lib/dpkg/status: dpkg database of 6656 bytes, limit 1000"
    ]
    assert inventory.sources == []


def test_layer_capture_and_file_caps(store: StagingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "MAX_FILES", 2)
    members = [
        reg(f"app/node_modules/p{i}/package.json", b'{"name":"p%d","version":"1"}' % i)
        for i in range(4)
    ]
    findings, inventory = read(store, layer(*members))
    assert len(warnings(findings, LIMIT)) == 2
    assert len(only(inventory)) == 2
    monkeypatch.setattr(limits, "MAX_FILES", 100)
    monkeypatch.setattr(limits, "MAX_LAYER_BYTES", 60)
    findings, inventory = read(store, layer(*members))
    assert "databases of more than 60 bytes" in warnings(findings, LIMIT)[0]
    assert len(only(inventory)) == 2


def test_npm_depth_and_garbage(store: StagingStore) -> None:
    deep = "/".join(["node_modules/x"] * (limits.MAX_NPM_DEPTH + 1))
    findings, inventory = read(
        store,
        layer(
            reg(f"{deep}/package.json", b'{"name":"x","version":"1"}'),
            reg("node_modules/bad/package.json", b'{"name": "bad", "version": '),
            reg("node_modules/deep/package.json", b"[" * 100_000 + b"]" * 100_000),
            reg("node_modules/num/package.json", b'{"name": "num", "version": 1}'),
        ),
    )
    assert len(warnings(findings, LIMIT)) == 1
    assert len(warnings(findings, MALFORMED)) == 3
    assert only(inventory) == []


def _rpm_layer(tmp_path: Path, blobs: list[bytes]) -> bytes:
    return layer(reg("var/lib/rpm/rpmdb.sqlite", rpmdb_sqlite(tmp_path, blobs)))


def _entry(tag: int, kind: int, offset: int, count: int = 1) -> bytes:
    return struct.pack(">iIiI", tag, kind, offset, count)


@pytest.mark.parametrize(
    ("blob", "says"),
    [
        (struct.pack(">II", 1, 8) + _entry(1000, 6, 4096) + b"bash\0\0\0\0", "points at 4096"),
        (struct.pack(">II", 1, 8) + _entry(1000, 6, -5) + b"bash\0\0\0\0", "points at -5"),
        (struct.pack(">II", 70_000, 8) + bytes(16 * 70_000 + 8), "claims 70000 tags"),
        (struct.pack(">II", 3, 2**31) + b"\0" * 64, "2147483648 bytes of data"),
        (struct.pack(">II", 2, 8) + _entry(1000, 6, 0), "blob has 24"),
        (struct.pack(">II", 1, 4) + _entry(1000, 6, 0) + b"bash", "unterminated"),
        (struct.pack(">II", 1, 4) + _entry(1003, 4, 2) + b"\0\0\0\1", "unaligned"),
        (struct.pack(">II", 1, 4) + _entry(1000, 4, 0) + b"\0\0\0\1", "has type 4"),
        (b"\x00\x01", "header of 2 bytes"),
    ],
    ids=[
        "offset-past-data",
        "negative-offset",
        "too-many-tags",
        "too-much-data",
        "shorter-than-claimed",
        "unterminated",
        "unaligned-int",
        "wrong-type",
        "short",
    ],
)
def test_rpm_header_that_lies(store: StagingStore, tmp_path: Path, blob: bytes, says: str) -> None:
    findings, inventory = read(
        store, _rpm_layer(tmp_path, [rpm_package("bash", "5.1.8", "9.el9"), blob])
    )
    [message] = warnings(findings, MALFORMED)
    assert message.startswith("layers[0]: var/lib/rpm/rpmdb.sqlite: row 2")
    assert says in message
    assert [name for name, _, _ in only(inventory)] == ["bash"]
    no_errors(findings)


def test_rpmdb_that_is_not_an_rpmdb(store: StagingStore, tmp_path: Path) -> None:
    for content in (b"SQLite format 3\0" + b"\xff" * 5000, b"not sqlite at all"):
        findings, inventory = read(store, layer(reg("var/lib/rpm/rpmdb.sqlite", content)))
        assert warnings(findings, MALFORMED), content[:20]
        no_errors(findings)
    import sqlite3

    path = tmp_path / "view.sqlite"
    connection = sqlite3.connect(path)
    connection.execute(
        "CREATE VIEW Packages AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1"
        " FROM n) SELECT x AS hnum, x AS blob FROM n"
    )
    connection.commit()
    connection.close()
    findings, _ = read(store, layer(reg("var/lib/rpm/rpmdb.sqlite", path.read_bytes())))
    assert "no Packages table" in warnings(findings, MALFORMED)[0]


def test_sqlite_work_is_bounded(
    store: StagingStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rpmdb, "MAX_SQLITE_STEPS", 3)
    blobs = [rpm_package(f"p{i}", "1", "1") for i in range(2000)]
    findings, inventory = read(store, _rpm_layer(tmp_path, blobs))
    assert "steps" in warnings(findings, MALFORMED)[0]
    assert len(only(inventory)) < 2000


def _elf_with(buildinfo: bytes) -> bytes:
    body = b"\x7fELF" + b"\0" * 12 + b"\xff Go buildinf" * 3
    body += bytes(-len(body) % 16)
    return body + buildinfo + b"\0" * limits.MAX_BUILDINFO_BYTES


def _aligned_after(unaligned: bytes, header: bytes) -> bytes:
    body = unaligned + bytes(-len(unaligned) % 16)
    return body + header + b"\x08go1.22.1\x00" + bytes(limits.MAX_BUILDINFO_BYTES)


def test_go_build_info_that_lies(store: StagingStore) -> None:
    header = b"\xff Go buildinf:\x08\x02" + b"\0" * 16
    old_format = b"\xff Go buildinf:\x08\x00" + b"\0" * 16
    findings, inventory = read(
        store,
        layer(
            reg("bin/huge-length", _elf_with(header + b"\xff\xff\xff\xff\x0f"), mode=0o755),
            reg("bin/endless-varint", _elf_with(header + b"\xff" * 64), mode=0o755),
            reg("bin/not-go-version", _elf_with(header + b"\x03abc\x00"), mode=0o755),
            reg("bin/go1.17", _elf_with(old_format), mode=0o755),
            reg("bin/script", b"#!/bin/sh\n" + b"\xff Go buildinf:" * 8000, mode=0o755),
            # The linker aligns the header to 16: a magic elsewhere is data.
            reg("bin/aligned", _aligned_after(b"\x7fELF\0" + header, header), mode=0o755),
        ),
    )
    said = sorted(m.split(": ", 2)[1:] for m in warnings(findings, MALFORMED))
    assert said == [
        ["bin/endless-varint", "build info string length is cut short or too long"],
        ["bin/huge-length", "build info string of 4294967295 bytes runs past the data read"],
        ["bin/not-go-version", "Go version 'abc' does not start with go"],
    ]
    assert len(warnings(findings, UNSUPPORTED)) == 1
    assert only(inventory) == [("stdlib", "go1.22.1", "pkg:golang/stdlib@go1.22.1")]
    no_errors(findings)


def test_go_binaries_per_layer_are_capped(
    store: StagingStore, hello_go: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_GO_BINARIES", 1)
    findings, inventory = read(
        store,
        layer(reg("bin/a", hello_go, mode=0o755), reg("bin/b", hello_go, mode=0o755)),
    )
    assert len(inventory.sources) == 1
    assert warnings(findings, LIMIT)


def test_go_scan_is_bounded(
    store: StagingStore, hello_go: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "MAX_GO_SCAN_BYTES", 64 * 1024)
    findings, inventory = read(store, layer(reg("bin/a", hello_go, mode=0o755)))
    assert inventory.sources == []
    assert "no Go build info in the first 65536 bytes" in warnings(findings, LIMIT)[0]


def test_os_release_garbage(store: StagingStore) -> None:
    findings, inventory = read(store, layer(reg("etc/os-release", b"ID=\x1b]0;pwned\x07\n")))
    assert warnings(findings, MALFORMED)
    assert inventory.os_release is None


def test_stats_without_inventory_serialise() -> None:
    assert not stats_to_proto(LayerStats(0, "sha256:" + "0" * 64, "t")).HasField("inventory")


# ------------------------------------------------------------ property


_DATABASE_PATHS = [
    "var/lib/dpkg/status",
    "var/lib/dpkg/status.d/x",
    "lib/apk/db/installed",
    "var/lib/rpm/rpmdb.sqlite",
    "a/x-1.dist-info/METADATA",
    "node_modules/x/package.json",
    "etc/os-release",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    path=st.sampled_from(_DATABASE_PATHS + ["usr/bin/go-ish"]),
    prefix=st.sampled_from(
        [b"", b"SQLite format 3\0", b"\x7fELF", b"Package: a\nVersion: 1\n", b"P:a\nV:1\n"]
    ),
    body=st.binary(max_size=4096),
)
def test_o03_any_database_bytes_never_raise(path: str, prefix: bytes, body: bytes) -> None:
    """Whatever a database file holds, the inventory is a result with
    findings, serialisable over gRPC, never an exception."""
    content = prefix + body
    if path == "usr/bin/go-ish":
        content = b"\x7fELF" + bytes(12) + b"\xff Go buildinf:" + body + bytes(70_000)
    with tempfile.TemporaryDirectory() as directory:
        store = StagingStore(Path(directory))
        findings, stats = inspect(store, layer(reg(path, content, mode=0o755)), rule=INVENTORY)
    assert stats.completed
    no_errors(findings)
    stats_to_proto(stats).SerializeToString()
