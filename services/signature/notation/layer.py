"""A Notation signature layer of a referrer, checked against the manifest it must name.

The generic verifier hands over the layer's staged envelope; here the
manifest's own bytes give the target (the digest they hash to, the
``mediaType`` they state and their length), so the payload is compared
with what was staged, not with what some other layer said. A signature
for a manifest whose bytes were not staged, or that states no media type,
cannot be bound and is rejected.
"""

from __future__ import annotations

from datetime import datetime

from pullguard.services.signature import policy
from pullguard.services.signature.notation.verify import NotationTrust, Target, verify_notation
from pullguard.services.signature.policy import SignatureCheck
from pullguard.services.signature.strictjson import StrictJsonError, loads_strict

#: A Notation referrer that is not an OCI 1.1 referrer of this manifest.
NOT_A_REFERRER = "signature.notation_not_referrer"


def target_of(digest: str, content: bytes | None) -> Target | str:
    """The target a payload must name, or why there is none."""
    if content is None:
        return f"the manifest {digest} is not staged, so its media type and size are unknown"
    try:
        document = loads_strict(content)
    except StrictJsonError as exc:
        return f"the manifest does not parse: {exc}"
    media_type = document.get("mediaType") if isinstance(document, dict) else None
    if not isinstance(media_type, str) or not media_type:
        return "the manifest states no mediaType to compare the signed one with"
    return Target(digest, media_type, len(content))


def check_layer(
    location: str,
    media_type: str,
    envelope: bytes,
    subject_digest: str,
    referrer_subject: str,
    content: bytes | None,
    trust: NotationTrust | None,
    now: datetime,
) -> list[SignatureCheck]:
    """The checks of one Notation envelope layer."""
    if trust is None:
        return [
            SignatureCheck.reject(
                location,
                policy.UNTRUSTED_KEY,
                "a Notation signature, and the rule has no signature.notation trust policy",
            )
        ]
    if referrer_subject != subject_digest:
        return [
            SignatureCheck.reject(
                location,
                NOT_A_REFERRER,
                f"a Notation signature must be a referrer whose subject is {subject_digest}",
            )
        ]
    target = target_of(subject_digest, content)
    if isinstance(target, str):
        return [SignatureCheck.reject(location, policy.INVALID, target)]
    return verify_notation(location, media_type, envelope, target, trust, now)
