"""The ``vulnerabilities:`` key: where the OSV database is and what a rule refuses.

The top-level key names the database (``osv``) and the default policy; a
policy rule's own ``vulnerabilities:`` replaces the keys it gives (``deny``
as a whole, ``max_age``, ``allow``, ``on_new``), or ``none`` turns the gate
off for the rule. Without the top-level key there is no gate at all: a rule
cannot ask for one, since there would be no database to match against.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pullguard.services.runtime.config.reader import Reader, kind
from pullguard.services.runtime.patterns import PatternError, glob_to_regex

_ID_RE = re.compile(r"[A-Za-z][A-Za-z0-9._:-]{0,127}")

#: Bounds of the database the layer loads, unless the key says otherwise.
DEFAULT_MAX_RECORD_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_RECORDS = 2_000_000
DEFAULT_MAX_ARCHIVE_BYTES = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True)
class Allowance:
    """An accepted advisory: ``id`` for repositories matching ``repository`` until ``until``."""

    id: str
    repository: str  # glob on <alias>/<repository>; "" = every repository
    until: str  # ISO date; the entry applies through that day, not after
    reason: str


@dataclass(frozen=True)
class VulnerabilityRule:
    """A rule's vulnerability gate, resolved over the top-level defaults."""

    enabled: bool = False
    cvss_min: float = 0.0
    ids: tuple[str, ...] = ()
    fixed_only: bool = False
    max_age_seconds: int = 0
    allow: tuple[Allowance, ...] = ()
    on_new: str = "revoke"  # "revoke" or "warn"
    #: Refuse an image whose inventory could not be read whole (a database
    #: over its limits or malformed, a layer format did not report on):
    #: what could not be read cannot be shown free of advisories.
    deny_incomplete: bool = True
    #: Read the image's signed SBOMs (CycloneDX, SPDX attestations signed
    #: under the rule's signature trust) as a second source: they add
    #: packages to the match, never remove one.
    use_sboms: bool = True
    #: What a package the SBOM and the scan disagree about is: "warn" or "deny".
    sbom_disagreement: str = "warn"


#: A rule without a vulnerability gate.
NO_GATE = VulnerabilityRule()


@dataclass(frozen=True)
class VulnerabilityDatabase:
    """Where the layer reads OSV records, and how much of them it accepts."""

    osv: Path
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_records: int = DEFAULT_MAX_RECORDS
    max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES


_RULE_KEYS = {"deny", "max_age", "allow", "on_new", "sbom"}
SBOM_DISAGREEMENTS = ("warn", "deny")
_TOP_KEYS = _RULE_KEYS | {"osv", "max_record_bytes", "max_records", "max_archive_bytes"}


def read_vulnerabilities(
    reader: Reader, raw: Any
) -> tuple[VulnerabilityDatabase | None, VulnerabilityRule]:
    """The top-level key: the database and the default rule (disabled when absent)."""
    if raw is None:
        return None, VulnerabilityRule()
    data = reader.mapping(raw, "vulnerabilities")
    reader.known(data, "vulnerabilities", _TOP_KEYS)
    osv = reader.path(data.get("osv"), "vulnerabilities.osv")
    limits = {
        name: reader.integer(data[name], f"vulnerabilities.{name}", 1)
        for name in ("max_record_bytes", "max_records", "max_archive_bytes")
        if name in data
    }
    database = VulnerabilityDatabase(osv=osv, **limits)
    rule = _read_rule_keys(reader, data, "vulnerabilities", VulnerabilityRule(enabled=True))
    return database, rule


def read_rule_vulnerabilities(
    reader: Reader, raw: Any, key: str, default: VulnerabilityRule
) -> VulnerabilityRule:
    """A policy rule's override: the keys it gives replace the default's."""
    if raw is None:
        return default
    if raw == "none":
        return VulnerabilityRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, _RULE_KEYS)
    if not default.enabled:
        raise reader.fail(key, "needs the top-level vulnerabilities key (which names the database)")
    return _read_rule_keys(reader, data, key, default)


def _read_rule_keys(
    reader: Reader, data: dict[str, Any], key: str, base: VulnerabilityRule
) -> VulnerabilityRule:
    values: dict[str, Any] = {}
    if "deny" in data:
        values.update(_deny(reader, data["deny"], f"{key}.deny"))
    if "max_age" in data:
        values["max_age_seconds"] = _age(reader, data["max_age"], f"{key}.max_age")
    if "allow" in data:
        values["allow"] = _allow(reader, data["allow"], f"{key}.allow")
    if "on_new" in data:
        if data["on_new"] not in ("revoke", "warn"):
            raise reader.fail(f"{key}.on_new", f"must be revoke or warn, got {data['on_new']!r}")
        values["on_new"] = data["on_new"]
    if "sbom" in data:
        values.update(_sbom(reader, data["sbom"], f"{key}.sbom", base))
    return replace(base, **values)


def _sbom(reader: Reader, raw: Any, key: str, base: VulnerabilityRule) -> dict[str, Any]:
    """``sbom: {use: true, disagreement: warn}``; the keys it gives replace the base's."""
    data = reader.mapping(raw, key)
    reader.known(data, key, {"use", "disagreement"})
    values: dict[str, Any] = {}
    if "use" in data:
        values["use_sboms"] = reader.boolean(data["use"], f"{key}.use")
    if "disagreement" in data:
        if data["disagreement"] not in SBOM_DISAGREEMENTS:
            raise reader.fail(
                f"{key}.disagreement",
                f"must be warn or deny, got {str(data['disagreement'])[:40]!r}",
            )
        values["sbom_disagreement"] = data["disagreement"]
    return values


def _deny(reader: Reader, raw: Any, key: str) -> dict[str, Any]:
    data = reader.mapping(raw, key)
    reader.known(data, key, {"cvss_min", "ids", "fixed_only", "incomplete"})
    cvss_min = 0.0
    if "cvss_min" in data:
        cvss_min = reader.number(data["cvss_min"], f"{key}.cvss_min", 0.0)
        if cvss_min > 10.0:
            raise reader.fail(f"{key}.cvss_min", f"must be at most 10.0, got {cvss_min}")
    ids = reader.strings(data.get("ids"), f"{key}.ids")
    for i, ident in enumerate(ids):
        if not _ID_RE.fullmatch(ident):
            raise reader.fail(f"{key}.ids[{i}]", f"is not an advisory id: {ident[:80]!r}")
    fixed_only = reader.boolean(data.get("fixed_only", False), f"{key}.fixed_only")
    incomplete = reader.boolean(data.get("incomplete", True), f"{key}.incomplete")
    return {
        "cvss_min": float(cvss_min),
        "ids": ids,
        "fixed_only": fixed_only,
        "deny_incomplete": incomplete,
    }


def _age(reader: Reader, raw: Any, key: str) -> int:
    """A duration (``7d``, ``12h``, ...; see Reader.duration) of whole seconds, at least one."""
    seconds = reader.duration(raw, key, 1)
    if seconds != int(seconds):
        raise reader.fail(key, f"must be a whole number of seconds, got {raw!r:.40}")
    return int(seconds)


def _allow(reader: Reader, raw: Any, key: str) -> tuple[Allowance, ...]:
    if not isinstance(raw, list):
        raise reader.fail(key, f"must be a list, got {kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        data = reader.mapping(item, where)
        reader.known(data, where, {"id", "repository", "until", "reason"})
        ident = reader.string(data.get("id"), f"{where}.id")
        if not _ID_RE.fullmatch(ident):
            raise reader.fail(f"{where}.id", f"is not an advisory id: {ident[:80]!r}")
        repository = ""
        if "repository" in data:
            repository = reader.string(data["repository"], f"{where}.repository")
            try:
                glob_to_regex(repository)
            except PatternError as exc:
                raise reader.fail(f"{where}.repository", str(exc)) from None
        # YAML reads an unquoted 2027-01-01 as a date already.
        until_raw = data.get("until")
        if isinstance(until_raw, datetime.date):
            until = until_raw.isoformat()
        else:
            until = reader.string(until_raw, f"{where}.until")
            try:
                datetime.date.fromisoformat(until)
            except ValueError:
                raise reader.fail(
                    f"{where}.until", f"must be a date YYYY-MM-DD, got {until!r}"
                ) from None
        reason = reader.string(data.get("reason"), f"{where}.reason")
        if not reason.strip():
            raise reader.fail(f"{where}.reason", "must say why the advisory is accepted")
        out.append(Allowance(ident, repository, until, reason))
    return tuple(out)
