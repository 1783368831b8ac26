"""The hook and adapter names are exported from ``outlay`` and listed in ``__all__``."""

from __future__ import annotations

import outlay
import outlay.adapters
import outlay.hooks


def test_every_hook_and_adapter_name_is_exported_from_outlay() -> None:
    for module in (outlay.hooks, outlay.adapters):
        for name in module.__all__:
            if name in ("CONTINUE", "BatchPolicy", "Cost", "CostFunction", "ErrorMode",
                        "ToolSource"):
                continue  # typing helpers, public in outlay.hooks only
            assert getattr(outlay, name) is getattr(module, name), name
            assert name in outlay.__all__, name


def test_all_lists_exactly_what_exists_and_is_sorted() -> None:
    for module in (outlay, outlay.hooks, outlay.adapters):
        assert list(module.__all__) == sorted(module.__all__)
        assert len(set(module.__all__)) == len(module.__all__)
        for name in module.__all__:
            assert hasattr(module, name), name
