"""structlog events, emitted only when the application has configured structlog.

outlay never configures logging. An unconfigured structlog prints every event to stdout, which
is the wrong default for a library on a hot path, so events are emitted only once
``structlog.is_configured()`` is true. Event names are namespaced (``outlay.budget.reserved``)
and fields are flat.
"""

from __future__ import annotations

from typing import Any

import structlog

_logger = structlog.get_logger("outlay")

enabled = structlog.is_configured


def emit(event: str, **fields: Any) -> None:
    """Emit ``event`` at info level if the application configured structlog."""
    if structlog.is_configured():
        _logger.info(event, **fields)


def warn(event: str, **fields: Any) -> None:
    """Emit ``event`` at warning level if the application configured structlog."""
    if structlog.is_configured():
        _logger.warning(event, **fields)
