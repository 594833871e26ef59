"""The ``signature.notation`` key of a rule: a Notary Project trust policy statement.

Its vocabulary is ``trustpolicy.json``'s, in this file's snake case::

    notation:
      trust_store_dir: notation/truststore      # notation's layout: x509/<type>/<name>/
      trust_stores: [ca:acme, tsa:digicert]     # trustStores
      trusted_identities:                       # trustedIdentities
        - "x509.subject: C=US, ST=WA, O=Acme, CN=Acme Signer"
      signature_verification: strict            # or {level: strict, override: {revocation: log}}

Registry scopes are left out: the rule's ``match`` glob is the scope, so a
``*`` scope (THREATS G-15 d) cannot be written here. The level ``skip`` is
refused: a rule that wants no signature says ``signature: none``
(G-15 e). The certificates are read here, at load time, and travel in the
plan as DER, so the signature service opens no files.

The tables of levels and the distinguished-name parser live here because
the loader validates with them and the signature service applies them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pullguard.services.runtime.config.reader import Reader

#: Trust store types of the Notary Project, and what each is for.
STORE_TYPES = ("ca", "signingAuthority", "tsa")
#: Validations a level sets an action for; integrity is always enforced.
VALIDATIONS = ("authenticity", "authenticTimestamp", "expiry", "revocation")
ACTIONS = ("enforce", "log", "skip")
#: The Notary Project's verification levels (trust-store-trust-policy.md).
LEVELS: dict[str, dict[str, str]] = {
    "strict": dict.fromkeys(VALIDATIONS, "enforce"),
    "permissive": {
        "authenticity": "enforce",
        "authenticTimestamp": "log",
        "expiry": "log",
        "revocation": "log",
    },
    "audit": dict.fromkeys(VALIDATIONS, "log"),
}
#: Bounds on a trust store folder: certificate files, bytes each, certificates in all.
MAX_STORE_FILES = 64
MAX_CERT_FILE_BYTES = 256 * 1024
MAX_STORE_CERTIFICATES = 256
MAX_IDENTITIES = 64

_STORE_NAME_RE = re.compile(r"[a-zA-Z0-9_.-]{1,100}")
_DN_ATTRIBUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9.]{0,40}")


class DistinguishedNameError(ValueError):
    """A trusted identity's DN that cannot be read."""


def parse_dn(text: str) -> tuple[tuple[str, str], ...]:
    """``C=US, O=Acme, CN=x`` as ((type, value), ...), types upper-cased.

    Commas inside a value are escaped with a backslash, as in RFC 4514. A
    type given twice is refused: subset matching would read it ambiguously.
    """
    parts: list[str] = []
    current = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in ",+":
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if escaped:
        raise DistinguishedNameError("ends with a lone backslash")
    parts.append("".join(current))
    attributes: list[tuple[str, str]] = []
    for part in parts:
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not _DN_ATTRIBUTE_RE.fullmatch(name) or not value:
            raise DistinguishedNameError(f"{part.strip()[:80]!r} is not TYPE=value")
        attributes.append((name.upper(), value))
    types = [name for name, _ in attributes]
    if len(set(types)) != len(types):
        raise DistinguishedNameError("an attribute type is given twice")
    return tuple(attributes)


def parse_identity(text: str) -> tuple[tuple[str, str], ...] | None:
    """None for ``*``, else the DN of ``x509.subject: <DN>``; DistinguishedNameError."""
    if text == "*":
        return None
    prefix, sep, dn = text.partition(":")
    if not sep or prefix.strip() != "x509.subject":
        raise DistinguishedNameError('must be "*" or "x509.subject: <DN>"')
    return parse_dn(dn)


@dataclass(frozen=True)
class TrustStore:
    type: str
    name: str
    #: DER certificates, in file-name order.
    certificates: tuple[bytes, ...]


@dataclass(frozen=True)
class NotationRule:
    trust_stores: tuple[TrustStore, ...]
    trusted_identities: tuple[str, ...]
    level: str = "strict"
    #: Sorted (validation, action) pairs that replace the level's.
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def signers(self) -> int:
        """Distinct signers it can provide towards a threshold: one per identity."""
        return len(self.trusted_identities)


def actions(level: str, overrides: dict[str, str]) -> dict[str, str]:
    """The action of each validation under ``level`` with ``overrides``; KeyError if unknown."""
    table = dict(LEVELS[level])
    for validation, action in overrides.items():
        if validation not in table or action not in ACTIONS:
            raise KeyError(validation)
        table[validation] = action
    return table


def read_notation(reader: Reader, raw: Any, key: str) -> NotationRule | None:
    """The ``notation`` mapping of a signature rule, certificates loaded; None when absent."""
    if raw is None:
        return None
    data = reader.mapping(raw, key)
    reader.known(
        data,
        key,
        {"trust_store_dir", "trust_stores", "trusted_identities", "signature_verification"},
    )
    if "trust_store_dir" not in data:
        raise reader.fail(f"{key}.trust_store_dir", "is required (notation's truststore folder)")
    root = reader.path(data["trust_store_dir"], f"{key}.trust_store_dir")
    names = reader.strings(data.get("trust_stores"), f"{key}.trust_stores")
    stores = tuple(
        _store(reader, root, name, f"{key}.trust_stores[{i}]") for i, name in enumerate(names)
    )
    if not any(store.type != "tsa" for store in stores):
        raise reader.fail(
            f"{key}.trust_stores", "needs at least one ca: or signingAuthority: store"
        )
    if len({(s.type, s.name) for s in stores}) != len(stores):
        raise reader.fail(f"{key}.trust_stores", "names a store twice")
    identities = reader.strings(data.get("trusted_identities"), f"{key}.trusted_identities")
    if not identities:
        raise reader.fail(f"{key}.trusted_identities", 'needs at least one identity (or "*")')
    if len(identities) > MAX_IDENTITIES:
        raise reader.fail(f"{key}.trusted_identities", f"more than {MAX_IDENTITIES} identities")
    for i, identity in enumerate(identities):
        try:
            parse_identity(identity)
        except DistinguishedNameError as exc:
            raise reader.fail(f"{key}.trusted_identities[{i}]", str(exc)) from None
    if "*" in identities and len(identities) > 1:
        raise reader.fail(f"{key}.trusted_identities", '"*" must be the only identity')
    level, overrides = _verification(reader, data.get("signature_verification", "strict"), key)
    return NotationRule(stores, identities, level, tuple(sorted(overrides.items())))


def _verification(reader: Reader, raw: Any, key: str) -> tuple[str, dict[str, str]]:
    where = f"{key}.signature_verification"
    overrides: dict[str, str] = {}
    if isinstance(raw, dict):
        data = reader.mapping(raw, where)
        reader.known(data, where, {"level", "override"})
        level = data.get("level")
        override = reader.mapping(data.get("override"), f"{where}.override")
        for validation, action in override.items():
            if validation not in VALIDATIONS:
                raise reader.fail(
                    f"{where}.override.{validation}",
                    f"unknown validation (known: {', '.join(VALIDATIONS)})",
                )
            if action not in ACTIONS:
                raise reader.fail(
                    f"{where}.override.{validation}",
                    f"must be one of {', '.join(ACTIONS)}, got {action!r}",
                )
            overrides[validation] = action
        where = f"{where}.level"
    else:
        level = raw
    if level == "skip":
        raise reader.fail(where, "skip verifies nothing; a rule that wants no signature says none")
    if level not in LEVELS:
        raise reader.fail(where, f"must be strict, permissive or audit, got {level!r}")
    return level, overrides


def _store(reader: Reader, root: Path, text: str, key: str) -> TrustStore:
    store_type, sep, name = text.partition(":")
    if not sep or store_type not in STORE_TYPES or not _STORE_NAME_RE.fullmatch(name):
        raise reader.fail(key, f'must be "<{"|".join(STORE_TYPES)}>:<name>", got {text!r}')
    folder = root / "x509" / store_type / name
    try:
        entries = sorted(p for p in folder.iterdir() if p.is_file())
    except OSError as exc:
        raise reader.fail(key, f"cannot read {folder}: {exc.strerror or exc}") from None
    if not entries:
        raise reader.fail(key, f"{folder} holds no certificate files")
    if len(entries) > MAX_STORE_FILES:
        raise reader.fail(key, f"{folder} holds more than {MAX_STORE_FILES} files")
    certificates: list[bytes] = []
    for path in entries:
        certificates.extend(_certificates(reader, path, key))
        if len(certificates) > MAX_STORE_CERTIFICATES:
            raise reader.fail(
                key, f"{folder} holds more than {MAX_STORE_CERTIFICATES} certificates"
            )
    return TrustStore(store_type, name, tuple(certificates))


def _certificates(reader: Reader, path: Path, key: str) -> list[bytes]:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CERT_FILE_BYTES + 1)
    except OSError as exc:
        raise reader.fail(key, f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_CERT_FILE_BYTES:
        raise reader.fail(key, f"{path} is larger than {MAX_CERT_FILE_BYTES} bytes")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            found = x509.load_pem_x509_certificates(data)
        else:
            found = [x509.load_der_x509_certificate(data)]
    except ValueError as exc:
        raise reader.fail(key, f"{path} is not a PEM or DER certificate: {exc}") from None
    return [cert.public_bytes(Encoding.DER) for cert in found]
