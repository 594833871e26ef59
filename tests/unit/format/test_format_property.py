"""Property tests of the manifest parser (THREATS O-03, F-01, F-03, F-04).

1. Whatever the bytes, no exception escapes ``check_manifest``.
2. A valid manifest or index mutated in a way that makes it invalid
   (a required key deleted, a key duplicated, a value of the wrong type,
   a second shape added) is never allowed, whatever neutral noise surrounds
   the mutation.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pullguard.services.format.manifest import check_manifest
from pullguard.services.format.mediatypes import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
)
from pullguard.services.runtime.config import Limits

LIMITS = Limits()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _descriptor(media_type: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(name), "size": 42, **extra}


def _valid_documents() -> list[tuple[dict[str, Any], str]]:
    oci = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor("application/vnd.oci.image.config.v1+json", "c"),
        "layers": [_descriptor(OCI_LAYER, "a"), _descriptor(OCI_LAYER, "b")],
        "annotations": {"k": "v"},
    }
    docker = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": _descriptor("application/vnd.docker.container.image.v1+json", "c"),
        "layers": [_descriptor("application/vnd.docker.image.rootfs.diff.tar.gzip", "a")],
    }
    platform = {"os": "linux", "architecture": "amd64"}
    oci_index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [_descriptor(OCI_MANIFEST, "m", platform=platform)],
    }
    docker_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_LIST,
        "manifests": [_descriptor(DOCKER_MANIFEST, "m", platform=dict(platform))],
    }
    return [
        (oci, OCI_MANIFEST),
        (docker, DOCKER_MANIFEST),
        (oci_index, OCI_INDEX),
        (docker_list, DOCKER_LIST),
    ]


VALID = _valid_documents()

# Values that are wrong for each kind of field.
BAD_VALUES: dict[str, list[Any]] = {
    "size": ["42", 42.0, 4.2e1, True, False, -1, None, 2**53 + 1, [], {}],
    "digest": [42, None, "", "sha256:" + "A" * 64, "sha384:" + "a" * 96, "sha256:abc", []],
    "mediaType": [1, None, "", "no-slash", [], {}],
    "schemaVersion": [2.0, "2", True, 1, 3, None, -2],
    "layers": [{}, "x", None, 1],
    "manifests": [{}, "x", None, 1],
    "config": [[], "x", None, 1],
    "annotations": [[], "x", 1, {"k": 1}],
    "platform": ["linux/amd64", {"os": "linux"}, 1],
}


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a dict entry in ``value``."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict):
        for key, item in value.items():
            out.append((*prefix, key))
            out.extend(_paths(item, (*prefix, key)))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(_paths(item, (*prefix, i)))
    return out


def _parent(doc: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        doc = doc[step]
    return doc


# Keys whose absence is allowed: optional fields, and the OCI top-level
# mediaType (the Content-Type names it and the structure agrees).
OPTIONAL = {"annotations", "platform", "k"}


def _required_paths(doc: dict[str, Any], content_type: str) -> list[tuple[Any, ...]]:
    paths = []
    for path in _paths(doc):
        if path[-1] in OPTIONAL or (
            path == ("mediaType",) and content_type in (OCI_MANIFEST, OCI_INDEX)
        ):
            continue
        paths.append(path)
    return paths


def _dump_with_duplicate(value: Any, target: tuple[Any, ...], extra: Any) -> str:
    """JSON text of ``value`` with the key at ``target`` written twice."""

    def dump(item: Any, path: tuple[Any, ...]) -> str:
        if isinstance(item, dict):
            parts = []
            for key, sub in item.items():
                parts.append(f"{json.dumps(key)}:{dump(sub, (*path, key))}")
                if (*path, key) == target:
                    parts.append(f"{json.dumps(key)}:{json.dumps(extra)}")
            return "{" + ",".join(parts) + "}"
        if isinstance(item, list):
            return "[" + ",".join(dump(sub, (*path, i)) for i, sub in enumerate(item)) + "]"
        return json.dumps(item)

    return dump(value, ())


neutral_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | neutral_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(neutral_text, children, max_size=4)
    ),
    max_leaves=12,
)


@st.composite
def invalid_documents(draw: st.DrawFn) -> tuple[bytes, str, str]:
    base, content_type = draw(st.sampled_from(VALID))
    doc = copy.deepcopy(base)
    # Mutations target paths of the valid base document only, never the noise.
    base_paths = _paths(base)
    # Neutral noise first: unknown extension keys and annotation strings.
    if draw(st.booleans()):
        doc["x-extension"] = draw(json_values)
    if draw(st.booleans()):
        doc.setdefault("annotations", {})[draw(neutral_text)] = draw(neutral_text)
    kind = draw(st.sampled_from(["delete", "duplicate", "retype", "ambiguous", "mismatch"]))
    if kind == "delete":
        path = draw(st.sampled_from(_required_paths(base, content_type)))
        del _parent(doc, path)[path[-1]]
        return json.dumps(doc).encode(), content_type, f"delete {path}"
    if kind == "duplicate":
        path = draw(st.sampled_from(base_paths))
        # Often the same value again: then only the duplicate itself is wrong.
        extra = draw(st.just(_parent(doc, path)[path[-1]]) | json_values)
        return _dump_with_duplicate(doc, path, extra).encode(), content_type, f"dup {path}"
    if kind == "retype":
        candidates = [
            p
            for p in base_paths
            if p[-1] in BAD_VALUES and p[-1] != "annotations" or p in (("annotations",),)
        ]
        path = draw(st.sampled_from(candidates))
        _parent(doc, path)[path[-1]] = draw(st.sampled_from(BAD_VALUES[path[-1]]))
        return json.dumps(doc).encode(), content_type, f"retype {path}"
    if kind == "ambiguous":
        if "manifests" in doc:
            doc[draw(st.sampled_from(["config", "layers"]))] = draw(json_values)
        else:
            doc["manifests"] = draw(json_values)
        return json.dumps(doc).encode(), content_type, "ambiguous"
    others = [
        t for t in (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST) if t != content_type
    ]
    doc["mediaType"] = draw(st.sampled_from(others))
    return json.dumps(doc).encode(), content_type, "mismatch"


def test_valid_documents_are_allowed() -> None:
    for doc, content_type in VALID:
        result = check_manifest(json.dumps(doc).encode(), content_type, LIMITS)
        assert result.verdict.allowed, result.verdict.findings


@PROPERTY
@given(invalid_documents())
def test_o03_mutated_manifest_is_never_allowed(case: tuple[bytes, str, str]) -> None:
    body, content_type, what = case
    result = check_manifest(body, content_type, LIMITS)
    assert not result.verdict.allowed, what
    assert result.summary is None


@PROPERTY
@given(
    st.binary(max_size=300),
    st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, "", "text/html"]),
)
def test_o03_random_bytes_never_raise(body: bytes, content_type: str) -> None:
    result = check_manifest(body, content_type, LIMITS)
    assert result.verdict.allowed == (result.summary is not None)


@PROPERTY
@given(json_values, st.sampled_from([OCI_MANIFEST, OCI_INDEX, DOCKER_LIST]))
def test_o03_random_json_never_raises(value: Any, content_type: str) -> None:
    result = check_manifest(json.dumps(value).encode(), content_type, LIMITS)
    assert result.verdict.allowed == (result.summary is not None)
    if result.verdict.allowed:
        assert isinstance(value, dict) and value.get("schemaVersion") == 2


@PROPERTY
@given(st.sampled_from(VALID), st.integers(0, 400), st.binary(min_size=1, max_size=4))
def test_o03_byte_flips_never_raise(
    valid: tuple[dict[str, Any], str], position: int, noise: bytes
) -> None:
    doc, content_type = valid
    body = bytearray(json.dumps(doc).encode())
    position %= len(body)
    body[position : position + len(noise)] = noise
    result = check_manifest(bytes(body), content_type, LIMITS)
    assert result.verdict.allowed == (result.summary is not None)
