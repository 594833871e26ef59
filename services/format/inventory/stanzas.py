"""RFC 822-like stanzas, as dpkg's status and apk's installed database write them."""

from __future__ import annotations

from collections.abc import Iterator

from pullguard.services.format.inventory.problems import malformed


def deb822(data: bytes, wanted: frozenset[str]) -> Iterator[dict[str, bytes]]:
    """Stanzas of ``Field: value`` lines separated by blank lines, keeping only
    ``wanted`` fields (continuation lines of those are joined). A line that
    is neither a field nor a continuation raises, naming its number."""
    stanza: dict[str, bytes] = {}
    current = ""
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line.strip():
            if stanza:
                yield stanza
            stanza, current = {}, ""
            continue
        if line[:1] in (b" ", b"\t"):
            if not current and not stanza and number == 1:
                raise malformed(f"line {number} continues no field")
            if current in wanted:
                stanza[current] += b"\n" + line.strip()
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name:
            raise malformed(f"line {number} is not a field")
        current = name.decode("ascii", "replace")
        if current in wanted:
            if current in stanza:
                raise malformed(f"line {number}: field {current} twice in one package")
            stanza[current] = value.strip()
    if stanza:
        yield stanza


def apk_records(data: bytes) -> Iterator[dict[str, bytes]]:
    """apk's ``X:value`` lines, one package per blank-line-separated block;
    only the first of repeated keys (file lists repeat ``F:``/``R:``) is kept."""
    record: dict[str, bytes] = {}
    for number, line in enumerate(data.split(b"\n"), 1):
        if not line:
            if record:
                yield record
            record = {}
            continue
        if len(line) < 2 or line[1:2] != b":":
            raise malformed(f"line {number} is not a KEY:value line")
        record.setdefault(line[:1].decode("ascii", "replace"), line[2:])
    if record:
        yield record
