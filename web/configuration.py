"""Flask config from the product's Settings, `MAMMOSEARCH_FLASK_*` variables and overrides."""

from __future__ import annotations

import os
import secrets
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask, current_app
from werkzeug.middleware.proxy_fix import ProxyFix

from mammosearch.config import Settings, get_settings
from mammosearch.jobs.work_queue import WorkQueue
from workers.work_queue import work_queue_for


def init_app(app: Flask, overrides: dict[str, Any] | None) -> None:
    """Settings first, then the environment's MAMMOSEARCH_FLASK_*, then `overrides`.

    `overrides` may hold "SETTINGS" (a Settings object) to replace the environment's.
    """
    overrides = dict(overrides or {})
    base: Settings = overrides.pop("SETTINGS", None) or get_settings()
    app.config.update(
        SECRET_KEY=base.secret_key or stored_secret_key(base.data_dir),
        DATABASE_URL=base.database_url,
        DATA_DIR=str(base.data_dir),
        MAX_CONTENT_LENGTH=base.max_upload_bytes,
        CELERY_BROKER_URL=base.celery_broker_url,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        # MAMMOSEARCH_FLASK_SESSION_COOKIE_SECURE. False: the cookie is Secure exactly when
        # the request came over HTTPS (see web.security); True forces it on plain HTTP too.
        SESSION_COOKIE_SECURE=False,
        # Idle sessions end: the cookie's signature is refreshed on each request and refused
        # once older than this (web.auth also checks it, to say why).
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=base.session_idle_minutes),
        SESSION_REFRESH_EACH_REQUEST=True,
        RATELIMIT_STORAGE_URI=base.redis_url or "memory://",
        # Redis down: count in this process's memory rather than answer sign-in with a 500.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_STORAGE_OPTIONS={"socket_connect_timeout": 1, "socket_timeout": 1}
        if base.redis_url
        else {},
        RATELIMIT_HEADERS_ENABLED=True,
        LOGIN_RATE_LIMIT="10 per minute",
        THUMBNAIL_SIZE_PX=256,
        # MAMMOSEARCH_FLASK_PROXY_FIX_HOPS: reverse proxies in front of the app whose
        # X-Forwarded-For/-Proto/-Host are trusted (werkzeug's ProxyFix): 1 behind one TLS
        # proxy or ingress; 0 trusts none.
        PROXY_FIX_HOPS=0,
    )
    app.config.from_prefixed_env("MAMMOSEARCH_FLASK")
    app.config.update(overrides)
    app.extensions["mammosearch_settings"] = base.with_overrides(
        database_url=app.config["DATABASE_URL"],
        data_dir=Path(app.config["DATA_DIR"]),
        max_upload_bytes=int(app.config["MAX_CONTENT_LENGTH"]),
        celery_broker_url=app.config["CELERY_BROKER_URL"],
    )
    # The queue the core reports on (and would hand work to): Celery with a broker.
    app.extensions["mammosearch_work_queue"] = work_queue_for(
        app.extensions["mammosearch_settings"]
    )
    hops = int(app.config["PROXY_FIX_HOPS"])
    if hops:  # behind a reverse proxy: trust its X-Forwarded-* for addresses and scheme
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]


def stored_secret_key(data_dir: Path) -> str:
    """The embedded default's session key: random, made once, shared by every process.

    A fixed default key would let anyone who read the source forge session cookies; a key
    made per process would sign each gunicorn worker's users out of the others.
    """
    path = data_dir / "secret_key"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker made it first
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32))
    for _ in range(50):  # the creator may still be writing it
        key = path.read_text().strip()
        if key:
            return key
        time.sleep(0.02)
    raise RuntimeError(f"{path}: empty session key file; delete it to make a new one")


def settings() -> Settings:
    """The Settings of the running app (the environment's, with the app's overrides)."""
    running: Settings = current_app.extensions["mammosearch_settings"]
    return running


def work_queue() -> WorkQueue:
    """The running app's WorkQueue (chosen once, by init_app, from its settings)."""
    queue: WorkQueue = current_app.extensions["mammosearch_work_queue"]
    return queue
