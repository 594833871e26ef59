"""services/signature: offline verification of cosign signatures, per policy rule.

Domain modules (no grpc, no generated code): ``strictjson`` (strict loader),
``attachments`` (the ``.sig`` manifest), ``simplesigning`` (the payload and its
claims), ``keys`` (the ``cryptography`` adapter), ``policy`` (mode and
threshold) and ``verifier`` (the steps, in order). ``servicer`` translates.
"""
