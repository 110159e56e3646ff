"""Developer sessions: `nox -s tests`, `nox -s lint`."""

import nox

nox.options.sessions = ["lint", "tests"]


@nox.session(python="3.11")
def tests(session):
    session.install("-e", ".[all,dev]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python="3.11")
def lint(session):
    session.install("ruff")
    session.run("ruff", "check", "modelbuild", "tests", "benchmarks")
