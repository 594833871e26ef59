"""The policy: which repositories may be pulled, and what each rule requires.

:class:`Rule` is the one shape of a policy rule: read from YAML here, chosen
for a request by analysis (with the pin it resolved), and carried to every
layer in the plan (:mod:`pullguard.services.runtime.protoconv` converts it).
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pullguard.services.runtime.config.notation import NotationRule, read_notation
from pullguard.services.runtime.config.reader import Reader, kind, load_yaml
from pullguard.services.runtime.config.settings import COMPONENT, REPOSITORY_RE, Upstream
from pullguard.services.runtime.config.vulnerabilities import (
    NO_GATE,
    VulnerabilityRule,
    read_rule_vulnerabilities,
)
from pullguard.services.runtime.digests import DigestSyntaxError, parse_digest
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.runtime.patterns import PatternError, compile_anchored, glob_to_regex

_TAG_RE = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}")
_IDENTITY_RE = re.compile(rf"[a-z0-9.-]+(?::[0-9]{{1,5}})?/{COMPONENT}(?:/{COMPONENT})*")


@dataclass(frozen=True)
class KeylessIdentity:
    issuer: str
    subject: str = ""
    subject_regex: str = ""


class SignatureMode(enum.StrEnum):
    """What a rule asks of signatures: the one set of modes, from YAML to the verdict."""

    #: No signature is required; the signature layer passes with an INFO finding.
    NONE = "none"
    #: A valid signature is required; failure denies.
    ENFORCE = "enforce"
    #: Failure is recorded and reported, but does not deny.
    WARN = "warn"

    def __repr__(self) -> str:
        # The policy version hashes the rule's repr: a mode reads as its word
        # there, as it did when the mode was a plain string.
        return repr(self.value)


@dataclass(frozen=True)
class SignatureRule:
    mode: SignatureMode
    keys: tuple[tuple[str, str], ...] = ()  # (file name, PEM text)
    threshold: int = 1
    keyless: tuple[KeylessIdentity, ...] = ()
    trusted_root: str = ""  # trusted_root.json text; "" = sigstore's production root
    rekor: str = "optional"  # "required" or "optional"
    repository: str = ""  # where signatures live, on the same upstream
    identity: str = ""  # "<host>/<repository>" signatures must name, when remapped
    notation: NotationRule | None = None  # Notary Project trust policy statement


@dataclass(frozen=True)
class TagRule:
    deny: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()  # anchored regular expressions
    require_digest: bool = False
    digest_pulls: str = "allow"  # "allow", "pinned" or "deny"


@dataclass(frozen=True)
class LayerRule:
    inspect: bool = True
    setuid: str = "report"  # "report" or "deny"
    devices: str = "deny"
    max_uncompressed_bytes: int = 8 * 1024 * 1024 * 1024
    max_entries: int = 1_000_000
    max_ratio: int = 1000
    #: Read the package databases of each layer (issue 13); set for every
    #: rule when ``vulnerabilities:`` is configured, or per rule.
    inventory: bool = False


@dataclass(frozen=True)
class ProvenanceRule:
    required: bool = False
    builder_ids: tuple[str, ...] = ()
    source_repositories: tuple[str, ...] = ()
    signers: SignatureRule = SignatureRule(mode=SignatureMode.NONE)


@dataclass(frozen=True)
class Rule:
    index: int
    match: str
    pattern: re.Pattern[str]
    signature: SignatureRule
    #: tag -> digest; left out of the hash (a dict has none), kept in equality.
    pins: Mapping[str, str] = field(hash=False)
    foreign_url_hosts: tuple[str, ...]
    layer_media_types: tuple[str, ...]
    tags: TagRule = TagRule()
    layers: LayerRule = LayerRule()
    approved_sources: tuple[str, ...] = ()
    require_source_annotation: bool = False
    provenance: ProvenanceRule = ProvenanceRule()
    artifact_types: tuple[str, ...] = ()
    #: The vulnerability gate, the top-level key's with the rule's overrides.
    vulnerabilities: VulnerabilityRule = NO_GATE
    #: The digest the pins require for the tag asked for; set by analysis on
    #: the rule it puts in a plan, "" in the policy and when the tag is unpinned.
    pinned_digest: str = ""

    def pinned(self, digest: str) -> Rule:
        """This rule as it applies to one request whose tag is pinned to ``digest``."""
        return replace(self, pinned_digest=digest)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    deny: tuple[tuple[str, re.Pattern[str]], ...]
    deny_digests: frozenset[str]
    #: A file of known-bad digests, one per line (# comments allowed), that
    #: may be large; hashverify and analysis reload it when it changes.
    deny_digests_file: Path | None = None


def anchored_regex(reader: Reader, value: Any, key: str) -> str:
    """A regular expression that must be anchored at both ends and compile."""
    text = reader.string(value, key)
    try:
        compile_anchored(text)
    except PatternError as exc:
        raise reader.fail(key, str(exc)) from None
    return text


def _keyless(reader: Reader, raw: Any, key: str) -> tuple[KeylessIdentity, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise reader.fail(key, f"must be a list, got {kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        data = reader.mapping(item, where)
        reader.known(data, where, {"issuer", "subject", "subject_regex"})
        issuer = reader.string(data.get("issuer"), f"{where}.issuer")
        if ("subject" in data) == ("subject_regex" in data):
            raise reader.fail(where, "give exactly one of subject or subject_regex")
        if "subject" in data:
            out.append(
                KeylessIdentity(issuer, subject=reader.string(data["subject"], f"{where}.subject"))
            )
        else:
            regex = anchored_regex(reader, data["subject_regex"], f"{where}.subject_regex")
            out.append(KeylessIdentity(issuer, subject_regex=regex))
    return tuple(out)


def _keys(reader: Reader, raw: Any, key: str) -> tuple[tuple[str, str], ...]:
    keys: list[tuple[str, str]] = []
    for i, item in enumerate(reader.strings(raw, key)):
        path, pem = reader.read_file(item, f"{key}[{i}]")
        if "-----BEGIN PUBLIC KEY-----" not in pem:
            raise reader.fail(f"{key}[{i}]", f"{path} is not a PEM public key")
        # Named as the operator wrote it: file names alone collide (cosign
        # names every key cosign.pub), and the name identifies the signer.
        keys.append((item, pem))
    return tuple(keys)


def _signature(reader: Reader, raw: Any, key: str, allow_none: bool = True) -> SignatureRule:
    if raw is None or (raw == "none" and allow_none):
        return SignatureRule(mode=SignatureMode.NONE)
    if isinstance(raw, str):
        raise reader.fail(key, f"must be none or a mapping with keys or keyless, got {raw!r}")
    data = reader.mapping(raw, key)
    reader.known(
        data,
        key,
        {
            "keys",
            "keyless",
            "notation",
            "threshold",
            "mode",
            "trusted_root",
            "rekor",
            "repository",
            "identity",
        },
    )
    mode = data.get("mode", "enforce")
    if mode not in (SignatureMode.ENFORCE, SignatureMode.WARN):
        raise reader.fail(f"{key}.mode", f"must be enforce or warn, got {mode!r}")
    keys = _keys(reader, data.get("keys"), f"{key}.keys")
    keyless = _keyless(reader, data.get("keyless"), f"{key}.keyless")
    notation = read_notation(reader, data.get("notation"), f"{key}.notation")
    if notation is not None and not allow_none:
        raise reader.fail(f"{key}.notation", "attestations signed with Notation are not read")
    if notation is not None and notation.level != "strict" and mode == SignatureMode.ENFORCE:
        # THREATS G-15 (e): a weaker level only logs an expired (G-13) or,
        # under audit, an untrusted signature; under enforce that would admit.
        raise reader.fail(
            f"{key}.notation.signature_verification",
            f"level {notation.level} logs what strict enforces; use it with mode: warn,"
            " or strict (with override: {revocation: log} where needed)",
        )
    if notation is not None and mode == SignatureMode.ENFORCE:
        for validation, action in notation.overrides:
            # Revocation alone may be relaxed: offline, an endpoint's answer is
            # unknowable. Relaxing the others is a weaker level by another name.
            if action != "enforce" and validation != "revocation":
                raise reader.fail(
                    f"{key}.notation.signature_verification.override.{validation}",
                    f"{action} under mode: enforce would admit what strict refuses;"
                    " only revocation may be relaxed (or use mode: warn)",
                )
    if not keys and not keyless and notation is None:
        raise reader.fail(key, "at least one of keys or keyless, or notation, is required")
    threshold = reader.integer(data.get("threshold", 1), f"{key}.threshold", 1)
    signers = len(keys) + len(keyless) + (notation.signers if notation else 0)
    if threshold > signers:
        raise reader.fail(
            f"{key}.threshold", f"{threshold} is more than the {signers} signers given"
        )
    trusted_root = ""
    if "trusted_root" in data:
        _root_path, trusted_root = reader.read_file(
            data["trusted_root"], f"{key}.trusted_root", limit=16 * 1024 * 1024
        )
    rekor = data.get("rekor", "optional")
    if rekor not in ("required", "optional"):
        raise reader.fail(f"{key}.rekor", f"must be required or optional, got {rekor!r}")
    repository = ""
    if "repository" in data:
        repository = reader.string(data["repository"], f"{key}.repository")
        if not REPOSITORY_RE.fullmatch(repository):
            raise reader.fail(f"{key}.repository", f"{repository!r} is not a repository path")
    identity = ""
    if "identity" in data:
        identity = reader.string(data["identity"], f"{key}.identity")
        if not _IDENTITY_RE.fullmatch(identity):
            raise reader.fail(f"{key}.identity", f"must be <host>/<repository>, got {identity!r}")
    return SignatureRule(
        mode=SignatureMode(mode),
        keys=keys,
        threshold=threshold,
        keyless=keyless,
        trusted_root=trusted_root,
        rekor=rekor,
        repository=repository,
        identity=identity,
        notation=notation,
    )


def _tags(reader: Reader, raw: Any, key: str) -> TagRule:
    if raw is None:
        return TagRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, {"deny", "allow", "require_digest", "digest_pulls"})
    deny = reader.strings(data.get("deny"), f"{key}.deny")
    allow_raw = data.get("allow")
    if allow_raw is not None and not isinstance(allow_raw, list):
        raise reader.fail(f"{key}.allow", f"must be a list, got {kind(allow_raw)}")
    allow = tuple(
        anchored_regex(reader, item, f"{key}.allow[{i}]") for i, item in enumerate(allow_raw or [])
    )
    # A rule that restricts tags must not be bypassed by pulling a digest that
    # no allowed tag reaches (P-03c): digest pulls then default to "pinned",
    # unless the rule asks for digests outright.
    require_digest = reader.boolean(data.get("require_digest", False), f"{key}.require_digest")
    default_pulls = "pinned" if allow and not require_digest else "allow"
    digest_pulls = data.get("digest_pulls", default_pulls)
    if digest_pulls not in ("allow", "pinned", "deny"):
        raise reader.fail(
            f"{key}.digest_pulls", f"must be allow, pinned or deny, got {digest_pulls!r}"
        )
    return TagRule(
        deny=deny,
        allow=allow,
        require_digest=require_digest,
        digest_pulls=digest_pulls,
    )


def _layers(reader: Reader, raw: Any, key: str) -> LayerRule:
    if raw is None:
        return LayerRule()
    data = reader.mapping(raw, key)
    defaults = LayerRule()
    reader.known(data, key, set(defaults.__dataclass_fields__))
    values: dict[str, Any] = {}
    for name in ("inspect", "inventory"):
        if name in data:
            values[name] = reader.boolean(data[name], f"{key}.{name}")
    for name in ("setuid", "devices"):
        if name in data:
            if data[name] not in ("report", "deny"):
                raise reader.fail(f"{key}.{name}", f"must be report or deny, got {data[name]!r}")
            values[name] = data[name]
    for name in ("max_uncompressed_bytes", "max_entries", "max_ratio"):
        if name in data:
            values[name] = reader.integer(data[name], f"{key}.{name}", 1)
    return LayerRule(**values)


def _provenance(reader: Reader, raw: Any, key: str) -> ProvenanceRule:
    if raw is None:
        return ProvenanceRule()
    data = reader.mapping(raw, key)
    reader.known(data, key, {"required", "builder_ids", "source_repositories", "signers"})
    signers = _signature(reader, data.get("signers"), f"{key}.signers", allow_none=False)
    return ProvenanceRule(
        required=reader.boolean(data.get("required", True), f"{key}.required"),
        builder_ids=reader.strings(data.get("builder_ids"), f"{key}.builder_ids"),
        source_repositories=reader.strings(
            data.get("source_repositories"), f"{key}.source_repositories"
        ),
        signers=signers,
    )


def _pins(reader: Reader, raw: Any, key: str) -> dict[str, str]:
    if raw is None:
        return {}
    path, text = reader.read_file(raw, key, limit=64 * 1024 * 1024)
    try:
        data = load_yaml(text, str(path))
    except ConfigError as exc:
        raise reader.fail(key, exc.message) from None
    pins = reader.mapping(data, f"{key} ({path})")
    out: dict[str, str] = {}
    for tag, digest in pins.items():
        if not _TAG_RE.fullmatch(tag):
            raise reader.fail(f"{key} ({path}).{tag}", "is not a valid tag")
        try:
            parse_digest(digest if isinstance(digest, str) else "")
        except DigestSyntaxError as exc:
            raise reader.fail(f"{key} ({path}).{tag}", str(exc)) from None
        out[tag] = digest
    return out


def read_policy(reader: Reader, raw: Any, vulnerabilities: VulnerabilityRule = NO_GATE) -> Policy:
    data = reader.mapping(raw, "policy")
    reader.known(data, "policy", {"rules", "deny", "deny_digests", "deny_digests_file"})
    rules_raw = data.get("rules")
    if rules_raw is None:
        rules_raw = []
    if not isinstance(rules_raw, list):
        raise reader.fail("policy.rules", f"must be a list, got {kind(rules_raw)}")
    found = (
        reader.gathered.attempt(None, _rule, reader, i, r, vulnerabilities)
        for i, r in enumerate(rules_raw)
    )
    rules = [rule for rule in found if rule is not None]
    deny = reader.strings(data.get("deny"), "policy.deny")
    deny_digests = reader.strings(data.get("deny_digests"), "policy.deny_digests")
    for i, digest in enumerate(deny_digests):
        try:
            parse_digest(digest)
        except DigestSyntaxError as exc:
            raise reader.fail(f"policy.deny_digests[{i}]", str(exc)) from None
    deny_file = None
    if "deny_digests_file" in data:
        deny_file = reader.path(data["deny_digests_file"], "policy.deny_digests_file")
        if not deny_file.is_file():
            raise reader.fail("policy.deny_digests_file", f"{deny_file} is not a file")
    return Policy(
        rules=tuple(rules),
        deny=tuple((glob, glob_to_regex(glob)) for glob in deny),
        deny_digests=frozenset(deny_digests),
        deny_digests_file=deny_file,
    )


def _rule(reader: Reader, i: int, item: Any, vulnerabilities: VulnerabilityRule = NO_GATE) -> Rule:
    key = f"policy.rules[{i}]"
    rule = reader.mapping(item, key)
    reader.known(
        rule,
        key,
        {
            "match",
            "signature",
            "pins",
            "foreign_urls",
            "layer_media_types",
            "tags",
            "layers",
            "sources",
            "require_source",
            "provenance",
            "artifact_types",
            "vulnerabilities",
        },
    )
    match = reader.string(rule.get("match"), f"{key}.match")
    vulnerabilities = read_rule_vulnerabilities(
        reader, rule.get("vulnerabilities"), f"{key}.vulnerabilities", vulnerabilities
    )
    layers = _layers(reader, rule.get("layers"), f"{key}.layers")
    if vulnerabilities.enabled and not layers.inspect:
        # The inventory is read while layers are inspected: no inspection, no gate.
        raise reader.fail(
            f"{key}.layers.inspect",
            "must stay true under a vulnerability gate (or set vulnerabilities: none on the rule)",
        )
    return Rule(
        index=i,
        match=match,
        pattern=glob_to_regex(match),
        signature=_signature(reader, rule.get("signature"), f"{key}.signature"),
        pins=_pins(reader, rule.get("pins"), f"{key}.pins"),
        foreign_url_hosts=reader.strings(rule.get("foreign_urls"), f"{key}.foreign_urls"),
        layer_media_types=reader.strings(rule.get("layer_media_types"), f"{key}.layer_media_types"),
        tags=_tags(reader, rule.get("tags"), f"{key}.tags"),
        layers=layers,
        approved_sources=reader.strings(rule.get("sources"), f"{key}.sources"),
        require_source_annotation=reader.boolean(
            rule.get("require_source", False), f"{key}.require_source"
        ),
        provenance=_provenance(reader, rule.get("provenance"), f"{key}.provenance"),
        artifact_types=reader.strings(rule.get("artifact_types"), f"{key}.artifact_types"),
        vulnerabilities=vulnerabilities,
    )


#: Part of every policy version; raised when what a verdict checks changes,
#: so that admissions an older pullguard made are verified again.
#: 2: an index is admitted only with every manifest it lists (issue 7).
CHECKS_REVISION = 2


def policy_version(config_text: str, policy: Policy, upstreams: Mapping[str, Upstream]) -> str:
    """Hash of everything a verdict depends on: the policy, the key and pin
    contents it loaded, and the non-secret upstream settings."""
    material = {
        "checks": CHECKS_REVISION,
        "rules": [
            {
                "match": r.match,
                "signature": [r.signature.mode, list(r.signature.keys), r.signature.threshold],
                "pins": dict(sorted(r.pins.items())),
                "foreign": list(r.foreign_url_hosts),
                "layers": list(r.layer_media_types),
                "rule": repr(
                    (
                        r.signature,
                        r.tags,
                        r.layers,
                        r.approved_sources,
                        r.require_source_annotation,
                        r.provenance,
                        r.artifact_types,
                        r.vulnerabilities,
                    )
                ),
            }
            for r in policy.rules
        ],
        "deny": [glob for glob, _ in policy.deny],
        "deny_digests": sorted(policy.deny_digests),
        # The deny database file is live data, not policy: it is re-read on
        # change and checked on every pull, so it is not part of the version.
        "deny_file": str(policy.deny_digests_file or ""),
        "upstreams": {
            a: [
                u.url,
                u.insecure,
                list(u.redirect_hosts),
                list(u.realm_hosts),
                u.canonical_host,
                repr(u.tls),
            ]
            for a, u in sorted(upstreams.items())
        },
    }
    blob = json.dumps(material, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()[:16]
