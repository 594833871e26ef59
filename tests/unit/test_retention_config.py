"""``retention:`` in the configuration, and ``pullguard gc`` as an operator runs it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from pullguard.services.runtime.config.retention import GcSettings, Keep, Retention
from pullguard.services.runtime.errors import ConfigError
from tests.support.configs import make_config
from tests.unit.test_cli_usage import run, write_config


def test_absent_means_keep_records_and_collect_blobs_every_six_hours(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    assert config.retention == Retention()
    assert not config.retention.decisions.limited
    assert config.retention.gc == GcSettings(interval=6 * 3600.0, min_age=3600.0)


def test_durations_and_counts_are_read(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        retention={
            "decisions": {"max_age": "90d", "max_count": 1000000},
            "quarantine": {"max_age": "2w"},
            "gc": {"interval": "30m", "min_age": 45},
        },
    )
    assert config.retention == Retention(
        decisions=Keep(max_age=90 * 86400.0, max_count=1000000),
        quarantine=Keep(max_age=14 * 86400.0),
        gc=GcSettings(interval=1800.0, min_age=45.0),
    )


@pytest.mark.parametrize(
    ("retention", "key"),
    [
        ({"decisions": {"max_age": "90 days"}}, "retention.decisions.max_age"),
        ({"decisions": {"max_count": -1}}, "retention.decisions.max_count"),
        ({"quarantine": {"maxage": "1d"}}, "retention.quarantine.maxage"),
        ({"gc": {"interval": "6y"}}, "retention.gc.interval"),
        ({"gc": {"min_age": True}}, "retention.gc.min_age"),
        ({"blobs": {}}, "retention.blobs"),
        ("forever", "retention"),
    ],
)
def test_a_bad_value_names_the_key(tmp_path: Path, retention: object, key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_config(tmp_path, retention=retention)
    assert f": {key}: " in str(caught.value), caught.value


def test_pullguard_gc_says_what_it_would_remove_then_removes_it(tmp_path: Path) -> None:
    config = write_config(tmp_path, retention={"gc": {"min_age": 0}})
    first = run(tmp_path, "gc", "--config", str(config))
    assert first.returncode == 0, first.stderr
    assert "blobs: removed 0 (0 B)" in first.stdout
    data = b"left behind by an admission that failed"
    digest = hashlib.sha256(data).hexdigest()
    orphan = tmp_path / "state" / "admitted" / "blobs" / "sha256" / digest
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(data)
    old = time.time() - 60
    os.utime(orphan, (old, old))

    dry = run(tmp_path, "gc", "--dry-run", "-v", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert f"blobs: would remove 1 ({len(data)} B)" in dry.stdout
    assert f"  blob sha256:{digest} {len(data)}" in dry.stdout
    assert orphan.exists()

    done = run(tmp_path, "gc", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["blobs"]["removed"] == 1 and report["blobs"]["removed_bytes"] == len(data)
    assert report["decisions"]["removed"] == 0 and not report["dry_run"]
    assert not orphan.exists()
