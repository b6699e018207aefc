"""Tasks waiting per queue, asked of the broker through kombu (any transport, no key names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

CONNECT_TIMEOUT_S = 2.0


def queue_depths(app: Celery, broker_url: str | None, queues: Sequence[str]) -> dict[str, Any]:
    """`{"mode": "broker", "queues": {name: waiting}}`; with `"error"` when the broker is down.

    A passive declare reports a queue's message count without creating it. Never raises:
    status is how one finds out the broker is unreachable.
    """
    connection = app.connection_for_read(
        broker_url,
        connect_timeout=CONNECT_TIMEOUT_S,
        transport_options={
            "socket_timeout": CONNECT_TIMEOUT_S,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
        },
    )
    unreachable: tuple[type[BaseException], ...] = (
        OperationalError,
        *connection.connection_errors,
    )
    try:
        with connection:
            # One try, no back-off: a status page must not hang on a dead broker.
            # (kombu takes a float timeout; kombu-stubs say int)
            connection.ensure_connection(max_retries=0, timeout=CONNECT_TIMEOUT_S)  # type: ignore[arg-type]
            depths = {queue: _waiting(connection, queue) for queue in queues}
    except unreachable as exc:
        return {"mode": "broker", "queues": {}, "error": f"broker unreachable: {exc}"}
    return {"mode": "broker", "queues": depths}


def _waiting(connection: Connection, queue: str) -> int:
    with connection.channel() as channel:
        try:
            # every transport's channel has queue_declare; kombu-stubs' StdChannel does not
            declared = channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]
            waiting: int = declared.message_count
            return waiting
        except connection.channel_errors:
            # Never declared, or (Redis) empty: kombu's Redis queue is a list, gone when empty.
            return 0
