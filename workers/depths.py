"""Tasks waiting per queue, asked of the broker through kombu (any transport, no key names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celery import Celery
from kombu import Connection
from kombu.exceptions import OperationalError

CONNECT_TIMEOUT_S = 2.0


def queue_depths(app: Celery, broker_url: str, queues: Sequence[str]) -> dict[str, Any]:
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
    try:
        with connection:
            # One try, no back-off: a status page must not hang on a dead broker.
            connection.ensure_connection(max_retries=0, timeout=CONNECT_TIMEOUT_S)
            depths = {queue: _waiting(connection, queue) for queue in queues}
    except (OperationalError, *connection.connection_errors) as exc:
        return {"mode": "broker", "queues": {}, "error": f"broker unreachable: {exc}"}
    return {"mode": "broker", "queues": depths}


def _waiting(connection: Connection, queue: str) -> int:
    with connection.channel() as channel:
        try:
            return channel.queue_declare(queue=queue, passive=True).message_count
        except connection.channel_errors:
            # Never declared, or (Redis) empty: kombu's Redis queue is a list, gone when empty.
            return 0
