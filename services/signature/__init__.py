"""services/signature: offline verification of cosign and sigstore signatures, per rule.

Domain modules (no grpc, no generated code):

- ``strictjson`` (the runtime's strict loader, as this layer reports it),
  ``attachments`` (signature artifact manifests and their layers),
  ``simplesigning`` (the cosign payload);
- ``keys`` and ``certs`` (the ``cryptography`` adapters: keys, X.509 paths
  and identities), ``trustroot`` (trusted_root.json), ``identity`` (keyless
  signers of a rule), ``rekor`` (SETs and log-entry binding), ``dsse``
  (envelopes, in-toto statements, SLSA facts);
- ``trust`` (a rule's trust material; who made a legacy signature),
  ``bundles`` (sigstore bundles), ``verifier`` (image signatures),
  ``attestations`` (signed provenance), ``policy`` (codes, mode, threshold);
- ``backend`` (the interface to) ``sigstore_adapter``, the only module that
  imports the ``sigstore`` library.

``servicer`` translates proto <-> domain and owns staging and trusted roots.
``verify_bundle`` is ``pullguard verify-bundle``: the same bundle check, by hand.
"""
