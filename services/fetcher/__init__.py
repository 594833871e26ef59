"""The fetcher: the only part of pullguard that talks to upstream registries.

Domain modules (no gRPC): ``client`` (one upstream's distribution API:
auth, redirects, bounded streaming, retries), ``auth`` (challenges, realm
rules, token cache), ``transfer`` (bounded hashed copies, throughput floor),
``urls`` (origins, redaction, redirect rules), ``operations`` (what each RPC
does), ``models``. ``servicer`` translates protobuf messages.
"""
