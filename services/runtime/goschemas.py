"""The Go structs that clients decode pullguard's documents into, as field sets.

Each :class:`GoStruct` lists the JSON names (``json`` struct tags, or the Go
field name where there is no tag) of the structs real clients use, so that
:func:`pullguard.services.runtime.gojson.key_collisions` can find keys a Go
client would read as one of them. Where two projects decode the same
document into different structs, the set is their union: a key must not mean
a field to any of them.

- Manifests, indexes, descriptors, platforms: image-spec ``specs-go/v1``
  (``Manifest``, ``Index``, ``Descriptor``, ``Platform``), distribution's
  ``schema2``/``manifestlist`` (``PlatformSpec`` adds ``features``), and
  containerd's media-type sniffing struct, which reads ``manifests``,
  ``config``, ``layers`` and schema1's ``fsLayers`` from any manifest.
- Image configs: image-spec ``Image``/``ImageConfig``/``RootFS``/``History``
  and docker's ``image.Image`` (``V1Image``) with ``container.Config`` and
  ``HealthConfig``.
- cosign's simple-signing payload (``payload.SimpleContainerImage``).
- DSSE envelopes (go-securesystemslib ``dsse.Envelope``/``Signature``).
- in-toto statements (in-toto-golang ``Statement``/``Subject``, attestation
  v1 ``ResourceDescriptor``), and the parts of SLSA provenance v0.2 and v1
  predicates that pullguard reads.
"""

from __future__ import annotations

from pullguard.services.runtime.gojson import GoStruct


def _names(*names: str) -> frozenset[str]:
    return frozenset(names)


PLATFORM = GoStruct(
    "platform", _names("architecture", "os", "os.version", "os.features", "variant", "features")
)
DESCRIPTOR = GoStruct(
    "descriptor",
    _names(
        "mediaType", "digest", "size", "urls", "annotations", "data", "platform", "artifactType"
    ),
    objects={"platform": PLATFORM},
)
#: Top level of any manifest or index (one set: containerd sniffs all of them).
MANIFEST = GoStruct(
    "manifest",
    _names(
        "schemaVersion",
        "mediaType",
        "artifactType",
        "config",
        "layers",
        "manifests",
        "subject",
        "annotations",
        "fsLayers",
        "signatures",
    ),
    objects={"config": DESCRIPTOR, "subject": DESCRIPTOR},
    lists={"layers": DESCRIPTOR, "manifests": DESCRIPTOR},
)

HEALTHCHECK = GoStruct(
    "Healthcheck",
    _names("Test", "Interval", "Timeout", "StartPeriod", "StartInterval", "Retries"),
)
RUNTIME_CONFIG = GoStruct(
    "config",
    _names(
        "Hostname",
        "Domainname",
        "User",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "ExposedPorts",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Env",
        "Cmd",
        "Healthcheck",
        "ArgsEscaped",
        "Image",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "NetworkDisabled",
        "MacAddress",
        "OnBuild",
        "Labels",
        "StopSignal",
        "StopTimeout",
        "Shell",
    ),
    objects={"Healthcheck": HEALTHCHECK},
)
ROOTFS = GoStruct("rootfs", _names("type", "diff_ids"))
HISTORY = GoStruct("history", _names("created", "created_by", "author", "comment", "empty_layer"))
IMAGE_CONFIG = GoStruct(
    "image config",
    _names(
        "created",
        "author",
        "architecture",
        "variant",
        "os",
        "os.version",
        "os.features",
        "config",
        "rootfs",
        "history",
        "id",
        "parent",
        "comment",
        "container",
        "container_config",
        "docker_version",
        "size",
    ),
    objects={"config": RUNTIME_CONFIG, "container_config": RUNTIME_CONFIG, "rootfs": ROOTFS},
    lists={"history": HISTORY},
)

SIMPLE_SIGNING = GoStruct(
    "payload",
    _names("critical", "optional"),
    objects={
        "critical": GoStruct(
            "critical",
            _names("identity", "image", "type"),
            objects={
                "identity": GoStruct("identity", _names("docker-reference")),
                "image": GoStruct("image", _names("docker-manifest-digest")),
            },
        )
    },
)

DSSE_ENVELOPE = GoStruct(
    "envelope",
    _names("payloadType", "payload", "signatures"),
    lists={"signatures": GoStruct("signature", _names("keyid", "sig"))},
)

_RESOURCE = GoStruct(
    "resource",
    _names("name", "uri", "digest", "content", "downloadLocation", "mediaType", "annotations"),
)
IN_TOTO_STATEMENT = GoStruct(
    "statement",
    _names("_type", "predicateType", "subject", "predicate"),
    lists={"subject": _RESOURCE},
)
SLSA_V02_PREDICATE = GoStruct(
    "predicate",
    _names("builder", "buildType", "invocation", "buildConfig", "metadata", "materials"),
    objects={
        "builder": GoStruct("builder", _names("id")),
        "invocation": GoStruct(
            "invocation",
            _names("configSource", "parameters", "environment"),
            objects={
                "configSource": GoStruct("configSource", _names("uri", "digest", "entryPoint"))
            },
        ),
    },
    lists={"materials": GoStruct("material", _names("uri", "digest"))},
)
SLSA_V1_PREDICATE = GoStruct(
    "predicate",
    _names("buildDefinition", "runDetails"),
    objects={
        "buildDefinition": GoStruct(
            "buildDefinition",
            _names("buildType", "externalParameters", "internalParameters", "resolvedDependencies"),
            lists={"resolvedDependencies": _RESOURCE},
        ),
        "runDetails": GoStruct(
            "runDetails",
            _names("builder", "metadata", "byproducts"),
            objects={
                "builder": GoStruct("builder", _names("id", "version", "builderDependencies"))
            },
        ),
    },
)
