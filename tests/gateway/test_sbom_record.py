"""A decision records each signed SBOM so that a re-evaluation judges it again.

The record is JSON read back from the decision database: what is not of the
expected type is left empty, never trusted as something else.
"""

from __future__ import annotations

import json

from pullguard.gateway.pull.vulnerabilities import _sbom, _sbom_from_record
from pullguard.v1 import inventory_pb2

SBOM = inventory_pb2.Sbom(
    format="cyclonedx",
    predicate_type="https://cyclonedx.org/bom",
    signer="ci.pub",
    found_at="tag:sha256-1.att/layers[0]",
    digest="sha256:" + "ab" * 32,
    packages=[
        inventory_pb2.Package(
            ecosystem="Go",
            name="golang.org/x/net",
            version="v0.10.0",
            purl="pkg:golang/golang.org/x/net@v0.10.0",
        )
    ],
    skipped=2,
)


def test_a_recorded_sbom_reads_back_as_it_was_verified() -> None:
    recorded = json.loads(json.dumps(_sbom(SBOM)))
    assert recorded["digest"] == SBOM.digest and recorded["skipped"] == 2
    back = _sbom_from_record(recorded)
    assert (back.digest, back.signer, back.format, back.found_at) == (
        SBOM.digest,
        "ci.pub",
        "cyclonedx",
        SBOM.found_at,
    )
    assert list(back.packages) == list(SBOM.packages)


def test_a_mangled_record_gives_empty_fields_not_a_crash() -> None:
    back = _sbom_from_record({"digest": 7, "packages": [{"name": ["x"]}, "junk"], "signer": None})
    assert back.digest == "" and back.signer == ""
    assert [p.name for p in back.packages] == ["", ""]
    assert _sbom_from_record("not a mapping") == inventory_pb2.Sbom()
