"""Documents that Python and Go's ``encoding/json`` read differently (issue 7).

Go matches keys to struct fields case-insensitively (ASCII case, plus the
Kelvin sign and the long s), the last match winning; containerd, docker and
CRI-O decode manifests and configs that way. Every key that folds onto a
known field without being it is refused (``format.json_key_case_collision``),
spelled plainly or with ``\\u`` escapes, at every depth a Go client decodes
a struct. The other differentials of the family (numbers, invalid UTF-8,
lone surrogates, ``null``, BOM, duplicates) are pinned here too.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from pullguard.services.format.config_check import check_config
from pullguard.services.format.jsonstrict import StrictJsonError, loads_strict
from pullguard.services.format.mediatypes import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST
from pullguard.services.runtime.config import Limits
from pullguard.services.runtime.descriptors import Descriptor
from pullguard.services.runtime.gojson import go_fold
from tests.unit.format.test_format_manifest import check, codes, image, index, sha

COLLISION = "format.json_key_case_collision"
LIMITS = Limits()
KELVIN = "\u212a"
LONG_S = "\u017f"


def _denied_for_collision(body: bytes, content_type: str = OCI_MANIFEST) -> list[dict[str, str]]:
    result = check(body, content_type)
    assert not result.verdict.allowed and result.summary is None
    assert codes(result) == {COLLISION}, result.verdict.findings
    return [dict(f.evidence) for f in result.verdict.findings]


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ------------------------------------------------------------------ folding


def test_go_fold_is_ascii_case_plus_kelvin_and_long_s() -> None:
    # Established with Go 1.19's encoding/json over every rune U+0080..U+10FFFF
    # (reflect.StructOf with fields "a".."z" and "a.".."z."): only U+017F and
    # U+212A ever match an ASCII field name; go 1.21's rewrite keeps that
    # (unicode.SimpleFold maps İ and ı to themselves).
    assert go_fold("Layers") == go_fold("LAYERS") == go_fold(f"layer{LONG_S}") == "layers"
    assert go_fold(f"{KELVIN}eyid") == go_fold("KEYID") == "keyid"
    assert go_fold("os.Version") == "os.version"
    for rune in ("\u0130", "\u0131", "\u212b", "\u00df", "\uff2c"):  # İ ı Å ß Ｌ
        assert not go_fold(f"{rune}x").isascii()


# ------------------------------------------------------------------ manifests

_MANIFEST_CASES = {
    "top level, both spellings": lambda d: {**d, "Layers": d["layers"]},
    "top level, long s": lambda d: {**d, f"layer{LONG_S}": []},
    "top level, only the variant": lambda d: {
        **{k: v for k, v in d.items() if k != "mediaType"},
        "MediaType": OCI_MANIFEST,
    },
    "schemaVersion": lambda d: {**d, "SchemaVersion": 1},
    "schema1 fsLayers": lambda d: {**d, "FSLayers": []},
    "manifests on an image": lambda d: {**d, "Manifests": []},
    "config descriptor digest": lambda d: {
        **d,
        "config": {**d["config"], "Digest": sha("other")},
    },
    "layer descriptor urls": lambda d: {
        **d,
        "layers": [d["layers"][0], {**d["layers"][1], "URLs": ["https://evil.example/x"]}],
    },
    "layer descriptor size, long s": lambda d: {
        **d,
        "layers": [{**d["layers"][0], f"{LONG_S}ize": 1}, d["layers"][1]],
    },
    "subject descriptor": lambda d: {
        **d,
        "subject": {"mediaType": OCI_MANIFEST, "digest": sha("s"), "size": 1, "MEDIATYPE": "x"},
    },
    "platform of a layer descriptor": lambda d: {
        **d,
        "layers": [{**d["layers"][0], "platform": {"os": "linux", "OS": "windows"}}],
    },
}


@pytest.mark.parametrize("mutate", _MANIFEST_CASES.values(), ids=_MANIFEST_CASES.keys())
def test_manifest_key_case_collision(mutate: Any) -> None:
    _denied_for_collision(_dumps(mutate(image())))


def test_collision_names_the_key_the_field_and_where() -> None:
    doc = index()
    doc["manifests"][1]["platform"]["Architecture"] = "amd64"
    (evidence,) = _denied_for_collision(_dumps(doc), OCI_INDEX)
    assert evidence == {
        "key": "Architecture",
        "field": "architecture",
        "where": "manifests[1].platform",
    }


_INDEX_CASES = {
    "entry digest": lambda d: d["manifests"][0].__setitem__("Digest", sha("evil")),
    "entry platform": lambda d: d["manifests"][0].__setitem__("Platform", {"os": "windows"}),
    "platform os": lambda d: d["manifests"][1]["platform"].__setitem__("OS", "windows"),
    "platform variant": lambda d: d["manifests"][1]["platform"].__setitem__("Variant", "v7"),
    "platform os.version, long s": lambda d: d["manifests"][0]["platform"].__setitem__(
        f"o{LONG_S}.version", "10"
    ),
    "platform os.features": lambda d: d["manifests"][0]["platform"].__setitem__(
        "OS.Features", ["win32k"]
    ),
    "index layers": lambda d: d.__setitem__("LAYERS", []),
}


@pytest.mark.parametrize("mutate", _INDEX_CASES.values(), ids=_INDEX_CASES.keys())
def test_index_key_case_collision(mutate: Any) -> None:
    doc = index()
    mutate(doc)
    _denied_for_collision(_dumps(doc), OCI_INDEX)


@pytest.mark.parametrize(
    ("kind", "plain", "escaped", "code"),
    [
        ("image", b'"layers": ', b'"\\u004cayers": [], ', COLLISION),  # Layers
        ("image", b'"layers": ', b'"layer\\u017f": [], ', COLLISION),  # layers, long s
        ("image", b'"digest": ', b'"\\u0044igest": "x", ', COLLISION),  # config's Digest
        ("index", b'"os": ', b'"\\u004f\\u0053": "windows", ', COLLISION),  # platform OS
        ("index", b'"architecture": ', b'"\\u0061rchitecture": "x", ', "format.duplicate_key"),
    ],
)
def test_escaped_spellings_are_the_same_key(
    kind: str, plain: bytes, escaped: bytes, code: str
) -> None:
    body = _dumps(image() if kind == "image" else index())
    assert plain in body
    result = check(
        body.replace(plain, escaped + plain, 1), OCI_INDEX if kind == "index" else OCI_MANIFEST
    )
    assert not result.verdict.allowed
    assert codes(result) == {code}


def test_keys_that_fold_onto_nothing_pass() -> None:
    doc = image(
        annotations={"Org": "a", "org": "b", "ORG": "c"},  # a map: Go compares keys exactly
        layerz=[],
        **{"x-layers": [], "d\u0131gest": "x", "\u0130mage": 1, "\u212bnnotations": {}},
    )
    doc["config"]["annotations"] = {"Size": "1", "size": "2"}
    result = check(_dumps(doc))
    assert result.verdict.allowed, result.verdict.findings


def test_an_index_with_exact_platform_fields_passes() -> None:
    doc = index()
    doc["manifests"][0]["platform"].update({"os.version": "10", "os.features": ["a"]})
    assert check(_dumps(doc), OCI_INDEX).verdict.allowed


# ------------------------------------------------------------------ configs


def _config(**fields: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"User": "1000", "Env": ["PATH=/bin"], "Labels": {"A": "1", "a": "2"}},
        "rootfs": {"type": "layers", "diff_ids": [sha("d0")]},
        "history": [{"created_by": "x"}],
    }
    doc.update(fields)
    return doc


def _check_config(doc: Any) -> Any:
    data = doc if isinstance(doc, bytes) else _dumps(doc)
    descriptor = Descriptor(OCI_CONFIG, sha("config"), len(data))
    return check_config(data, descriptor, 1, LIMITS)


_CONFIG_CASES = {
    "runtime user": lambda d: d["config"].__setitem__("user", "0"),
    "runtime entrypoint": lambda d: d["config"].__setitem__("ENTRYPOINT", ["/evil"]),
    "runtime volumes, long s": lambda d: d["config"].__setitem__(f"Volume{LONG_S}", {}),
    "runtime healthcheck": lambda d: d["config"].__setitem__("healthcheck", {"Test": ["x"]}),
    "healthcheck test": lambda d: d["config"].__setitem__(
        "Healthcheck", {"Test": ["NONE"], "test": ["CMD", "/evil"]}
    ),
    "top-level config": lambda d: d.__setitem__("Config", {"User": "0"}),
    "top-level os": lambda d: d.__setitem__("OS", "windows"),
    "rootfs": lambda d: d.__setitem__("RootFS", {"type": "layers", "diff_ids": []}),
    "rootfs diff_ids": lambda d: d["rootfs"].__setitem__("Diff_IDs", []),
    "history entry": lambda d: d["history"][0].__setitem__("Empty_Layer", True),
    "container_config": lambda d: d.__setitem__("container_config", {"cmd": ["x"]}),
}


@pytest.mark.parametrize("mutate", _CONFIG_CASES.values(), ids=_CONFIG_CASES.keys())
def test_config_key_case_collision(mutate: Any) -> None:
    doc = _config()
    mutate(doc)
    verdict = _check_config(doc)
    assert not verdict.allowed
    assert {f.code for f in verdict.findings} == {COLLISION}, verdict.findings


def test_config_escaped_user_is_refused_and_named() -> None:
    body = _dumps(_config()).replace(b'"User": "1000"', b'"User": "1000", "\\u0075ser": "0"')
    verdict = _check_config(body)
    (finding,) = verdict.findings
    assert finding.code == COLLISION
    assert dict(finding.evidence) == {"key": "user", "field": "User", "where": "config.config"}


def test_config_maps_and_exact_fields_pass() -> None:
    doc = _config()
    doc["config"]["Volumes"] = {"/data": {}, "/DATA": {}}
    doc["config"]["Healthcheck"] = {"Test": ["NONE"], "Interval": 1}
    doc["container_config"] = {"Cmd": ["sh"], "Hostname": "x"}
    verdict = _check_config(doc)
    assert verdict.allowed, verdict.findings


# ------------------------------------------- the rest of the family, pinned


@pytest.mark.parametrize(
    ("literal", "code"),
    [
        (b"1e2", "format.invalid_size"),  # Go: cannot unmarshal number 1e2 into int64
        (b"100.0", "format.invalid_size"),
        (b"9223372036854775808", "format.invalid_size"),  # 2^63: Go overflows int64
        (b"9007199254740993", "format.invalid_size"),  # 2^53 + 1: a double rounds it
        (b"123456789012345678901", "format.invalid_json"),  # refused before int()
        (b"null", "format.invalid_size"),  # Go leaves 0; pullguard refuses
        (b'"100"', "format.invalid_size"),
    ],
)
def test_size_literals_go_reads_otherwise_are_refused(literal: bytes, code: str) -> None:
    body = _dumps(image()).replace(b'"size": 100', b'"size": ' + literal, 1)
    assert b'"size": ' + literal in body
    result = check(body)
    assert not result.verdict.allowed and code in codes(result)


def test_minus_zero_is_zero_to_both() -> None:
    body = _dumps(image()).replace(b'"size": 100', b'"size": -0', 1)
    result = check(body)
    assert result.verdict.allowed
    assert result.summary is not None and result.summary.layers[1].size == 0


_NULLS = {
    "descriptor digest": ("image", lambda d: d["config"].__setitem__("digest", None)),
    "descriptor mediaType": ("image", lambda d: d["layers"][0].__setitem__("mediaType", None)),
    "layers": ("image", lambda d: d.__setitem__("layers", None)),
    "config": ("image", lambda d: d.__setitem__("config", None)),
    "entry platform": ("index", lambda d: d["manifests"][0].__setitem__("platform", None)),
    "platform os": ("index", lambda d: d["manifests"][0]["platform"].__setitem__("os", None)),
}


@pytest.mark.parametrize(("kind", "mutate"), _NULLS.values(), ids=_NULLS.keys())
def test_null_for_a_field_is_refused(kind: str, mutate: Any) -> None:
    # Go decodes null as "keep the zero value"; pullguard never reads null as absent here.
    doc = index() if kind == "index" else image()
    mutate(doc)
    result = check(_dumps(doc), OCI_INDEX if kind == "index" else OCI_MANIFEST)
    assert not result.verdict.allowed


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": "\\ud800"}', "lone surrogate"),  # Go reads U+FFFD
        (b'{"\\udfff": 1}', "lone surrogate"),
        (b'{"a": "\xff"}', "not UTF-8"),  # Go substitutes U+FFFD
        (b'{"a\xc3": 1}', "not UTF-8"),
        (b'\xef\xbb\xbf{"a": 1}', "byte order mark"),
        (b'{"layers": 1, "l\\u0061yers": 2}', "duplicate key"),
    ],
)
def test_other_differentials_refused_by_the_loader(data: bytes, message: str) -> None:
    with pytest.raises(StrictJsonError) as caught:
        loads_strict(data, 1024)
    assert message in caught.value.message
