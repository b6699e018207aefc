"""Gunicorn settings for the web service.

    gunicorn --config deploy/gunicorn.conf.py "web:create_app()"

Every knob can be overridden from the environment (GUNICORN_*), so compose files and
Kubernetes manifests tune a replica without editing this file.

Each worker process holds the query embedder and the loaded index segments, so memory,
not CPU, bounds `workers`: scale with more replicas (see docs/operations.md, "Sizing").
"""

from __future__ import annotations

import functools
import os
import re
import shutil
from pathlib import Path

from gunicorn.glogging import Logger


def _int_env(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = _int_env("GUNICORN_WORKERS", 2)
worker_class = "gthread"
threads = _int_env("GUNICORN_THREADS", 4)
# A CPU embedding of an uploaded query image takes seconds, not milliseconds.
timeout = _int_env("GUNICORN_TIMEOUT_S", 120)
graceful_timeout = _int_env("GUNICORN_GRACEFUL_TIMEOUT_S", 30)
keepalive = 5
# Recycling a worker reloads the model and the index: off unless asked for.
max_requests = _int_env("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = _int_env("GUNICORN_MAX_REQUESTS_JITTER", 50)
# Loading the app once in the master shares the model's pages between workers.
preload_app = os.environ.get("GUNICORN_PRELOAD", "0").lower() in {"1", "true", "yes"}
# The heartbeat file must live on a writable, fast file system (root may be read-only).
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None
# Trust X-Forwarded-* only from the ingress / reverse proxy addresses given here.
forwarded_allow_ips = os.environ.get("GUNICORN_FORWARDED_ALLOW_IPS", "127.0.0.1")

accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("MAMMOSEARCH_LOG_LEVEL", "INFO").lower()
# The path only (%(U)s), never the query string: search filters may carry patient ids.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'


_PLAIN_ATOMS = frozenset("hmUsbM")
"""Access-log atoms MammosearchLogger computes itself; a format naming any other gets
gunicorn's full set."""


@functools.lru_cache(maxsize=4)
def _atoms_named(log_format: str) -> frozenset[str]:
    return frozenset(re.findall(r"%\(([^)]+)\)s", log_format))


class MammosearchLogger(Logger):
    """Gunicorn's error and access records through mammosearch.logs, like the app's own.

    One root handler for every record of the process: JSON lines under MAMMOSEARCH_LOG_JSON
    and patient identifiers scrubbed. Gunicorn's own handlers are dropped and its two
    loggers propagate to root (the workers inherit this set-up when they fork).
    """

    def setup(self, cfg):  # type: ignore[no-untyped-def]
        super().setup(cfg)
        from mammosearch.logs import configure_logging

        configure_logging()
        for gunicorn_log in (self.error_log, self.access_log):
            for handler in list(gunicorn_log.handlers):
                gunicorn_log.removeHandler(handler)
            gunicorn_log.propagate = True

    def atoms(self, resp, req, environ, request_time):  # type: ignore[no-untyped-def]
        """Only the atoms the access-log format names, where it names only _PLAIN_ATOMS (as
        deployed): gunicorn's own builds about sixty (every header and environ key, the time
        formatted, the Authorization header parsed) for a line that prints six, 1.5% of the
        CPU of a search by id."""
        if not _atoms_named(self.cfg.access_log_format) <= _PLAIN_ATOMS:
            return super().atoms(resp, req, environ, request_time)
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        sent = getattr(resp, "sent", None)
        return {
            "h": environ.get("REMOTE_ADDR", "-"),
            "m": environ.get("REQUEST_METHOD"),
            "U": environ.get("PATH_INFO"),
            "s": status,
            "b": "-" if sent is None else str(sent),
            "M": request_time.seconds * 1000 + request_time.microseconds // 1000,
        }


logger_class = MammosearchLogger


def on_starting(server) -> None:  # type: ignore[no-untyped-def]
    """Start with an empty Prometheus multiprocess directory (stale files double-count)."""
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir:
        shutil.rmtree(metrics_dir, ignore_errors=True)
        Path(metrics_dir).mkdir(parents=True, exist_ok=True)


def child_exit(server, worker) -> None:  # type: ignore[no-untyped-def]
    """Drop a dead worker's live gauges from /metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


# gunicorn's control socket defaults to ~/.gunicorn/gunicorn.ctl: shared between servers on
# one host and unwritable on a read-only root filesystem. Nothing here uses it.
control_socket_disable = os.environ.get("GUNICORN_CONTROL_SOCKET_DISABLE", "1") != "0"
