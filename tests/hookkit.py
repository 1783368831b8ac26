"""Shorthands for the hook tests (the recording hook and the gated tool are outlay.testing)."""

from __future__ import annotations

from outlay import Skip, Terminate


def skip(reason: str = "no") -> Skip:
    return Skip(f"skipped: {reason}", reason)


def terminate(reason: str = "stop") -> Terminate:
    return Terminate(reason)
