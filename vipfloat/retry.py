"""Retrying transient failures under a deadline.

The first attempt runs without tenacity: importing it costs ~70 ms, and on the
hook's usual path (lock free, interface up) nothing needs retrying. Only when a
TransientError happens is tenacity brought in, and it retries until the deadline,
which callers keep far inside Sentinel's 60 s kill.
"""

from __future__ import annotations

import logging
from typing import Callable, TypeVar

from .errors import TransientError

log = logging.getLogger(__name__)
T = TypeVar("T")


def until_deadline(fn: Callable[[], T], deadline: float, what: str,
                   max_wait: float = 0.5) -> T:
    """Call ``fn``; on TransientError retry with backoff for ``deadline`` seconds,
    then re-raise the last error."""
    try:
        return fn()
    except TransientError as exc:
        log.debug("%s: %s; retrying for up to %.1f s", what, exc, deadline)
    from tenacity import (Retrying, retry_if_exception_type, stop_after_delay,
                          wait_exponential)
    retrying = Retrying(
        stop=stop_after_delay(deadline),
        wait=wait_exponential(multiplier=0.005, max=max_wait),
        retry=retry_if_exception_type(TransientError),
        reraise=True,
    )
    return retrying(fn)
