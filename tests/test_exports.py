"""The public API is exactly what ``outlay.__all__`` lists, and importing it stays light."""

from __future__ import annotations

import subprocess
import sys

import outlay


def test_all_matches_public_names() -> None:
    public = {name for name in vars(outlay) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(outlay, name)).__name__ == "module"}
    assert set(outlay.__all__) == public - modules
    assert list(outlay.__all__) == sorted(outlay.__all__)
    assert len(set(outlay.__all__)) == len(outlay.__all__)


def test_import_outlay_loads_no_optional_driver() -> None:
    code = (
        "import sys, outlay; "
        "bad = [m for m in ('redis', 'sqlite3', 'psycopg', 'openai', 'anthropic', 'aiolimiter') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exceptions_share_one_root() -> None:
    for name in outlay.__all__:
        obj = getattr(outlay, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, outlay.OutlayError), name
