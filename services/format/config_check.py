"""Image config JSON against the manifest that lists it (THREATS F-17).

The config is read with the same strict loader as manifests, and a key that
a Go runtime would read as a config field without being spelled as it
(``"user"`` beside ``"User"``, at any depth) is refused
(``format.json_key_case_collision``). What is checked:
``rootfs`` (type ``layers``, one well-formed diff_id per manifest layer:
``format.config_mismatch``), the types of the fields a runtime acts on
(``format.invalid_config``), and values that structurally pass but have
broken runtimes before: volume paths that climb out with ``..``
(CVE-2022-23648) and numeric users beyond int32 (CVE-2024-40635),
``format.unsafe_config``. Whether each diff_id matches its layer's
uncompressed content is a layer-inspection check (:mod:`layers`), not this one.

Artifacts the rule admits (F-14) have no image config: the empty config
(``application/vnd.oci.empty.v1+json``) must be exactly ``{}``, and another
artifact config type is only required to be strict JSON when its type ends
in ``+json``.
"""

from __future__ import annotations

from typing import Any

from pullguard.services.format.descriptors import Descriptor, check_digest
from pullguard.services.format.jsonstrict import StrictJsonError, key_case_findings, loads_strict
from pullguard.services.format.manifest import LAYER, bounded_verdict, read_staged
from pullguard.services.format.mediatypes import IMAGE_CONFIG_TYPES, OCI_EMPTY
from pullguard.services.runtime.config import Limits
from pullguard.services.runtime.findings import Finding, Verdict
from pullguard.services.runtime.goschemas import IMAGE_CONFIG
from pullguard.services.runtime.staging import StagingStore

_MAX_UID = 2**31 - 1
_STRING_FIELDS = ("User", "WorkingDir", "StopSignal")
_STRING_LIST_FIELDS = ("Env", "Entrypoint", "Cmd", "Shell", "OnBuild")
_OBJECT_MAP_FIELDS = ("ExposedPorts", "Volumes")


def check_config(
    data: bytes,
    config: Descriptor,
    layer_count: int,
    limits: Limits,
    artifact_type: str = "",
    artifact_types: tuple[str, ...] = (),
) -> Verdict:
    """Check the staged config ``data`` of an image with ``layer_count`` layers,
    or of an artifact of type ``artifact_type`` when ``artifact_types`` admits it."""
    if config.media_type not in IMAGE_CONFIG_TYPES:
        return _check_artifact_config(data, config, limits, artifact_type, artifact_types)
    try:
        document = loads_strict(data, limits.config_bytes)
    except StrictJsonError as exc:
        return _deny(exc.code, f"config: {exc.message}")
    if not isinstance(document, dict):
        return _deny("format.invalid_config", "config: expected a JSON object")
    collisions = key_case_findings(document, IMAGE_CONFIG, "config")
    if collisions:
        return bounded_verdict(collisions)
    findings: list[Finding] = []
    for name in ("architecture", "os"):
        value = document.get(name)
        if not isinstance(value, str) or not value:
            findings.append(
                Finding.error("format.invalid_config", f"config.{name}: expected a string")
            )
    _check_rootfs(document.get("rootfs"), layer_count, findings)
    if document.get("config") is not None:
        _check_runtime_config(document["config"], findings)
    if "history" in document:
        _check_history(document["history"], layer_count, findings)
    return bounded_verdict(findings)


def check_staged_config(
    staging_store: StagingStore,
    session: str,
    config: Descriptor,
    layer_count: int,
    limits: Limits,
    artifact_type: str = "",
    artifact_types: tuple[str, ...] = (),
) -> Verdict:
    """:func:`check_config` over the config blob staged under its descriptor digest."""
    data = read_staged(staging_store, session, config.digest, limits.config_bytes)
    return check_config(data, config, layer_count, limits, artifact_type, artifact_types)


def _check_artifact_config(
    data: bytes,
    config: Descriptor,
    limits: Limits,
    artifact_type: str,
    artifact_types: tuple[str, ...],
) -> Verdict:
    kind = artifact_type or config.media_type
    if config.media_type == OCI_EMPTY and not artifact_type:
        return _deny("format.artifact_type_required", f"config is {OCI_EMPTY} without artifactType")
    if kind not in artifact_types:
        return _deny("format.unknown_mediatype", f"got config {config.media_type[:100]}")
    if config.media_type == OCI_EMPTY:
        if data != b"{}":
            return _deny(
                "format.invalid_empty_config",
                f"got {len(data)} bytes of empty config, expected exactly {{}}",
            )
    elif config.media_type.endswith("+json"):
        try:
            loads_strict(data, limits.config_bytes)
        except StrictJsonError as exc:
            return _deny(exc.code, f"artifact config: {exc.message}")
    elif len(data) > limits.config_bytes:
        return _deny("format.too_large", f"config is larger than {limits.config_bytes} bytes")
    return Verdict.of(
        LAYER,
        [Finding.info("format.artifact", f"artifact {kind[:100]}: config not an image config")],
    )


def _deny(code: str, message: str) -> Verdict:
    return Verdict.of(LAYER, [Finding.error(code, message)])


def _check_rootfs(rootfs: Any, layer_count: int, findings: list[Finding]) -> None:
    if not isinstance(rootfs, dict):
        findings.append(
            Finding.error("format.config_mismatch", "config.rootfs: expected an object")
        )
        return
    if rootfs.get("type") != "layers":
        findings.append(
            Finding.error(
                "format.config_mismatch",
                f"config.rootfs.type: got {str(rootfs.get('type'))[:40]}, expected layers",
            )
        )
    diff_ids = rootfs.get("diff_ids")
    if not isinstance(diff_ids, list):
        findings.append(
            Finding.error("format.config_mismatch", "config.rootfs.diff_ids: expected a list")
        )
        return
    if len(diff_ids) != layer_count:
        findings.append(
            Finding.error(
                "format.config_mismatch",
                f"got {len(diff_ids)} diff_ids, expected {layer_count} (one per layer)",
            )
        )
        return
    for i, diff_id in enumerate(diff_ids):
        problem = check_digest(diff_id, f"config.rootfs.diff_ids[{i}]")
        if problem is not None:
            findings.append(problem)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _check_runtime_config(section: Any, findings: list[Finding]) -> None:
    if not isinstance(section, dict):
        findings.append(Finding.error("format.invalid_config", "config.config: expected an object"))
        return
    for name in _STRING_FIELDS:
        if name in section and not isinstance(section[name], str):
            findings.append(
                Finding.error("format.invalid_config", f"config.config.{name}: expected a string")
            )
    for name in _STRING_LIST_FIELDS:
        if section.get(name) is not None and not _is_string_list(section[name]):
            findings.append(
                Finding.error(
                    "format.invalid_config", f"config.config.{name}: expected a list of strings"
                )
            )
    labels = section.get("Labels")
    if labels is not None and not (
        isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values())
    ):
        findings.append(
            Finding.error("format.invalid_config", "config.config.Labels: expected a string map")
        )
    for name in _OBJECT_MAP_FIELDS:
        value = section.get(name)
        if value is not None and not (
            isinstance(value, dict) and all(isinstance(v, dict) for v in value.values())
        ):
            findings.append(
                Finding.error(
                    "format.invalid_config", f"config.config.{name}: expected a map of objects"
                )
            )
    volumes = section.get("Volumes")
    if isinstance(volumes, dict):
        for path in volumes:
            if not path.startswith("/") or ".." in path.split("/"):
                findings.append(
                    Finding.error(
                        "format.unsafe_config",
                        f"config.config.Volumes: got {path[:100]}, expected an absolute path"
                        " without ..",
                    )
                )
    user = section.get("User")
    if isinstance(user, str) and _numeric_id_out_of_range(user):
        findings.append(
            Finding.error(
                "format.unsafe_config",
                f"config.config.User: got {user[:60]}, expected numeric ids within int32",
            )
        )


def _numeric_id_out_of_range(user: str) -> bool:
    """True when a numeric uid or gid of ``user`` ("uid[:gid]") exceeds int32.

    Runtimes have mapped such values to 0 (root) or treated them as names.
    """
    for part in user.split(":", 1):
        if part.isascii() and part.isdigit():
            if len(part) > 12 or int(part) > _MAX_UID:
                return True
    return False


def _check_history(history: Any, layer_count: int, findings: list[Finding]) -> None:
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        findings.append(
            Finding.error("format.invalid_config", "config.history: expected a list of objects")
        )
        return
    if any(not isinstance(h.get("empty_layer", False), bool) for h in history):
        findings.append(
            Finding.error("format.invalid_config", "config.history: empty_layer must be a boolean")
        )
        return
    non_empty = sum(1 for h in history if not h.get("empty_layer", False))
    if history and non_empty != layer_count:
        # Many real images get this wrong; worth a look, not a denial.
        findings.append(
            Finding.warning(
                "format.config_history_mismatch",
                f"got {non_empty} non-empty history entries, expected {layer_count}",
            )
        )
