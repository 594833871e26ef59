"""The rule's NotationPolicy message as a :class:`NotationTrust` (servicer side only).

Kept apart from the domain modules, which import no generated code.
"""

from __future__ import annotations

from pullguard.services.runtime.config.notation import DistinguishedNameError
from pullguard.services.runtime.errors import ConfigError
from pullguard.services.signature.notation.verify import NotationTrust
from pullguard.v1 import common_pb2


def notation_trust_from_proto(
    message: common_pb2.SignaturePolicy, where: str
) -> NotationTrust | None:
    """None when the rule trusts no Notation signer; ConfigError when it cannot be used."""
    if not message.HasField("notation"):
        return None
    notation = message.notation
    try:
        return NotationTrust.of(
            [(store.type, list(store.certificates)) for store in notation.trust_stores],
            list(notation.trusted_identities),
            notation.level,
            dict(notation.overrides),
        )
    except (KeyError, DistinguishedNameError) as exc:
        raise ConfigError("policy", f"{where}.notation", f"cannot be used: {exc}") from None
