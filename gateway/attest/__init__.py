"""pullguard's own signature and admission attestation (``attest:``).

- :mod:`.keys`: the cosign private key, decrypted once at start-up;
- :mod:`.documents`: the simple-signing payload, the in-toto statement in a
  DSSE envelope, and the manifests cosign stores them in;
- :mod:`.local`: the embedded target's attachments, served by the front door;
- :mod:`.attester`: making, storing and withdrawing them around an admission.
"""

from pullguard.gateway.attest.attester import Attester, admission_predicate
from pullguard.gateway.attest.documents import PREDICATE_TYPE, Attachment
from pullguard.gateway.attest.keys import AttestKeyError, SigningKey, load_signing_key
from pullguard.gateway.attest.local import AttachmentStore, is_attachment_tag

__all__ = [
    "PREDICATE_TYPE",
    "Attachment",
    "AttachmentStore",
    "AttestKeyError",
    "Attester",
    "SigningKey",
    "admission_predicate",
    "is_attachment_tag",
    "load_signing_key",
]
