"""Layer inspection: THREATS L-01 to L-07, one test per sub-case.

Every layer is built byte by byte (tarbuild), staged through the real
StagingStore, compressed with the real gzip/zstd, and inspected by the
domain code; nothing is ever extracted.
"""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import pytest
import zstandard

from pullguard.services.format import layertree
from pullguard.services.format.descriptors import Descriptor
from pullguard.services.format.layers import inspect_layer, inspect_layers
from pullguard.services.format.mediatypes import OCI_CONFIG, OCI_EMPTY
from pullguard.services.runtime.config import LayerRule, Limits
from pullguard.services.runtime.findings import Severity
from pullguard.services.runtime.staging import StagingStore
from tests.unit.format.tarbuild import (
    DOCKER_GZIP,
    SESSION,
    TAR,
    TAR_GZIP,
    TAR_ZSTD,
    archive,
    base256,
    digest,
    directory,
    errors,
    file,
    gnu_long,
    hardlink,
    header,
    inspect,
    octal,
    pax,
    pax_record,
    stage_blob,
    stage_layer,
    symlink,
)


@pytest.fixture
def store(tmp_path: Path) -> StagingStore:
    return StagingStore(tmp_path / "staging")


def denied_with(store: StagingStore, tar: bytes, code: str, **kwargs: object) -> bool:
    findings, _ = inspect(store, tar, **kwargs)  # type: ignore[arg-type]
    return code in errors(findings)


def clean(store: StagingStore, tar: bytes, **kwargs: object) -> bool:
    findings, stats = inspect(store, tar, **kwargs)  # type: ignore[arg-type]
    return not errors(findings) and stats.completed


# ---------------------------------------------------------------- positives


@pytest.mark.parametrize(
    "media_type",
    [
        TAR,
        TAR_GZIP,
        TAR_ZSTD,
        DOCKER_GZIP,
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    ],
)
def test_ordinary_layer_is_clean(store: StagingStore, media_type: str) -> None:
    tar = archive(
        directory("./"),
        directory("etc/"),
        file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        directory("tmp", mode=0o1777),
        symlink("bin", "usr/bin"),
        symlink("etc/localtime", "/usr/share/zoneinfo/UTC"),
        symlink("lib/ld.so", "../../../lib64/ld.so"),
        hardlink("etc/passwd-", "etc/passwd"),
        file("usr/bin/tool", b"\x7fELF" + bytes(3000), mode=0o755),
        file(r"etc/systemd/system/dev-disk-by\x2dlabel.device", b""),
        file("etc/.wh.removed"),
        file("var/.wh..wh..opq"),
        file("var/new", b"new"),
    )
    findings, stats = inspect(store, tar, media_type)
    assert findings == []
    assert stats.completed and stats.entries == 13
    assert stats.uncompressed_bytes == len(tar)
    assert stats.diff_id == digest(tar)


def test_empty_layer_is_clean(store: StagingStore) -> None:
    assert clean(store, archive())
    assert clean(store, b"", media_type=TAR)


# ---------------------------------------------------------------- L-01


@pytest.mark.parametrize(
    "name", ["../../../../etc/cron.d/evil", "./a/../../b", "a/b/../../../c", "a/../b", ".."]
)
def test_l01_dotdot_traversal(store: StagingStore, name: str) -> None:
    assert denied_with(store, archive(file(name, b"x")), "format.unsafe_path")


def test_l01_absolute_path(store: StagingStore) -> None:
    assert denied_with(store, archive(file("/etc/passwd", b"x")), "format.unsafe_path")


@pytest.mark.parametrize("name", ["..\\..\\evil", "a\\..\\..\\b", "C:\\evil", "\\evil", "c:/x"])
def test_l01_windows_backslash_traversal(store: StagingStore, name: str) -> None:
    # Windows runtimes take \ as a separator: such names climb out there.
    assert denied_with(store, archive(file(name, b"x")), "format.unsafe_path")


def test_l01_nul_in_pax_path(store: StagingStore) -> None:
    tar = archive(pax({"path": b"ok\0/../../etc/passwd"}), file("ok", b"x"))
    assert denied_with(store, tar, "format.unsafe_path")


def test_l01_nul_in_gnu_long_name(store: StagingStore) -> None:
    tar = archive(gnu_long(b"ok\0../../etc/passwd"), file("ok", b"x"))
    assert denied_with(store, tar, "format.unsafe_path")


def test_l01_nul_in_ustar_name_ends_it_as_go_does(store: StagingStore) -> None:
    # The ustar field is a C string: Go and tarfile both stop at the NUL.
    findings, _ = inspect(store, archive(file(b"a\0/../../x", b"x")))
    assert findings == []


def test_l01_ten_thousand_byte_pax_name(store: StagingStore) -> None:
    tar = archive(pax({"path": "a/" * 5000}), file("short", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_gnu_longlink_chain(store: StagingStore) -> None:
    tar = archive(gnu_long("first"), gnu_long("second"), file("x", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_oversized_pax_header(store: StagingStore) -> None:
    tar = archive(pax({"comment": "x" * (65 * 1024)}), file("x", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


@pytest.mark.parametrize(
    "records",
    [
        pax_record("SCHILY.xattr.", "v"),
        pax_record("SCHILY.xattr." + "n" * 300, "v"),
        b"9 a=b\n",  # stated length longer than the record
        b"3 a=b\n",
        b"x a=b\n",
        b"5 ab\n",
        b"7 a=bc ",
    ],
)
def test_l01_invalid_pax_records(store: StagingStore, records: bytes) -> None:
    assert denied_with(store, archive(pax(records), file("x", b"x")), "format.malformed_tar")


def test_l01_too_many_pax_records(store: StagingStore) -> None:
    records = b"".join(pax_record(f"k{i}", "v") for i in range(300))
    assert denied_with(store, archive(pax(records), file("x", b"x")), "format.malformed_tar")


def test_l01_huge_base256_size(store: StagingStore) -> None:
    tar = archive(header("big", fields={"size": base256(2**62, 12)}), end=False)
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_negative_base256_size(store: StagingStore) -> None:
    tar = archive(header("neg", fields={"size": base256(-1, 12)}))
    assert denied_with(store, tar, "format.malformed_tar")


@pytest.mark.parametrize("field", ["mtime", "uid", "gid"])
def test_l01_negative_mtime_or_ids(store: StagingStore, field: str) -> None:
    width = 12 if field == "mtime" else 8
    tar = archive(file("x", b"x", fields={field: base256(-5, width)}))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_checksum_mismatch(store: StagingStore) -> None:
    assert denied_with(store, archive(header("x", checksum=1)), "format.malformed_tar")


def test_l01_signed_checksum_accepted(store: StagingStore) -> None:
    block = bytearray(header(b"caf\xc3\xa9"))
    signed = sum(b - 256 if b >= 128 else b for b in block[:148] + b" " * 8 + block[156:])
    block[148:156] = b"%06o\0 " % signed
    assert clean(store, archive(bytes(block)))


@pytest.mark.parametrize("value", [b"12 34\0\0", b"0x1f\0\0\0", b"1_0\0\0\0\0", b"-1\0\0\0\0\0"])
def test_l01_non_octal_field(store: StagingStore, value: bytes) -> None:
    assert denied_with(store, archive(file("x", fields={"mode": value})), "format.malformed_tar")


@pytest.mark.parametrize("cut", [100, 600, 1500])
def test_l01_truncated_stream(store: StagingStore, cut: int) -> None:
    tar = archive(file("a", b"x" * 1000), file("b", b"y"))
    assert denied_with(store, tar[:cut], "format.malformed_tar")


def test_l01_data_after_end_of_archive(store: StagingStore) -> None:
    tar = archive(file("a", b"x")) + file("hidden", b"evil")
    assert denied_with(store, tar, "format.malformed_tar")
    # Zero padding after the marker (a 10 KiB record) is normal.
    assert clean(store, archive(file("a", b"x")) + bytes(8192))


def test_l01_zero_block_then_header(store: StagingStore) -> None:
    tar = file("a", b"x") + bytes(512) + file("b", b"y") + bytes(1024)
    assert denied_with(store, tar, "format.malformed_tar")


@pytest.mark.parametrize("typeflag", [b"7", b"V", b"M", b"N", b"D", b"Z"])
def test_l01_entry_types_runtimes_do_not_extract(store: StagingStore, typeflag: bytes) -> None:
    assert denied_with(store, archive(header("x", typeflag=typeflag)), "format.malformed_tar")


@pytest.mark.parametrize("typeflag", [b"1", b"2", b"5", b"6"])
def test_l01_size_on_entry_without_data(store: StagingStore, typeflag: bytes) -> None:
    # Go skips no data for these types; a reader trusting the size would desync.
    tar = archive(file("target"), header("x", typeflag=typeflag, size=512, linkname="target"))
    assert denied_with(store, tar + bytes(512), "format.malformed_tar")


def test_l01_root_replaced_by_file(store: StagingStore) -> None:
    assert denied_with(store, archive(file("./", b"x")), "format.unsafe_path")


def test_l01_v7_header_with_prefix_area(store: StagingStore) -> None:
    # Go ignores it; Python's tarfile would prepend it to the name.
    tar = archive(file("passwd", b"x", magic=b"\0" * 6, version=b"\0\0", prefix=b"../../etc"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_ustar_prefix_joins_the_name(store: StagingStore) -> None:
    assert denied_with(store, archive(file("passwd", b"x", prefix=b"../etc")), "format.unsafe_path")


def test_l01_empty_pax_path(store: StagingStore) -> None:
    tar = archive(pax({"path": ""}), file("ok", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l01_pax_number_not_decimal(store: StagingStore) -> None:
    for key in ("size", "uid", "mtime"):
        tar = archive(pax({key: "1e3"}), file("ok", b"x"))
        assert denied_with(store, tar, "format.malformed_tar")


# ---------------------------------------------------------------- L-02


def test_l02_symlink_then_file_through_it(store: StagingStore) -> None:
    tar = archive(symlink("d1", "../../etc"), file("d1/passwd", b"x"))
    assert denied_with(store, tar, "format.link_escape")


def test_l02_hardlink_through_symlinked_directory(store: StagingStore) -> None:
    tar = archive(
        directory("breakouts"),
        symlink("breakouts/d1", "../../etc"),
        hardlink("breakouts/mypasswd", "/breakouts/d1/passwd"),
    )
    assert denied_with(store, tar, "format.link_escape")
    relative = archive(
        symlink("breakouts/d1", "../../etc"),
        hardlink("breakouts/mypasswd", "breakouts/d1/passwd"),
    )
    assert denied_with(store, relative, "format.link_escape")


def test_l02_hardlink_to_deeper_symlink(store: StagingStore) -> None:
    # CVE-2025-4330 / CVE-2026-11940: the copy resolves from another depth.
    tar = archive(symlink("a/b/c/link", "../../../etc/passwd"), hardlink("x", "a/b/c/link"))
    assert denied_with(store, tar, "format.link_escape")


def test_l02_absolute_symlink_parent(store: StagingStore) -> None:
    tar = archive(symlink("foo", "/"), file("foo/tmp/x", b"x"))
    assert denied_with(store, tar, "format.link_escape")


def test_l02_directory_replacing_symlink(store: StagingStore) -> None:
    assert denied_with(
        store, archive(symlink("a", "/etc"), directory("a")), "format.duplicate_path"
    )
    assert denied_with(
        store, archive(directory("a"), file("a/x"), symlink("a", "/etc")), "format.duplicate_path"
    )


@pytest.mark.parametrize("target", ["../x", "a/../../x", "/etc/passwd", "etc/passwd", "."])
def test_l02_hardlink_outside_the_layer(store: StagingStore, target: str) -> None:
    # Runtimes resolve a hard link's target from the layer root, never the CWD.
    assert denied_with(store, archive(hardlink("x", target)), "format.link_escape")


def test_l02_hardlink_to_directory_or_itself(store: StagingStore) -> None:
    assert denied_with(store, archive(directory("d"), hardlink("x", "d")), "format.link_escape")
    assert denied_with(store, archive(hardlink("x", "x")), "format.link_escape")


def test_l02_symlinks_alone_are_fine(store: StagingStore) -> None:
    tar = archive(symlink("abs", "/etc/shadow"), symlink("up", "../../../../etc"), file("f"))
    assert clean(store, tar)


def test_l02_gnu_long_link_target_checked(store: StagingStore) -> None:
    tar = archive(gnu_long("../" * 40 + "etc/passwd", b"K"), hardlink("x", "short"))
    assert denied_with(store, tar, "format.link_escape")


# ---------------------------------------------------------------- L-03


@pytest.mark.parametrize("name", [".wh..", ".wh...", "etc/.wh..", "etc/.wh...", ".wh."])
def test_l03_whiteout_dot_names(store: StagingStore, name: str) -> None:
    assert denied_with(store, archive(file(name)), "format.invalid_whiteout")


def test_l03_opaque_whiteout_of_root_is_reported(store: StagingStore) -> None:
    findings, _ = inspect(store, archive(file(".wh..wh..opq")))
    assert [(f.code, f.severity) for f in findings] == [("format.opaque_root", Severity.WARNING)]


def test_l03_whiteout_of_lower_symlink_is_fine(store: StagingStore) -> None:
    # Removes the symlink itself; a lower layer's link is not followed.
    assert clean(store, archive(file(".wh.localetc")))


def test_l03_whiteout_through_symlinked_parent(store: StagingStore) -> None:
    tar = archive(symlink("localetc", "/etc"), file("localetc/.wh.passwd"))
    assert denied_with(store, tar, "format.link_escape")


def test_l03_whiteout_relative_path(store: StagingStore) -> None:
    assert denied_with(store, archive(file("dne/../.wh.etc")), "format.unsafe_path")


def test_l03_whiteout_directory_with_content(store: StagingStore) -> None:
    assert denied_with(store, archive(file(".wh.etc/somefile", b"x")), "format.invalid_whiteout")
    tar = archive(file(".wh.etc"), file(".wh.etc/somefile", b"x"))
    assert denied_with(store, tar, "format.invalid_whiteout")


@pytest.mark.parametrize(
    "entries",
    [
        (file(".wh.foo"), file("foo", b"x")),
        (file("foo", b"x"), file(".wh.foo")),
        (file(".wh.foo"), file("foo/bar", b"x")),
        (file("foo/bar", b"x"), file(".wh.foo")),
    ],
)
def test_l03_whiteout_and_entry_in_one_layer(
    store: StagingStore, entries: tuple[bytes, ...]
) -> None:
    # Whiteouts apply to lower layers only; order would decide otherwise.
    assert denied_with(store, archive(*entries), "format.invalid_whiteout")


def test_l03_non_empty_whiteout(store: StagingStore) -> None:
    assert denied_with(store, archive(file(".wh.foo", b"payload")), "format.invalid_whiteout")
    assert denied_with(store, archive(directory(".wh.foo")), "format.invalid_whiteout")


def test_l03_aufs_metadata_names(store: StagingStore) -> None:
    assert denied_with(store, archive(file(".wh..wh.plnk/123.456")), "format.invalid_whiteout")
    assert denied_with(store, archive(file(".wh..wh.aufs")), "format.invalid_whiteout")


# ---------------------------------------------------------------- L-04


def test_l04_same_path_twice(store: StagingStore) -> None:
    tar = archive(file("usr/bin/curl", b"benign"), file("usr/bin/curl", b"evil"))
    assert denied_with(store, tar, "format.duplicate_path")


@pytest.mark.parametrize(("first", "second"), [("a", "a/"), ("./a", "a"), ("a//b", "a/b")])
def test_l04_names_equal_after_normalising(store: StagingStore, first: str, second: str) -> None:
    tar = archive(file(first), header(second, typeflag=b"0"))
    assert denied_with(store, tar, "format.duplicate_path")


def test_l04_pax_path_is_what_counts(store: StagingStore) -> None:
    # PAX path wins over the ustar name, in Go and everywhere else.
    tar = archive(pax({"path": "../../etc/passwd"}), file("harmless", b"x"))
    assert denied_with(store, tar, "format.unsafe_path")
    duplicate = archive(file("a", b"x"), pax({"path": "a"}), file("b", b"y"))
    assert denied_with(store, duplicate, "format.duplicate_path")


def test_l04_gnu_long_name_differs_from_pax_path(store: StagingStore) -> None:
    # Go takes the long name, tarfile whichever header came last.
    tar = archive(pax({"path": "usr/bin/benign"}), gnu_long("usr/bin/evil"), file("x", b"x"))
    assert denied_with(store, tar, "format.duplicate_path")
    same = archive(pax({"path": "usr/bin/tool"}), gnu_long("usr/bin/tool"), file("x", b"x"))
    assert clean(store, same)


def test_l04_file_hardlink_file(store: StagingStore) -> None:
    tar = archive(file("a", b"1"), file("b", b"2"), hardlink("a", "b"), file("a", b"3"))
    assert denied_with(store, tar, "format.duplicate_path")


def test_l04_two_pax_headers_for_one_entry(store: StagingStore) -> None:
    tar = archive(pax({"path": "one"}), pax({"path": "two"}), file("x", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l04_pax_key_given_twice(store: StagingStore) -> None:
    records = pax_record("path", "one") + pax_record("path", "two")
    assert denied_with(store, archive(pax(records), file("x", b"x")), "format.malformed_tar")


def test_l04_global_pax_header_applies_to_nothing(store: StagingStore) -> None:
    # Go (the runtimes) ignores global records; tarfile would apply them.
    findings, stats = inspect(store, archive(pax({"path": "../evil"}, b"g"), file("ok", b"x")))
    assert findings == [] and stats.entries == 2


def test_l04_global_header_inside_a_chain(store: StagingStore) -> None:
    tar = archive(pax({"path": "a"}), pax({"comment": "c"}, b"g"), file("x", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l04_directory_replaced_by_file(store: StagingStore) -> None:
    tar = archive(file("a/b", b"x"), file("a", b"y"))
    assert denied_with(store, tar, "format.duplicate_path")
    assert denied_with(store, archive(file("a", b"y"), file("a/b", b"x")), "format.duplicate_path")


def test_l04_directory_after_its_content_is_fine(store: StagingStore) -> None:
    assert clean(store, archive(file("a/b", b"x"), directory("a"), directory("a/c")))


# ---------------------------------------------------------------- L-05


def test_l05_setuid_reported_by_default(store: StagingStore) -> None:
    findings, _ = inspect(store, archive(file("usr/local/bin/x", b"x", mode=0o4755)))
    assert [(f.code, f.severity) for f in findings] == [("format.setuid", Severity.WARNING)]


def test_l05_setuid_and_setgid_denied_by_policy(store: StagingStore) -> None:
    rule = LayerRule(setuid="deny")
    for mode in (0o4755, 0o2755):
        tar = archive(file("x", b"x", mode=mode))
        assert denied_with(store, tar, "format.setuid", rule=rule)


def test_l05_setgid_directory_is_fine(store: StagingStore) -> None:
    assert inspect(store, archive(directory("var/local", mode=0o2775)))[0] == []


@pytest.mark.parametrize("typeflag", [b"3", b"4"])
def test_l05_device_nodes_denied_by_default(store: StagingStore, typeflag: bytes) -> None:
    tar = archive(header("dev/mem", typeflag=typeflag, fields={"devmajor": octal(1, 8)}))
    assert denied_with(store, tar, "format.device_node")
    findings, _ = inspect(store, tar, rule=LayerRule(devices="report"))
    assert [(f.code, f.severity) for f in findings] == [("format.device_node", Severity.WARNING)]


def test_l05_file_capability(store: StagingStore) -> None:
    tar = archive(pax({"SCHILY.xattr.security.capability": b"\x01\0\0\x02"}), file("x", b"x"))
    findings, _ = inspect(store, tar)
    assert [(f.code, f.severity) for f in findings] == [
        ("format.file_capability", Severity.WARNING)
    ]
    assert denied_with(store, tar, "format.file_capability", rule=LayerRule(setuid="deny"))


def test_l05_world_writable_directory(store: StagingStore) -> None:
    findings, _ = inspect(store, archive(directory("shared", mode=0o777)))
    assert [(f.code, f.severity) for f in findings] == [
        ("format.world_writable_dir", Severity.WARNING)
    ]
    assert inspect(store, archive(directory("tmp", mode=0o1777)))[0] == []


def test_l05_fifo(store: StagingStore) -> None:
    findings, _ = inspect(store, archive(header("run/pipe", typeflag=b"6")))
    assert [(f.code, f.severity) for f in findings] == [("format.fifo", Severity.INFO)]


def test_l05_uid_4294967295(store: StagingStore) -> None:
    tar = archive(file("x", b"x", fields={"uid": base256(2**32 - 1, 8)}))
    findings, _ = inspect(store, tar)
    assert [(f.code, f.severity) for f in findings] == [("format.unusual_owner", Severity.WARNING)]


def test_l05_ids_beyond_32_bits(store: StagingStore) -> None:
    # uid_t is 32 bits: 2**32 would wrap to root.
    tar = archive(pax({"uid": str(2**32)}), file("x", b"x"))
    assert denied_with(store, tar, "format.malformed_tar")


def test_l05_overlay_xattrs(store: StagingStore) -> None:
    # An opaque directory by xattr would bypass the whiteout rules.
    tar = archive(pax({"SCHILY.xattr.trusted.overlay.opaque": "y"}), directory("etc"))
    assert denied_with(store, tar, "format.overlay_xattr")


# ---------------------------------------------------------------- L-06


def test_l06_absolute_cap(store: StagingStore) -> None:
    # No entry is over the cap; together they are.
    tar = archive(*(file(f"zeros{i}", bytes(768 * 1024)) for i in range(4)))
    rule = LayerRule(max_uncompressed_bytes=2 * 1024 * 1024)
    findings, stats = inspect(store, tar, rule=rule)
    assert "format.decompression_limit" in errors(findings)
    assert stats.uncompressed_bytes <= 3 * 1024 * 1024 and not stats.completed


def test_l06_declared_entry_size_beyond_cap(store: StagingStore) -> None:
    # Refused at the header, before any of its data is read.
    tar = archive(header("big", size=10 * 1024 * 1024), end=False)
    rule = LayerRule(max_uncompressed_bytes=1024 * 1024)
    assert denied_with(store, tar, "format.decompression_limit", rule=rule)


def test_l06_ratio_cap(store: StagingStore) -> None:
    tar = archive(file("zeros", bytes(20 * 1024 * 1024)))
    findings, stats = inspect(store, tar, rule=LayerRule(max_ratio=50))
    assert "format.decompression_limit" in errors(findings)
    assert stats.uncompressed_bytes < 18 * 1024 * 1024
    assert clean(store, tar, rule=LayerRule(max_ratio=1000))


def test_l06_zstd_window_too_large(store: StagingStore) -> None:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    stream = compressor.compressobj()
    frame = bytearray(stream.compress(archive(file("x", b"x"))) + stream.flush())
    assert frame[4] & 0x20 == 0  # a window descriptor follows
    frame[5] = 21 << 3  # 2 GiB
    findings, _ = inspect(store, b"", TAR_ZSTD, blob=bytes(frame))
    assert "format.decompression_limit" in errors(findings)


def test_l06_zstd_block_beyond_maximum(store: StagingStore) -> None:
    raw = bytearray(zstandard.ZstdCompressor(level=1).compress(archive(file("x", b"x"))))
    header_size = 6 if raw[4] & 0x20 else 7
    # First block header: claim 200 KiB, more than Block_Maximum_Size.
    block = int.from_bytes(raw[header_size : header_size + 3], "little")
    block = (block & 0x7) | (200 * 1024) << 3
    raw[header_size : header_size + 3] = block.to_bytes(3, "little")
    assert denied_with(
        store, b"", "format.invalid_compression", media_type=TAR_ZSTD, blob=bytes(raw)
    )


def test_l06_gzip_members_are_all_read(store: StagingStore) -> None:
    # The second member carries more tar data; Go reads it, so must we.
    first = file("ok", b"x")
    second = archive(file("../evil", b"y"))
    blob = gzip.compress(first) + gzip.compress(second)
    findings, stats = inspect(store, first + second, blob=blob)
    assert "format.unsafe_path" in errors(findings)
    assert stats.uncompressed_bytes == len(first + second)


@pytest.mark.parametrize("trailer", [b"garbage", b"\0\0\0\0", b"\x1f", b"\x1f\x8b"])
def test_l06_gzip_trailing_garbage(store: StagingStore, trailer: bytes) -> None:
    tar = archive(file("a", b"x"))
    blob = gzip.compress(tar) + trailer
    assert denied_with(store, tar, "format.invalid_compression", blob=blob)


def test_l06_gzip_corrupt_or_truncated(store: StagingStore) -> None:
    tar = archive(file("a", b"x" * 5000))
    blob = gzip.compress(tar)
    assert denied_with(store, tar, "format.invalid_compression", blob=blob[:-6])
    flipped = blob[:-8] + bytes([blob[-8] ^ 1]) + blob[-7:]  # CRC-32
    assert denied_with(store, tar, "format.invalid_compression", blob=flipped)


@pytest.mark.parametrize("trailer", [b"junk", b"\0\0\0\0\0", b"\x28\xb5"])
def test_l06_zstd_trailing_garbage(store: StagingStore, trailer: bytes) -> None:
    tar = archive(file("a", b"x"))
    blob = zstandard.ZstdCompressor().compress(tar) + trailer
    assert denied_with(store, tar, "format.invalid_compression", media_type=TAR_ZSTD, blob=blob)


def test_l06_zstd_truncated_and_multi_frame(store: StagingStore) -> None:
    first, second = file("a", b"x"), archive(file("b", b"y"))
    compressor = zstandard.ZstdCompressor()
    blob = compressor.compress(first) + compressor.compress(second)
    assert clean(store, first + second, media_type=TAR_ZSTD, blob=blob)
    assert denied_with(
        store, first, "format.invalid_compression", media_type=TAR_ZSTD, blob=blob[:-3]
    )
    skippable = b"\x50\x2a\x4d\x18" + (3).to_bytes(4, "little") + b"abc"
    assert clean(store, first + second, media_type=TAR_ZSTD, blob=skippable + blob)


def test_l06_gnu_sparse_is_refused(store: StagingStore) -> None:
    old_style = archive(header("sparse", typeflag=b"S", magic=b"ustar ", version=b" \0"))
    assert denied_with(store, old_style, "format.malformed_tar")
    pax_style = archive(
        pax({"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "2" * 18}),
        file("sparse", b"1\n0\n0\n"),
    )
    assert denied_with(store, pax_style, "format.malformed_tar")


def test_l06_entry_count_cap(store: StagingStore) -> None:
    tar = archive(*(file(f"f{i}") for i in range(30)))
    assert denied_with(store, tar, "format.decompression_limit", rule=LayerRule(max_entries=10))
    assert clean(store, tar, rule=LayerRule(max_entries=30))


def test_l06_path_memory_is_bounded(store: StagingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(layertree, "MAX_PATH_BYTES", 4096)
    deep = "/".join(f"d{i:03}" for i in range(200))
    tar = archive(*(pax({"path": f"{deep}/f{i}"}) + file(f"f{i}") for i in range(5)))
    assert denied_with(store, tar, "format.decompression_limit")


@pytest.mark.parametrize(("magic", "found"), [(b"BZh91AY&SY", "bzip2"), (b"\xfd7zXZ\x00", "xz")])
def test_l06_other_compression_inside_gzip_type(
    store: StagingStore, magic: bytes, found: str
) -> None:
    findings, stats = inspect(store, b"", blob=magic + bytes(100))
    assert "format.mediatype_content_mismatch" in errors(findings)
    assert stats.compression == found


# ---------------------------------------------------------------- L-07


def test_l07_diffid_mismatch(store: StagingStore) -> None:
    tar = archive(file("a", b"x"))
    findings, stats = inspect(store, tar, diff_id=digest(b"something else"))
    assert "format.diffid_mismatch" in errors(findings)
    assert stats.diff_id == digest(tar)


@pytest.mark.parametrize(
    ("media_type", "content"),
    [
        (TAR_GZIP, "zstd"),
        (TAR_GZIP, "none"),
        (DOCKER_GZIP, "zstd"),
        (TAR_ZSTD, "gzip"),
        (TAR_ZSTD, "none"),
        (TAR, "gzip"),
        (TAR, "zstd"),
    ],
)
def test_l07_media_type_and_content_differ(
    store: StagingStore, media_type: str, content: str
) -> None:
    tar = archive(file("a", b"x"))
    blob = {
        "gzip": gzip.compress(tar),
        "zstd": zstandard.ZstdCompressor().compress(tar),
        "none": tar,
    }[content]
    findings, stats = inspect(store, tar, media_type, blob=blob)
    assert errors(findings) == {"format.mediatype_content_mismatch"}
    assert stats.compression == content


def test_l07_layer_type_pullguard_cannot_read(store: StagingStore) -> None:
    tar = archive(file("a", b"x"))
    findings, _ = inspect(store, tar, "application/vnd.oci.image.layer.v1.tar+bzip2", blob=tar)
    assert errors(findings) == {"format.layer_not_inspectable"}


def test_l06_staged_file_replaced_after_hashverify_is_caught_by_its_size(
    store: StagingStore,
) -> None:
    # Format leaves the compressed digest to hashverify (see the layers module
    # docstring); a staged file of another size than the verified descriptor's
    # is still refused before anything is decompressed.
    tar = archive(file("a", b"x"))
    blob = gzip.compress(tar)
    key = stage_blob(store, blob, digest(blob))
    findings, stats = inspect_layer(
        store,
        SESSION,
        0,
        Descriptor(TAR_GZIP, key, len(blob) + 1),
        digest(tar),
        LayerRule(),
        threading.Event(),
    )
    assert errors(findings) == {"format.staged_size_mismatch"}
    assert stats.uncompressed_bytes == 0


# ---------------------------------------------------------------- whole images


def _config(store: StagingStore, diff_ids: list[str]) -> Descriptor:
    body = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    ).encode()
    return Descriptor(OCI_CONFIG, stage_blob(store, body), len(body))


def test_l07_layers_in_another_order_than_diff_ids(store: StagingStore) -> None:
    one, one_id = stage_layer(store, archive(file("one", b"1")))
    two, two_id = stage_layer(store, archive(file("two", b"2")), TAR_ZSTD)
    config = _config(store, [one_id, two_id])
    ok = inspect_layers(store, SESSION, config, [one, two], LayerRule(), Limits())
    assert ok.verdict.allowed and ok.verdict.findings == ()
    assert [s.diff_id for s in ok.layers] == [one_id, two_id]
    swapped = inspect_layers(store, SESSION, config, [two, one], LayerRule(), Limits())
    assert [f.code for f in swapped.verdict.findings] == ["format.diffid_mismatch"] * 2


def test_f17_diff_id_mismatch(store: StagingStore) -> None:
    layer, _ = stage_layer(store, archive(file("a", b"x")))
    config = _config(store, [digest(b"another layer")])
    result = inspect_layers(store, SESSION, config, [layer], LayerRule(), Limits())
    assert not result.verdict.allowed
    assert [f.code for f in result.verdict.findings] == ["format.diffid_mismatch"]


def test_unreadable_diff_ids_deny(store: StagingStore) -> None:
    layer, diff_id = stage_layer(store, archive(file("a", b"x")))
    for diff_ids in ([], [diff_id, diff_id], ["sha256:UPPER"]):
        config = _config(store, diff_ids)
        result = inspect_layers(store, SESSION, config, [layer], LayerRule(), Limits())
        assert "format.config_mismatch" in {f.code for f in result.verdict.findings}
        assert not result.verdict.allowed


def test_inspection_off_allows_with_a_note(store: StagingStore) -> None:
    layer, _ = stage_layer(store, archive(file("../evil", b"x")))
    config = _config(store, [digest(b"wrong")])
    result = inspect_layers(store, SESSION, config, [layer], LayerRule(inspect=False), Limits())
    assert result.verdict.allowed
    assert [f.code for f in result.verdict.findings] == ["format.layers_not_inspected"]


def test_artifacts_are_not_inspected_only_when_admitted(store: StagingStore) -> None:
    layer, _ = stage_layer(store, b"not a tar", TAR)
    empty = Descriptor(OCI_EMPTY, stage_blob(store, b"{}"), 2)
    helm = "application/vnd.cncf.helm.chart.v1"
    admitted = inspect_layers(
        store,
        SESSION,
        empty,
        [layer],
        LayerRule(),
        Limits(),
        artifact_type=helm,
        artifact_types=(helm,),
    )
    assert admitted.verdict.allowed
    assert [f.code for f in admitted.verdict.findings] == ["format.layers_not_inspected"]
    refused = inspect_layers(
        store, SESSION, empty, [layer], LayerRule(), Limits(), artifact_type=helm
    )
    assert [f.code for f in refused.verdict.findings] == ["format.artifact_not_allowed"]


def test_cancelled_inspection_stops(store: StagingStore) -> None:
    from pullguard.services.format.layers import InspectionCancelled

    descriptor, diff_id = stage_layer(store, archive(file("big", bytes(3 * 1024 * 1024))))
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(InspectionCancelled):
        inspect_layer(store, SESSION, 0, descriptor, diff_id, LayerRule(), cancel)


def test_many_findings_are_bounded(store: StagingStore) -> None:
    tar = archive(*(file(f"../evil{i}") for i in range(100)))
    findings, stats = inspect(store, tar)
    unsafe = [f for f in findings if f.code == "format.unsafe_path"]
    assert len(unsafe) == 10 and not stats.completed
    assert any(f.code == "format.findings_truncated" for f in findings)
