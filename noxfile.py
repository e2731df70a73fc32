"""Sessions: `nox -s bench`, `nox -s tests`, `nox -s lint`, `nox -s soak`."""

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True


@nox.session
def bench(session: nox.Session) -> None:
    """Run the benchmark matrix; arguments go to `asyncbench run` (e.g. -- --quick)."""
    session.install("-e", ".")
    session.run("asyncbench", "run", *session.posargs)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite against real processes on loopback."""
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """Soak: 10 minutes of sleep at the highest default level on tornado-coroutine."""
    session.install("-e", ".[test]")
    session.run("pytest", "-m", "soak", "-s", "tests/measuring/test_soak.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Lint with ruff."""
    session.install("ruff")
    session.run("ruff", "check", ".")
