"""What the gateway tells its operator: metrics, the decision line, the access line.

- :class:`PullObserver` is what the pipeline calls around each pull
  (:meth:`PullObserver.pull_started`, then :meth:`PullWatch.finished` with the
  final report, or :meth:`PullWatch.abandoned`): it counts pulls by outcome
  and deciding layer, findings by code, step and pull latencies and pulls in
  flight; writes one decision line (logger ``pullguard.decision``); and marks
  the pull's span (outcome, finding codes, an error status unless allowed).
- :class:`AccessLog` writes one line per front-door request (logger
  ``pullguard.access``) and counts requests and bytes served.
- :class:`Requester` (client address and user) is set per front-door request
  by :func:`requester_context`; pulls started by that request see it through a
  context variable, so the decision line names who asked (a pull shared by
  concurrent requests names the first).
- :class:`StoreSizes` reports the quarantine and admitted-store sizes at
  scrape time.

Labels are bounded (layers, steps, outcomes, finding codes, HTTP methods and
statuses); references, digests and clients go to log lines only.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from opentelemetry.trace import Span, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pullguard.gateway.report import Report
from pullguard.gateway.syntax import syntax_status
from pullguard.services.runtime.logs import REDACTED, fields
from pullguard.services.runtime.metrics import SECONDS_BUCKETS, bounded
from pullguard.services.runtime.telemetry import annotate_verdict

decision_log = logging.getLogger("pullguard.decision")
access_log = logging.getLogger("pullguard.access")

#: Query parameters of the pull API whose values are logged; others are redacted.
LOGGED_QUERY = frozenset({"n", "last"})
MAX_LOGGED_PATH = 512
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


@dataclass
class Requester:
    """Who sent a front-door request: the peer's address and, once logged in, the user."""

    address: str = ""
    user: str = ""


_REQUESTER: contextvars.ContextVar[Requester | None] = contextvars.ContextVar(
    "pullguard_requester", default=None
)
REQUESTER_KEY = web.RequestKey("pullguard_requester", Requester)


def current_requester() -> Requester:
    return _REQUESTER.get() or Requester()


@web.middleware
async def requester_context(
    request: web.Request, handler: Callable[[web.Request], Any]
) -> web.StreamResponse:
    """Note who asked, for the access line and for the decisions this request starts."""
    requester = Requester(address=request.remote or "")
    request[REQUESTER_KEY] = requester
    token = _REQUESTER.set(requester)
    try:
        response: web.StreamResponse = await handler(request)
        return response
    finally:
        _REQUESTER.reset(token)


def set_user(request: web.Request, user: str) -> None:
    """Name the logged-in user of ``request`` (the front door's login calls this)."""
    requester = request.get(REQUESTER_KEY)
    if requester is not None:
        requester.user = user


class GatewayMetrics:
    """The gateway's metrics, in ``registry`` (one per gateway)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self.pulls = Counter(
            "pullguard_pulls",
            "Pulls finished, by kind (pull, check, release, reevaluate), outcome (allowed,"
            " denied, outage) and the layer that decided ('none' when allowed).",
            ("kind", "outcome", "layer"),
            registry=reg,
        )
        self.findings = Counter(
            "pullguard_findings",
            "Findings in finished pulls' reports, by layer, code and severity.",
            ("layer", "code", "severity"),
            registry=reg,
        )
        self.pull_seconds = Histogram(
            "pullguard_pull_duration_seconds",
            "Time from the start of a pull to its decision.",
            ("kind", "outcome"),
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self.step_seconds = Histogram(
            "pullguard_layer_step_duration_seconds",
            "Time each layer step of a pull took, as the gateway saw it.",
            ("layer", "step"),
            buckets=SECONDS_BUCKETS,
            registry=reg,
        )
        self.in_flight = Gauge(
            "pullguard_pulls_in_flight", "Pulls being decided now.", registry=reg
        )
        self.requests = Counter(
            "pullguard_frontdoor_requests",
            "Front-door HTTP requests answered, by method and status.",
            ("method", "status"),
            registry=reg,
        )
        self.served = Counter(
            "pullguard_served_bytes",
            "Bytes the front door sent to clients (headers included), by what was asked"
            " (manifest, blob, other).",
            ("kind",),
            registry=reg,
        )


class PullObserver:
    """The pipeline's one hook for metrics, the decision line and the pull span."""

    def __init__(self, metrics: GatewayMetrics | None = None) -> None:
        self.metrics = metrics if metrics is not None else GatewayMetrics()

    def pull_started(self, kind: str) -> PullWatch:
        self.metrics.in_flight.inc()
        return PullWatch(self, kind)

    def record(self, report: Report, kind: str, seconds: float) -> None:
        """Count a finished pull and write its decision line."""
        metrics = self.metrics
        outcome = report.outcome
        layer = deciding_layer(report)
        metrics.pulls.labels(kind, outcome, layer).inc()
        metrics.pull_seconds.labels(kind, outcome).observe(seconds)
        for step in report.steps:
            step_layer = bounded(step.layer)
            metrics.step_seconds.labels(step_layer, step_label(step.step)).observe(
                step.duration_ms / 1000
            )
            for finding in step.findings:
                metrics.findings.labels(
                    step_layer, bounded(str(finding["code"])), bounded(str(finding["severity"]))
                ).inc()
        log_decision(report, kind, seconds)


class PullWatch:
    """One pull being watched: counted in flight until finished or abandoned."""

    def __init__(self, observer: PullObserver, kind: str) -> None:
        self._observer = observer
        self._kind = kind
        self._started = time.monotonic()
        self._open = True

    def finished(self, report: Report, span: Span | None = None) -> None:
        """The pull's decision is final: count it, log it, mark its span."""
        if not self._close():
            return
        if span is not None:
            annotate_pull_span(span, report)
        self._observer.record(report, self._kind, time.monotonic() - self._started)

    def abandoned(self) -> None:
        """The pull was cancelled before a decision: only no longer in flight."""
        self._close()

    def _close(self) -> bool:
        if not self._open:
            return False
        self._open = False
        self._observer.metrics.in_flight.dec()
        return True


def pull_kind(report: Report, admit: bool) -> str:
    if report.release is not None:
        return "release"
    if report.reevaluation is not None:
        return "reevaluate"
    return "pull" if admit else "check"


def deciding_layer(report: Report) -> str:
    """The layer that denied, the layer whose outage stopped the pull, or 'none'."""
    if report.outage:
        return bounded(report.outage.get("layer", ""), "unknown")
    if report.outcome == "denied":
        return bounded(report.denied_by, "unknown")
    return "none"


def step_label(step: str) -> str:
    """A step's name without what it looked at (``attestations sha256:...`` -> ``attestations``)."""
    words = []
    for word in step.split():
        if ":" in word or "@" in word or "/" in word:
            break
        words.append(word)
    return bounded("_".join(words) or "unnamed")


def finding_codes(report: Report) -> list[str]:
    """The codes of what denied the pull (none when allowed)."""
    if report.outcome != "denied":
        return []
    return sorted({str(f["code"]) for f in report.denial_findings()})


def annotate_pull_span(span: Span, report: Report) -> None:
    """Outcome and finding codes on the pull's span; an error status unless allowed."""
    span.set_attribute("pullguard.decision", report.decision)
    if report.denied_by:
        span.set_attribute("pullguard.denied_by", report.denied_by)
    annotate_verdict(span, report.outcome, finding_codes(report))
    if report.outcome != "allowed":
        span.set_status(Status(StatusCode.ERROR, f"{report.outcome}: {report.reason}"[:200]))


def log_decision(report: Report, kind: str, seconds: float) -> None:
    """One line per decision: who asked for what, and what was decided by whom."""
    requester = current_requester()
    codes = finding_codes(report)
    layer = deciding_layer(report)
    duration_ms = round(seconds * 1000, 1)
    values = {
        "event": "decision",
        "decision": report.decision_id,
        "kind": kind,
        "outcome": report.outcome,
        "layer": layer,
        "reference": report.reference_text,
        "digest": report.digest,
        "findings": codes,
        "client": requester.address,
        "user": requester.user,
        "duration_ms": duration_ms,
    }
    text = (
        f"decision {report.decision_id or '-'} {kind} {report.outcome}"
        f" layer={layer} reference={report.reference_text} digest={report.digest or '-'}"
        f" findings={','.join(codes) or '-'} client={requester.address or '-'}"
        f" user={requester.user or '-'} duration_ms={duration_ms}"
    )
    # A refusal for the request's syntax is counted, not recorded: at debug, so
    # a flood of malformed names does not flood the log either.
    syntax = report.denied_by == "analysis" and syntax_status(codes) is not None
    level = logging.DEBUG if syntax else logging.INFO
    decision_log.log(level, "%s", text, extra=fields(**values))


def logged_path(request: BaseRequest) -> str:
    """The request's path as sent, with every query value but the pull API's own redacted."""
    raw = request.raw_path
    path, _, query = raw.partition("?")
    if query:
        kept = []
        for part in query.split("&")[:20]:
            name, equals, _value = part.partition("=")
            kept.append(part if name in LOGGED_QUERY or not equals else f"{name}={REDACTED}")
        path = f"{path}?{'&'.join(kept)}"
    return path[:MAX_LOGGED_PATH]


def _request_kind(path: str) -> str:
    if "/blobs/" in path:
        return "blob"
    if "/manifests/" in path:
        return "manifest"
    return "other"


class AccessLog(AbstractAccessLogger):
    """aiohttp's access logger for the front door: one line per request, after it is sent.

    aiohttp makes one per connection from the class alone, so the observer
    counting requests and bytes is bound to a subclass (:func:`access_log_class`).
    The request may be one aiohttp could not route (an unparsable request
    answered by the door itself): only its method, path and peer are read.
    """

    observer: PullObserver | None = None

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        requester = request.get(REQUESTER_KEY) or Requester(address=request.remote or "")
        path = logged_path(request)
        method = request.method if request.method in METHODS else "OTHER"
        sent = response.body_length
        observer = self.observer
        if observer is not None:
            observer.metrics.requests.labels(method, str(response.status)).inc()
            observer.metrics.served.labels(_request_kind(request.path)).inc(sent)
        duration_ms = round(time * 1000, 1)
        text = (
            f"{method} {path} {response.status} {sent}B {duration_ms}ms"
            f" client={requester.address or '-'} user={requester.user or '-'}"
        )
        self.logger.info(
            "%s",
            text,
            extra=fields(
                event="access",
                method=method,
                path=path,
                status=response.status,
                bytes=sent,
                duration_ms=duration_ms,
                client=requester.address,
                user=requester.user,
            ),
        )


def access_log_class(observer: PullObserver) -> type[AccessLog]:
    """An :class:`AccessLog` that counts into ``observer``'s metrics."""
    return type("ObservedAccessLog", (AccessLog,), {"observer": observer})


class StoreSizes(Collector):
    """Quarantine entries, admitted images and the admitted store's bytes, read at scrape."""

    def __init__(
        self,
        quarantine_entries: Callable[[], int],
        admitted_images: Callable[[], int],
        admitted_blobs: Path,
    ) -> None:
        self._quarantine_entries = quarantine_entries
        self._admitted_images = admitted_images
        self._admitted_blobs = admitted_blobs

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(
            "pullguard_quarantine_entries",
            "Open quarantine entries.",
            value=self._quarantine_entries(),
        )
        yield GaugeMetricFamily(
            "pullguard_admitted_images",
            "Admitted images (repository and manifest digest).",
            value=self._admitted_images(),
        )
        yield GaugeMetricFamily(
            "pullguard_admitted_bytes",
            "Bytes of the admitted store's blobs and manifests.",
            value=directory_bytes(self._admitted_blobs),
        )


class LayerHealth(Collector):
    """Whether each layer answered its last health check with SERVING, read at scrape.

    The gateway checks every layer from its start (see
    ``LayerClients.watch_health``): a 0 means pulls that need that layer are
    refused as an outage, before any client tries one.
    """

    def __init__(self, serving: Callable[[], Mapping[str, bool]]) -> None:
        self._serving = serving

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "pullguard_layer_serving",
            "1 when the layer's last health check answered SERVING; 0 when it answered"
            " otherwise, failed, or has not answered yet.",
            labels=("layer",),
        )
        for layer, up in sorted(self._serving().items()):
            family.add_metric((layer,), 1.0 if up else 0.0)
        yield family


def directory_bytes(root: Path, depth: int = 2) -> int:
    """The size of the regular files under ``root``, ``depth`` levels at most."""
    total = 0
    try:
        entries = list(os.scandir(root))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_file(follow_symlinks=False):
                total += entry.stat(follow_symlinks=False).st_size
            elif depth > 1 and entry.is_dir(follow_symlinks=False):
                total += directory_bytes(Path(entry.path), depth - 1)
        except OSError:
            continue
    return total
