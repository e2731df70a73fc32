"""Shared fixtures: the harness's own backing services, started once per test session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asyncbench.services import Database, Upstream, throwaway_mariadb, upstream


@pytest.fixture(scope="session")
def mariadb() -> Iterator[Database]:
    """A private MariaDB on a free loopback port (never the system server)."""
    with throwaway_mariadb() as db:
        yield db


@pytest.fixture(scope="session")
def upstream_service() -> Iterator[Upstream]:
    """The slow upstream (``servers.upstream``) on a free loopback port."""
    with upstream() as service:
        yield service
