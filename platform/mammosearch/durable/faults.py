"""Injected crash points, so tests can kill -9 a process at each step of a multi-step write.

`MAMMOSEARCH_FAULT_POINT=<name>` makes the process SIGKILL itself the first time it passes
`fault_point(<name>)`; unset (always, in production) a fault point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

FAULT_POINT_ENV = "MAMMOSEARCH_FAULT_POINT"


def fault_point(name: str) -> None:
    """Die here, as kill -9 would, when MAMMOSEARCH_FAULT_POINT names this point."""
    if os.environ.get(FAULT_POINT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
