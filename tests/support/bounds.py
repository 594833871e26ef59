"""How long a test may wait for a limit to stop something that would otherwise hang.

Tests of limits (idle timeouts of 0.3 s, capped Retry-After, decompression caps)
check that the *limit* ended the exchange, not one of the slow safety nets
behind it: the 10 s throughput grace, the 30 s default idle timeout, a 30 s
stalled resolver, or an 86400 s Retry-After. Any bound well under those makes
the point; a tight one (2-3 s) only measured how loaded the machine was, and
failed on busy CI machines. Speed itself is measured by ``make bench``.
"""

#: Seconds: above any honest run under load, below the first fallback (10 s).
LIMIT_NOT_FALLBACK = 8.0
