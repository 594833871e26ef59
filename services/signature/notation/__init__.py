"""Notation (Notary Project) signatures: envelopes, chains, timestamps, trust policy levels.

A Notation signature is an OCI referrer of artifact type
``application/vnd.cncf.notary.signature`` whose one layer is a JWS or COSE
envelope. :mod:`.envelope` reads either into one shape, :mod:`.chain`
checks the certificates, :mod:`.timestamp` the RFC 3161 countersignature,
and :mod:`.verify` applies the trust policy's validations and levels. The
generic signature code (``verifier``) finds the artifacts and hands each
envelope here; nothing here does I/O.
"""

#: The artifactType of a Notation signature manifest.
ARTIFACT_TYPE = "application/vnd.cncf.notary.signature"
