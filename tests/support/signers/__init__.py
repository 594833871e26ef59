"""Signed fixtures for the signature tests: real signers first, crafted forms second.

Where cosign 2.5 stores what (measured against Debian's docker-registry
2.8.2, which has no referrers API; ``<hex>`` is the image manifest's sha256):

``cosign sign --key K --tlog-upload=false REPO@sha256:<hex>``
    An OCI image manifest tagged ``sha256-<hex>.sig`` in REPO. Config
    ``application/vnd.oci.image.config.v1+json`` (233 bytes:
    ``{"architecture":"","created":"0001-01-01T00:00:00Z","history":[...],
    "os":"","rootfs":{"type":"layers","diff_ids":[<payload digest>]},
    "config":{}}``). One layer per signature,
    ``application/vnd.dev.cosign.simplesigning.v1+json``, annotated
    ``dev.cosignproject.cosign/signature`` = base64 DER ECDSA over the layer
    blob, the simple-signing payload
    ``{"critical":{"identity":{"docker-reference":"HOST:PORT/REPO"},
    "image":{"docker-manifest-digest":"sha256:<hex>"},"type":"cosign container
    image signature"},"optional":null}``. No ``subject``, no ``artifactType``.
    Signing again (another key) appends a layer to the same manifest.

``COSIGN_EXPERIMENTAL=1 cosign sign --registry-referrers-mode=oci-1-1 ...``
    No ``.sig`` tag. The same manifest shape, but config media type
    ``application/vnd.dev.cosign.artifact.sig.v1+json`` (same config bytes)
    and ``subject`` = the image's descriptor; pushed by digest. The registry
    answers ``GET /v2/REPO/referrers/sha256:<hex>`` with 404, so cosign (via
    go-containerregistry) maintains the referrers *fallback tag*
    ``sha256-<hex>`` (no suffix): an OCI index
    (``application/vnd.oci.image.index.v1+json``) whose ``manifests`` lists
    each referrer with ``mediaType``, ``size``, ``digest`` and
    ``artifactType`` = the referrer's config media type
    (``application/vnd.dev.cosign.artifact.sig.v1+json``). Each new referrer
    is added to that index and the tag re-pushed; the entries are kept
    sorted by digest (not in push order). Signing again with another key
    makes another referrer manifest (no layer is appended). Without
    ``COSIGN_EXPERIMENTAL=1`` the flag is refused.

``cosign attest --key K --type slsaprovenance --predicate F --tlog-upload=false``
    Tag ``sha256-<hex>.att``: an OCI image manifest, config
    ``application/vnd.oci.image.config.v1+json``, one layer per attestation,
    ``application/vnd.dsse.envelope.v1+json``, annotated
    ``dev.cosignproject.cosign/signature: ""`` (empty) and ``predicateType:
    https://slsa.dev/provenance/v0.2`` (unsigned: the signed statement is
    inside). The blob is a DSSE envelope ``{"payloadType":
    "application/vnd.in-toto+json","payload":<b64>,"signatures":[{"keyid":"",
    "sig":<b64>}]}``; the payload is an in-toto Statement v0.1 whose subject is
    ``{"name":"HOST:PORT/REPO","digest":{"sha256":"<hex>"}}``.

``cosign attest ... --new-bundle-format`` (cosign 2.5 has no such flag on ``sign``)
    A referrer pushed by digest, listed in the ``sha256-<hex>`` fallback
    index next to any other referrer (sorted by digest). The manifest:
    ``artifactType`` ``application/vnd.dev.sigstore.bundle.v0.3+json``; config
    is the empty descriptor (``application/vnd.oci.empty.v1+json``, size 2,
    ``sha256:44136fa...``) and, a cosign quirk, carries an ``artifactType``
    field itself; one layer ``application/vnd.dev.sigstore.bundle.v0.3+json``
    holding the bundle JSON; ``subject`` = the image; annotations
    ``dev.sigstore.bundle.content: dsse-envelope``,
    ``dev.sigstore.bundle.predicateType: <type>`` and
    ``org.opencontainers.image.created``. In the fallback index the
    descriptor's ``artifactType`` is ``application/vnd.oci.empty.v1+json``
    (go-containerregistry takes the config media type, not the manifest's
    artifactType). With a key the bundle's ``verificationMaterial`` is only
    ``{"publicKey":{"hint":base64(sha256(SPKI DER))}}``; with
    ``--tlog-upload=false`` it has no tlog entries and no timestamps. An
    image signature in this form (what cosign v3's ``sign`` writes) is a DSSE
    in-toto statement with predicateType ``https://sigstore.dev/cosign/sign/v1``
    and an empty predicate: cosign 2.5 makes one with ``attest
    --new-bundle-format --type https://sigstore.dev/cosign/sign/v1``.

``COSIGN_REPOSITORY=HOST:PORT/OTHER cosign sign ...``
    The ``sha256-<hex>.sig`` manifest goes to OTHER (same registry here)
    instead; the payload's docker-reference still names the image's own
    repository.

``--sign-container-identity NAME`` sets the docker-reference to NAME.

Modules: :mod:`.cosign_cli` (the real cosign, every form above),
:mod:`.oci` (distribution API: copy, push, fallback index; a minimal
registry on the hostile upstream), :mod:`.bundles` (in-toto statements,
sigstore bundle referrers as cosign writes them, key-based bundles),
:mod:`.keyless` (real keyless bundles from @sigstore/sign against
@sigstore/mock, see node/keyless.js), :mod:`.crafted` (what cosign refuses to
make: wrong digest, wrong repository, floods, oversized payloads, foreign
subjects, lying annotations).
"""
