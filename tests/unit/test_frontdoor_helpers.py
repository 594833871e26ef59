"""The front door's small helpers: the log's repeat limiter, the syntax counter,
the scrubber of client-facing text and the ``Warning`` header."""

from __future__ import annotations

import logging

from pullguard.gateway.public import WARNING_MAX, Scrubber, warning_header
from pullguard.gateway.ratelog import RepeatFilter
from pullguard.gateway.syntax import SyntaxRefusals, syntax_status


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord("pullguard.x", logging.ERROR, __file__, 1, message, args, None)


def test_repeated_identical_messages_are_limited_and_counted() -> None:
    clock = Clock()
    limiter = RepeatFilter(burst=3, window=60.0, clock=clock)
    passed = [limiter.filter(_record("accept failed: %s", "EMFILE")) for _ in range(1000)]
    assert passed.count(True) == 3
    # Another message is not held back by the first.
    assert limiter.filter(_record("something else"))
    clock.now += 61
    record = _record("accept failed: %s", "EMFILE")
    assert limiter.filter(record)
    assert "997 identical messages suppressed" in record.getMessage()


def test_the_limiter_on_a_handler_bounds_what_is_written(tmp_path) -> None:
    logger = logging.getLogger("pullguard.test.ratelog")
    logger.propagate = False
    handler = logging.FileHandler(tmp_path / "log")
    handler.addFilter(RepeatFilter(burst=5, window=3600))
    logger.addHandler(handler)
    try:
        for _ in range(10000):
            logger.error("socket.accept() out of system resource")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert (tmp_path / "log").read_text().count("out of system resource") == 5


def test_syntax_status_maps_only_pure_syntax_refusals() -> None:
    assert syntax_status(["analysis.invalid_reference"]) == (404, "MANIFEST_UNKNOWN")
    assert syntax_status(["analysis.invalid_digest"]) == (400, "DIGEST_INVALID")
    assert syntax_status(["analysis.invalid_name"]) == (400, "NAME_INVALID")
    assert syntax_status(["analysis.invalid_name", "analysis.no_rule"]) is None
    assert syntax_status(["analysis.denied_repository"]) is None
    assert syntax_status([]) is None


def test_syntax_refusals_are_counted_and_reported_periodically(caplog) -> None:
    counter = SyntaxRefusals(interval=3600)
    with caplog.at_level(logging.WARNING, logger="pullguard.gateway"):
        for _ in range(500):
            counter.count("analysis.invalid_reference")
    assert counter.total["analysis.invalid_reference"] == 500
    assert not caplog.records
    counter.interval = 0
    with caplog.at_level(logging.WARNING, logger="pullguard.gateway"):
        counter.count("analysis.invalid_name")
    assert "analysis.invalid_reference 500" in caplog.text


def test_scrubber_removes_addresses_and_upstream_hosts() -> None:
    scrub = Scrubber(["https://registry.internal.example:5000", "http://10.0.0.7"])
    text = scrub.text(
        "upstream: lab: GET http://127.0.0.1:5001/v2/app/manifests/v1: connection refused"
        " to 10.2.3.4:443, [fd00::1]:5000, registry.internal.example and localhost:5000"
    )
    for leak in ("127.0.0.1", "5001", "10.2.3.4", "fd00::1", "internal.example", "localhost"):
        assert leak not in text, text
    assert "upstream: lab:" in text
    assert scrub.data({"a": ["http://10.0.0.7/x"], "b": 3}) == {"a": ["<upstream>"], "b": 3}
    # Names and digests a client sent stay readable.
    kept = "lab/app:v1 sha256:" + "1" * 64
    assert scrub.text(kept) == kept


def test_scrubber_keeps_evidence_paths_and_takes_every_ipv6_form() -> None:
    scrub = Scrubber()
    # An index unit's refusal names the entry it followed: not an address.
    path = "manifests[0] > manifests[12]: child sha256:" + "2" * 64
    assert scrub.text(path) == path
    for address in ("[::1]", "[fd00::1]:5000", "[fe80::1%eth0]:443", "[::ffff:10.1.2.3]"):
        assert scrub.text(f"to {address} failed") == "to <address> failed", address


def test_warning_header_is_ascii_escaped_and_bounded() -> None:
    header = warning_header('analysis: tag "x\\y" \u043e\r\nInjected: 1' + "z" * 1000)
    assert header.startswith('299 - "pullguard: analysis: tag \\"x\\\\y\\" ?')
    assert header.isascii() and "\r" not in header and "\n" not in header
    assert header.endswith('..."')
    assert len(header) <= WARNING_MAX * 2 + 30
