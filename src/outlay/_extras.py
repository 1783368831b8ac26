"""The one message for an optional dependency that is not installed."""

from __future__ import annotations

__all__ = ("missing_extra",)


def missing_extra(module: str, package: str, extra: str) -> ModuleNotFoundError:
    """The error ``module`` raises when ``package`` is missing: what to install, and how."""
    error = ModuleNotFoundError(f"{module} needs the {package!r} package, which is not "
                                f"installed: pip install 'outlay[{extra}]'")
    error.name = package
    return error
