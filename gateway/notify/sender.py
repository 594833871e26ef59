"""The gateway's background task that delivers queued events.

The queue is a table of the decision database (gateway/decisions/notifications.py).

Each delivery is one POST of the event's exact body bytes, signed when its
subscription has a secret (:mod:`.signing`), with a timeout for the whole
exchange, redirects not followed, and at most :data:`MAX_ANSWER` bytes of
the answer read. A 2xx answer delivers it; anything else (another status, a
refused connection, a timeout) is retried after an exponential backoff with
jitter, until the subscription's ``max_attempts``: then it is marked dead
and logged. Pulls never wait for any of it: they only inserted the rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
from collections.abc import Iterator

import aiohttp
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pullguard.gateway.decisions import DecisionLog
from pullguard.gateway.decisions.notifications import Delivery, Outbox
from pullguard.gateway.notify.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from pullguard.services.runtime.config import Config
from pullguard.services.runtime.config.notifications import Subscription

log = logging.getLogger("pullguard.notify")

#: Bytes of a receiver's answer read at most (kept for the log when it refuses).
MAX_ANSWER = 4096
#: Seconds between retries at most, whatever the backoff doubled to.
MAX_BACKOFF = 600.0
#: Deliveries claimed (and sent concurrently) at once.
BATCH = 16
USER_AGENT = "pullguard-notify/1"


class NotifyMetrics:
    """``pullguard_notifications_total{event, result}``: delivered, failed, dead, dropped."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry
        self.sent = Counter(
            "pullguard_notifications",
            "Notification deliveries by event and result: delivered, failed (to be retried),"
            " dead (attempts exhausted) and dropped (queue full).",
            ("event", "result"),
            registry=registry,
        )


class QueueSizes(Collector):
    """``pullguard_notifications_queued{state}``: pending and dead deliveries, read at scrape."""

    def __init__(self, decisions: DecisionLog) -> None:
        self._decisions = decisions

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self._decisions.notification_counts()
        gauge = GaugeMetricFamily(
            "pullguard_notifications_queued",
            "Notification deliveries in the queue: pending (to be sent) and dead (given up).",
            labels=("state",),
        )
        for state in ("pending", "dead"):
            gauge.add_metric((state,), counts.get(state, 0))
        yield gauge


class NotificationSender:
    """Delivers the queue until stopped; several replicas may run one each on one database."""

    def __init__(
        self,
        decisions: DecisionLog,
        subscriptions: tuple[Subscription, ...],
        metrics: NotifyMetrics | None = None,
        *,
        poll: float = 1.0,
    ) -> None:
        self.decisions = decisions
        self.subscriptions = {sub.url: sub for sub in subscriptions}
        self.metrics = metrics if metrics is not None else NotifyMetrics()
        self.poll = poll
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="pullguard-notify")

    async def stop(self) -> None:
        """Stop sending; a delivery cut short is retried once its lease ends."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def wake(self) -> None:
        """An event was queued: look now (safe from any thread)."""
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake.set)

    def dropped(self, kind: str) -> None:
        self.metrics.sent.labels(kind, "dropped").inc()

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=BATCH)
        async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
            while True:
                try:
                    sent = await self.send_due(session)
                except Exception:  # noqa: BLE001 - a database hiccup must not end the sender
                    log.exception("notifications: the queue could not be read; trying again")
                    sent = 0
                if sent:
                    continue
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll)

    async def send_due(self, session: aiohttp.ClientSession) -> int:
        """Claim the due deliveries and send them; return how many were claimed."""
        lease = 2 * max((s.timeout for s in self.subscriptions.values()), default=10.0) + 30
        claimed = self.decisions.claim_notifications(time.time(), lease, BATCH)
        if claimed:
            await asyncio.gather(*(self._deliver(session, d) for d in claimed))
        return len(claimed)

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> None:
        sub = self.subscriptions.get(delivery.url)
        if sub is None:
            self._settle(delivery, None, "its URL is no longer in notifications:", dead=True)
            return
        error = await post(session, sub, delivery)
        self._settle(delivery, sub, error, dead=delivery.attempts >= sub.max_attempts)

    def _settle(
        self, delivery: Delivery, sub: Subscription | None, error: str | None, *, dead: bool
    ) -> None:
        shown = sub.shown if sub is not None else "a removed URL"
        if error is None:
            self.decisions.notification_delivered(delivery)
            self.metrics.sent.labels(delivery.kind, "delivered").inc()
            log.info(
                "notification %s (%s) delivered to %s", delivery.event_id, delivery.kind, shown
            )
            return
        if dead or sub is None:
            self.decisions.notification_failed(delivery, error, None)
            self.metrics.sent.labels(delivery.kind, "dead").inc()
            log.error(
                "notification %s (%s) to %s is dead after %d attempts: %s",
                delivery.event_id,
                delivery.kind,
                shown,
                delivery.attempts,
                error,
            )
            return
        delay = backoff(sub.backoff, delivery.attempts)
        self.decisions.notification_failed(delivery, error, time.time() + delay)
        self.metrics.sent.labels(delivery.kind, "failed").inc()
        log.warning(
            "notification %s (%s) to %s failed (attempt %d of %d, next in %.1fs): %s",
            delivery.event_id,
            delivery.kind,
            shown,
            delivery.attempts,
            sub.max_attempts,
            delay,
            error,
        )


async def post(session: aiohttp.ClientSession, sub: Subscription, delivery: Delivery) -> str | None:
    """POST one delivery; None when the receiver took it (2xx), else what went wrong."""
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Pullguard-Event": delivery.kind,
        "X-Pullguard-Delivery": delivery.event_id,
        TIMESTAMP_HEADER: str(timestamp),
    }
    if sub.secret is not None:
        headers[SIGNATURE_HEADER] = sign(sub.secret, timestamp, delivery.body)
    try:
        async with session.post(
            sub.url,
            data=delivery.body,
            headers=headers,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=sub.timeout),
        ) as response:
            answer = await response.content.read(MAX_ANSWER)
            status = response.status
    except TimeoutError:
        return f"no answer within {sub.timeout}s"
    except (aiohttp.ClientError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status}: redirects are not followed"
    text = answer.decode("utf-8", "replace").strip()
    return f"HTTP {status}: {text[:200]}" if text else f"HTTP {status}"


def backoff(initial: float, attempts: int) -> float:
    """Seconds before the next try: doubled per attempt, at most MAX_BACKOFF, minus jitter."""
    delay = min(MAX_BACKOFF, initial * 2 ** min(attempts - 1, 30))
    # Jitter spreads the retries of many events (and replicas) over time: not a secret.
    return float(delay * random.uniform(0.5, 1.0))  # noqa: S311


def replica_name(config: Config) -> str:
    return config.replica_id or socket.gethostname()


def outbox_for(config: Config) -> Outbox | None:
    """The queue's subscriptions for ``config`` (None without ``notifications:``)."""
    if not config.notifications:
        return None
    return Outbox(config.notifications, replica_name(config))


def start_sender(
    config: Config, decisions: DecisionLog, registry: CollectorRegistry | None
) -> NotificationSender | None:
    """Start delivering (None without ``notifications:``); queued events wake it at once."""
    if not config.notifications or decisions.outbox is None:
        return None
    sender = NotificationSender(decisions, config.notifications, NotifyMetrics(registry))
    if registry is not None:
        registry.register(QueueSizes(decisions))
    decisions.outbox.on_queued = sender.wake
    decisions.outbox.on_dropped = sender.dropped
    sender.start()
    return sender
