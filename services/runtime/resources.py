"""Process resources every pullguard process that serves pulls needs."""

from __future__ import annotations

import resource
import sys

#: Below this many open files, a few hundred concurrent pulls fail.
LOW_OPEN_FILE_LIMIT = 4096
#: Linux's default fs.nr_open: the most a soft limit can be when the hard one is unlimited.
_NR_OPEN = 1 << 20


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit; children inherit it.

    Returns (soft, hard) as they are afterwards and warns when the hard limit
    is low: every pull holds sockets and files in several processes at once.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _NR_OPEN if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            print(
                f"pullguard: cannot raise the open-file limit from {soft} to {wanted}: {exc}",
                file=sys.stderr,
                flush=True,
            )
        else:
            print(f"pullguard: open-file limit raised from {soft} to {wanted}", flush=True)
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if hard != resource.RLIM_INFINITY and hard < LOW_OPEN_FILE_LIMIT:
        print(
            f"pullguard: warning: the hard open-file limit is {hard} (below"
            f" {LOW_OPEN_FILE_LIMIT}); concurrent pulls may fail. Raise it (ulimit -Hn,"
            " systemd LimitNOFILE=) before starting pullguard",
            file=sys.stderr,
            flush=True,
        )
    return soft, hard
