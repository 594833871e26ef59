"""The source revision a SLSA predicate states for its source repository (source_digest)."""

from __future__ import annotations

import pytest

from pullguard.services.signature import dsse
from pullguard.services.signature.dsse import SLSA_V02, SLSA_V1

COMMIT = "a" * 40


def facts(predicate_type: str, predicate: object) -> dsse.ProvenanceFacts:
    statement = dsse.Statement("https://in-toto.io/Statement/v1", predicate_type, (), predicate)
    return dsse.provenance_facts(statement)


@pytest.mark.parametrize(
    ("predicate_type", "predicate", "expected"),
    [
        (
            SLSA_V02,
            {
                "invocation": {
                    "configSource": {"uri": "git+https://h/o/r@v1", "digest": {"sha1": COMMIT}}
                }
            },
            f"sha1:{COMMIT}",
        ),
        (
            SLSA_V02,
            {"materials": [{"uri": "git+https://h/o/r", "digest": {"sha1": COMMIT}}]},
            f"sha1:{COMMIT}",
        ),
        (
            SLSA_V1,
            {
                "buildDefinition": {
                    "externalParameters": {"workflow": {"repository": "https://h/o/r"}},
                    "resolvedDependencies": [
                        {"uri": "git+https://h/o/r@refs/tags/v1", "digest": {"gitCommit": COMMIT}}
                    ],
                }
            },
            f"gitCommit:{COMMIT}",
        ),
    ],
)
def test_the_source_s_own_revision_is_reported(
    predicate_type: str, predicate: object, expected: str
) -> None:
    assert facts(predicate_type, predicate).source_digest == expected


def test_the_digest_of_another_material_is_not_the_source_s() -> None:
    predicate = {
        "buildDefinition": {
            "externalParameters": {"workflow": {"repository": "https://h/o/r"}},
            "resolvedDependencies": [{"uri": "https://h/other/tool", "digest": {"sha1": COMMIT}}],
        }
    }
    found = facts(SLSA_V1, predicate)
    assert (found.source_repository, found.source_digest) == ("https://h/o/r", "")


@pytest.mark.parametrize("value", ["A" * 40, "abc", 7, "a" * 40 + "\n"])
def test_a_malformed_revision_is_not_reported(value: object) -> None:
    predicate = {"materials": [{"uri": "https://h/o/r", "digest": {"sha1": value}}]}
    assert facts(SLSA_V02, predicate).source_digest == ""
