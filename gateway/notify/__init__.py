"""Notifications: one signed JSON event per deny, quarantine, release, revoke and moved tag.

- :mod:`.events`: the event schema, built from a decision's report (pure);
- :mod:`.signing`: the HMAC-SHA256 signature over the exact body bytes, and
  how a receiver verifies it;
- :mod:`pullguard.gateway.decisions.notifications`: the persistent queue, a
  table of the decision database, written in the verdict's own transaction;
- :mod:`.sender`: the gateway's background task that delivers the queue
  (backoff with jitter, bounded attempts, one replica per event).

A pull never waits for a receiver: the pull path only inserts rows.
This package's ``__init__`` imports nothing, so that the decision tables
can use :mod:`.events` without importing the sender.
"""
