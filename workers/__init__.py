"""Celery app and tasks: thin wrappers that call the core (`mammosearch`)."""
