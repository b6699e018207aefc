"""Redis locks keyed by the work's identity, so the same job never runs twice at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import redis

KEY_PREFIX = "mammosearch"


class LockBusy(RuntimeError):
    """Another process holds the lock for this work; try again later."""


@lru_cache(maxsize=4)
def redis_client(url: str) -> redis.Redis:
    """One client (and connection pool) per Redis URL per process."""
    return redis.Redis.from_url(url)


def index_lock_name(space_id: int) -> str:
    return f"{KEY_PREFIX}:lock:index-space:{space_id}"


@contextmanager
def work_lock(
    client: redis.Redis,
    name: str,
    ttl_s: float = 30.0,
    wait_s: float = 0.0,
) -> Iterator[None]:
    """Hold `name` for the duration of the block, or raise LockBusy.

    The lock expires after `ttl_s` unless renewed, so a SIGKILLed holder blocks others for at
    most `ttl_s`; a heartbeat thread renews it while the block runs, however long that is.
    """
    lock = client.lock(name, timeout=ttl_s, thread_local=False)
    if not lock.acquire(blocking=wait_s > 0, blocking_timeout=wait_s or None):
        raise LockBusy(f"{name}: held by another worker")
    stop = threading.Event()

    def _renew() -> None:
        while not stop.wait(ttl_s / 3):
            try:
                lock.reacquire()
            except redis.exceptions.LockError:
                return  # lost (expired and taken over); the holder finds out on release
            except redis.exceptions.ConnectionError:
                continue

    heartbeat = threading.Thread(target=_renew, name=f"renew {name}", daemon=True)
    heartbeat.start()
    try:
        yield
    finally:
        stop.set()
        heartbeat.join()
        try:
            lock.release()
        except redis.exceptions.LockError:
            pass  # already expired: nothing to release


def mark_once(client: redis.Redis, key: str, ttl_s: float) -> bool:
    """Set `key` unless present (SET NX EX); True when this call set it."""
    return bool(client.set(key, "1", nx=True, ex=max(1, int(ttl_s))))
