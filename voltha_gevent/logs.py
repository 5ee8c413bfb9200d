"""structlog set-up, called once by the entry point; the library only calls ``get_logger()``.

``json`` gives one JSON object per line (production, log shippers); ``console`` gives
coloured key=value lines for people; ``auto`` picks console on a TTY and JSON otherwise.
"""

from __future__ import annotations

import logging
import sys

import structlog

from .supervision import add_instance_id


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Configure structlog (and the stdlib root logger, for libraries) for this process.

    Optional for an embedding application: without it the library logs through structlog's
    defaults (or whatever the application configured). ``fmt``: ``auto``, ``console`` or
    ``json``; ``level``: ``debug``, ``info``, ``warning`` or ``error``.
    """
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    numeric = logging.getLevelName(level.upper())
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_instance_id,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")
