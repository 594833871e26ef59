"""The fetcher: the only part of pullguard that talks to upstream registries.

Domain modules (no gRPC): ``client`` (one upstream's distribution API:
bodies, statuses, retries, per-upstream slots), ``session`` (requests, auth
challenges, redirects, provenance records), ``network`` (where connections
may go after DNS; TLS trust and peer facts), ``encoding`` (bounded
Content-Encoding decoding), ``auth`` (challenges, realm rules, token cache),
``transfer`` (bounded hashed copies, throughput floor), ``urls`` (origins,
redaction, redirect rules), ``documents`` (artifact manifests, referrers
indexes, Link headers), ``operations`` (what each RPC does), ``models``.
``servicer`` translates protobuf messages.
"""
