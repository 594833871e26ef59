"""DSSE envelopes and in-toto statements: parse strictly, bind to a digest, read SLSA.

A DSSE envelope (``application/vnd.dsse.envelope.v1+json``) signs
``PAE(payloadType, payload)``; here it must hold exactly one signature (as
sigstore requires; an extra, untrusted signature is never "one of them":
THREATS G-07). The payload is parsed only after that signature verified
(containers-signature(5): no parsing before authentication), and only as an
in-toto statement (``payloadType`` ``application/vnd.in-toto+json``).

:func:`binds_digest` is the subject check: some subject must carry this
manifest's sha256, and every other digest that subject lists must match too
(cosign issue #2443; a sha512 is checked when the manifest bytes are at
hand, otherwise the subject does not count). Subject counts are bounded
(sigstore-go, CVE-2024-45395: 1024 subjects, 32 digests each).

:func:`provenance_facts` reads the builder id and source repository of SLSA
provenance:

- v0.2: ``predicate.builder.id``; the source is
  ``predicate.invocation.configSource.uri``, else the first ``materials`` URI;
- v1: ``predicate.runDetails.builder.id``; the source is
  ``predicate.buildDefinition.externalParameters.workflow.repository`` (GitHub
  Actions build type), else ``externalParameters.source`` (a URI or
  ``{uri}``), else the first ``resolvedDependencies`` URI.

The source revision (``source_digest``, ``"<alg>:<hex>"``) is the ``digest``
stated beside the source's own URI: ``configSource`` or the material (v0.2),
the resolved dependency (v1) whose normalised URI is the source repository;
never the digest of another material.

A key that a Go verifier (cosign, go-securesystemslib, in-toto-golang,
slsa-verifier) reads as an envelope, statement or predicate field under
another spelling is refused (:data:`ENVELOPE_KEY_CASE_COLLISION`,
:data:`STATEMENT_KEY_CASE_COLLISION`): such a document means one thing here
and another there.

A source URI is normalised for comparison: a ``git+`` prefix and an ``@ref``
suffix are dropped (``git+https://github.com/o/r@refs/heads/main`` becomes
``https://github.com/o/r``); the digest/ref is not part of "which repository".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from pullguard.services.runtime.goschemas import (
    DSSE_ENVELOPE,
    IN_TOTO_STATEMENT,
    SLSA_V02_PREDICATE,
    SLSA_V1_PREDICATE,
)
from pullguard.services.signature.strictjson import (
    StrictJsonError,
    key_case_problem,
    loads_strict,
)

ENVELOPE_MEDIA_TYPE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPES = ("https://in-toto.io/Statement/v0.1", "https://in-toto.io/Statement/v1")
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"

MAX_SUBJECTS = 1024
MAX_DIGESTS_PER_SUBJECT = 32
MAX_FACT_CHARS = 2048
ENVELOPE_KEY_CASE_COLLISION = "signature.envelope_key_case_collision"
STATEMENT_KEY_CASE_COLLISION = "signature.statement_key_case_collision"


class EnvelopeError(ValueError):
    """The envelope or its statement is malformed; the message says why.

    ``code`` is a finding code, ``None`` for the caller's code for malformed documents.
    """

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signature: bytes

    def pae(self) -> bytes:
        return pae(self.payload_type, self.payload)


@dataclass(frozen=True)
class Subject:
    name: str
    digests: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Statement:
    statement_type: str
    predicate_type: str
    subjects: tuple[Subject, ...]
    predicate: Any


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def parse_envelope(data: bytes) -> Envelope:
    try:
        document = loads_strict(data)
    except StrictJsonError as exc:
        raise EnvelopeError(f"DSSE envelope is not strict JSON: {exc}") from None
    return envelope_from(document)


def envelope_from(document: Any) -> Envelope:
    """An envelope from parsed JSON (a layer blob, or a bundle's ``dsseEnvelope``)."""
    if not isinstance(document, dict):
        raise EnvelopeError("DSSE envelope is not an object")
    problem = key_case_problem(document, DSSE_ENVELOPE)
    if problem is not None:
        raise EnvelopeError(f"DSSE envelope: {problem}", ENVELOPE_KEY_CASE_COLLISION)
    payload_type = document.get("payloadType")
    if not isinstance(payload_type, str) or not payload_type:
        raise EnvelopeError("DSSE envelope has no payloadType")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or len(signatures) != 1:
        count = len(signatures) if isinstance(signatures, list) else "no"
        raise EnvelopeError(f"DSSE envelope has {count} signatures, expected exactly 1")
    signature = signatures[0]
    if not isinstance(signature, dict):
        raise EnvelopeError("DSSE signature is not an object")
    return Envelope(
        payload_type=payload_type,
        payload=_b64(document.get("payload"), "payload"),
        signature=_b64(signature.get("sig"), "signature"),
    )


def parse_statement(envelope: Envelope) -> Statement:
    """The in-toto statement of a VERIFIED envelope; raise EnvelopeError."""
    if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
        raise EnvelopeError(
            f"got payloadType {envelope.payload_type[:80]!r}, expected {IN_TOTO_PAYLOAD_TYPE!r}"
        )
    try:
        document = loads_strict(envelope.payload)
    except StrictJsonError as exc:
        raise EnvelopeError(f"statement is not strict JSON: {exc}") from None
    if not isinstance(document, dict):
        raise EnvelopeError("statement is not an object")
    problem = key_case_problem(document, IN_TOTO_STATEMENT)
    predicate_shape = _PREDICATES.get(str(document.get("predicateType")))
    if problem is None and predicate_shape is not None:
        problem = key_case_problem(document.get("predicate"), predicate_shape, "predicate")
    if problem is not None:
        raise EnvelopeError(f"statement: {problem}", STATEMENT_KEY_CASE_COLLISION)
    statement_type = document.get("_type")
    if statement_type not in STATEMENT_TYPES:
        raise EnvelopeError(f"got statement _type {str(statement_type)[:80]!r}")
    predicate_type = document.get("predicateType")
    if not isinstance(predicate_type, str) or not predicate_type:
        raise EnvelopeError("statement has no predicateType")
    raw_subjects = document.get("subject")
    if not isinstance(raw_subjects, list) or not raw_subjects:
        raise EnvelopeError("statement has no subject")
    if len(raw_subjects) > MAX_SUBJECTS:
        raise EnvelopeError(f"got {len(raw_subjects)} subjects, expected at most {MAX_SUBJECTS}")
    return Statement(
        statement_type=statement_type,
        predicate_type=predicate_type,
        subjects=tuple(_subject(item, i) for i, item in enumerate(raw_subjects)),
        predicate=document.get("predicate"),
    )


#: Predicates pullguard reads, by predicate type (others are not walked).
_PREDICATES = {SLSA_V02: SLSA_V02_PREDICATE, SLSA_V1: SLSA_V1_PREDICATE}


def _subject(item: Any, index: int) -> Subject:
    where = f"subject[{index}]"
    if not isinstance(item, dict):
        raise EnvelopeError(f"{where} is not an object")
    name = item.get("name", "")
    if not isinstance(name, str):
        raise EnvelopeError(f"{where}.name is not a string")
    digests = item.get("digest")
    if not isinstance(digests, dict) or not digests:
        raise EnvelopeError(f"{where}.digest is not a non-empty object")
    if len(digests) > MAX_DIGESTS_PER_SUBJECT:
        raise EnvelopeError(
            f"{where} lists {len(digests)} digests, expected at most {MAX_DIGESTS_PER_SUBJECT}"
        )
    pairs = []
    for algorithm, value in digests.items():
        if not isinstance(value, str):
            raise EnvelopeError(f"{where}.digest.{algorithm[:20]} is not a string")
        pairs.append((algorithm, value))
    return Subject(name, tuple(pairs))


def binds_digest(statement: Statement, digest: str, content: bytes | None) -> Subject | None:
    """The subject that names ``digest`` (``sha256:<hex>``) in every digest it lists."""
    algorithm, _, hexdigest = digest.partition(":")
    for subject in statement.subjects:
        listed = dict(subject.digests)
        if listed.get(algorithm) != hexdigest:
            continue
        if all(
            _matches(name, value, algorithm, hexdigest, content) for name, value in listed.items()
        ):
            return subject
    return None


def _matches(name: str, value: str, algorithm: str, hexdigest: str, content: bytes | None) -> bool:
    if name == algorithm:
        return value == hexdigest
    if content is None or name not in ("sha256", "sha384", "sha512"):
        return False
    return hashlib.new(name, content).hexdigest() == value


#: Digest algorithms a source revision may be stated in, most specific first.
SOURCE_DIGEST_ALGORITHMS = ("sha1", "gitCommit", "sha256", "sha512")
#: Most materials or resolved dependencies searched for the source's revision.
MAX_SOURCE_CANDIDATES = 64
_HEX_RE = re.compile(r"[0-9a-f]{40,128}")


@dataclass(frozen=True)
class ProvenanceFacts:
    builder_id: str
    source_repository: str
    #: The source revision as "<alg>:<hex>" (e.g. "sha1:..."), when the
    #: predicate states one for the source repository itself.
    source_digest: str = ""


def provenance_facts(statement: Statement) -> ProvenanceFacts:
    """Builder id, source repository and its revision of SLSA provenance; empty otherwise."""
    predicate = statement.predicate if isinstance(statement.predicate, dict) else {}
    if statement.predicate_type == SLSA_V02:
        builder = _path(predicate, "builder", "id")
        config = _dig(predicate, "invocation", "configSource")
        source = _path(config, "uri") or _first_uri(predicate.get("materials"))
        candidates = [config, *_objects(predicate.get("materials"))]
    elif statement.predicate_type == SLSA_V1:
        builder = _path(predicate, "runDetails", "builder", "id")
        external = _dig(predicate, "buildDefinition", "externalParameters")
        source = (
            _path(external, "workflow", "repository")
            or _path(external, "source")
            or _path(external, "source", "uri")
            or _first_uri(_dig(predicate, "buildDefinition").get("resolvedDependencies"))
        )
        candidates = _objects(_dig(predicate, "buildDefinition").get("resolvedDependencies"))
    else:
        return ProvenanceFacts("", "")
    repository = normalise_source(source)
    return ProvenanceFacts(
        builder[:MAX_FACT_CHARS],
        repository[:MAX_FACT_CHARS],
        _source_digest(repository, candidates),
    )


def _source_digest(repository: str, candidates: list[dict[str, Any]]) -> str:
    """The revision the first candidate naming ``repository`` states, as "<alg>:<hex>"; else "".

    A digest of another material (a base image, a tool) is never reported as the source's.
    """
    if not repository:
        return ""
    for item in candidates[:MAX_SOURCE_CANDIDATES]:
        if normalise_source(_path(item, "uri")) != repository:
            continue
        digests = item.get("digest")
        if not isinstance(digests, dict):
            return ""
        for algorithm in SOURCE_DIGEST_ALGORITHMS:
            value = digests.get(algorithm)
            if isinstance(value, str) and _HEX_RE.fullmatch(value):
                return f"{algorithm}:{value}"
        return ""
    return ""


def _objects(items: Any) -> list[dict[str, Any]]:
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def normalise_source(uri: str) -> str:
    """``git+https://host/o/r@ref`` -> ``https://host/o/r`` (see the module docstring)."""
    if uri.startswith("git+"):
        uri = uri[4:]
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    host, slash, path = rest.partition("/")
    # Only an "@" in the path is a ref; one in the host part is userinfo.
    return f"{scheme}{sep}{host}{slash}{path.split('@', 1)[0]}"


def _dig(value: Any, *path: str) -> dict[str, Any]:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value if isinstance(value, dict) else {}


def _path(value: Any, *path: str) -> str:
    for name in path:
        value = value.get(name) if isinstance(value, dict) else None
    return value if isinstance(value, str) else ""


def _first_uri(items: Any) -> str:
    if isinstance(items, list) and items and isinstance(items[0], dict):
        uri = items[0].get("uri")
        return uri if isinstance(uri, str) else ""
    return ""


def _b64(value: Any, where: str) -> bytes:
    if not isinstance(value, str) or not value:
        raise EnvelopeError(f"DSSE {where} is not base64 text")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise EnvelopeError(f"DSSE {where} is not base64") from None
