"""Sessions: tests, lint, typecheck, examples, bench. Run ``nox -s tests`` (or ``nox -l``)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck", "examples"]
nox.options.reuse_existing_virtualenvs = True

EXAMPLES = sorted(str(p) for p in Path("examples").glob("*.py"))


@nox.session
def tests(session: nox.Session) -> None:
    """The whole test suite, as .ci/run runs it."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over everything."""
    session.install("ruff")
    session.run("ruff", "check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy strict over src, tests, benchmarks and examples."""
    session.install("-e", ".[test,lint,bench]")
    session.run("mypy")


@nox.session
def examples(session: nox.Session) -> None:
    """Run every example; any failure fails the session."""
    session.install("-e", ".")
    for example in EXAMPLES:
        session.run("python", example)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (opt-in; not part of the default sessions). Pass --quick for a smoke run."""
    session.install("-e", ".[test,bench]")  # the store and client benchmarks need the drivers
    for script in sorted(Path("benchmarks").glob("bench_*.py")):
        session.run("python", str(script), *session.posargs)
    for script in sorted(Path("benchmarks").glob("compare_*.py")):  # a fixed script: no --quick
        session.run("python", str(script))
