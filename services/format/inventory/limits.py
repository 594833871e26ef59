"""Bounds of the inventory, per layer. A layer past any of them gets an
``incomplete`` entry and a WARNING finding; reading goes on, judging the rest.

Constants rather than policy: they bound the work of parsing untrusted
databases, like the tar reader's :data:`~pullguard.services.format.tarstream.MAX_META`,
and real images stay far below them (a full Debian has ~3 MiB of dpkg status,
a UBI rpmdb.sqlite ~10 MiB, a large Node app ~5000 package.json files).
"""

from __future__ import annotations

#: Largest database file captured, by kind. Python metadata and os-release are
#: read only as far as their headers: the rest is cut, not refused.
MAX_FILE_BYTES = {
    "dpkg": 64 * 1024 * 1024,
    "apk": 32 * 1024 * 1024,
    "rpm": 256 * 1024 * 1024,
    "npm": 1024 * 1024,
    "python": 64 * 1024,
    "os-release": 64 * 1024,
}
#: Kinds whose captured head is enough (no limit finding when cut).
HEAD_ONLY = frozenset({"python", "os-release"})
#: Bytes captured from all databases of one layer.
MAX_LAYER_BYTES = 512 * 1024 * 1024
#: Database files read in one layer (each package.json and METADATA counts).
MAX_FILES = 20_000
#: Packages listed by one layer.
MAX_PACKAGES = 200_000
#: Nesting of node_modules in one package.json path.
MAX_NPM_DEPTH = 16
#: Executables scanned for Go build information in one layer.
MAX_GO_BINARIES = 2_000
#: Bytes of one executable searched for the build-info magic.
MAX_GO_SCAN_BYTES = 512 * 1024 * 1024
#: Bytes kept from the build-info magic on (header, version, module info).
MAX_BUILDINFO_BYTES = 1024 * 1024
#: Longest name, version, arch or source field kept; longer is a lie.
MAX_FIELD = 512
