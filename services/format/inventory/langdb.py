"""Language package metadata: Python ``*.dist-info/METADATA`` and
``*.egg-info/PKG-INFO``, npm ``node_modules/**/package.json``, and the
distribution's ``os-release``."""

from __future__ import annotations

import json
from collections.abc import Iterator

from pullguard.services.format.inventory.limits import MAX_FIELD
from pullguard.services.format.inventory.problems import malformed, text
from pullguard.services.runtime.inventory import OsRelease, Package
from pullguard.services.runtime.purl import npm_purl, pypi_purl


def python(data: bytes) -> Iterator[Package]:
    """Name and Version from the header block of core metadata (an email
    message: headers up to the first blank line)."""
    fields: dict[str, str] = {}
    for line in data.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t"):
            continue
        key, colon, value = line.partition(b":")
        if not colon:
            raise malformed("a header line without a colon")
        name = key.decode("ascii", "replace").strip().lower()
        if name in ("name", "version") and name not in fields:
            fields[name] = text(value, name.capitalize(), MAX_FIELD)
    else:
        if len(data) >= 64 * 1024:
            raise malformed("no end of the header block in the first 64 KiB")
    if not fields.get("name") or not fields.get("version"):
        raise malformed("no Name or Version header")
    yield Package(
        ecosystem="PyPI",
        name=fields["name"],
        version=fields["version"],
        purl=pypi_purl(fields["name"], fields["version"]),
    )


def npm(data: bytes) -> Iterator[Package]:
    """name and version of a package.json; one without them (a workspace
    root, a nested package.json of a bundle) lists nothing."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise malformed("not JSON") from None
    if not isinstance(document, dict):
        raise malformed("not a JSON object")
    name, version = document.get("name"), document.get("version")
    if name is None or version is None:
        return
    if not isinstance(name, str) or not isinstance(version, str):
        raise malformed("name or version is not a string")
    name = text(name, "name", MAX_FIELD)
    version = text(version, f"{name} version", MAX_FIELD)
    if not name or not version:
        return
    yield Package(ecosystem="npm", name=name, version=version, purl=npm_purl(name, version))


def os_release(data: bytes, path: str) -> OsRelease:
    """ID, VERSION_ID and PRETTY_NAME of an os-release(5) file (shell-style
    assignments; quotes removed, backslash escapes resolved)."""
    values: dict[str, str] = {}
    for line in data.split(b"\n"):
        line = line.strip()
        if not line or line.startswith(b"#"):
            continue
        key, equals, raw = line.partition(b"=")
        name = key.decode("ascii", "replace")
        if not equals or name not in ("ID", "VERSION_ID", "PRETTY_NAME"):
            continue
        value = raw.decode("utf-8", "replace")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
            if raw[:1] == b'"':
                value = _unescape(value)
        values[name] = text(value, name, MAX_FIELD)
    return OsRelease(
        path=path,
        id=values.get("ID", "").lower(),
        version_id=values.get("VERSION_ID", ""),
        pretty_name=values.get("PRETTY_NAME", ""),
    )


def _unescape(value: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in value:
        if escaped or ch != "\\":
            out.append(ch)
            escaped = False
        else:
            escaped = True
    return "".join(out)
