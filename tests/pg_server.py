"""pytest fixtures for a throwaway PostgreSQL cluster (see ``ess_tui.testing.pg_cluster``).

Import them into a test module: ``from pg_server import pg_cluster, pg_url  # noqa: F401``
(kept out of tests/conftest.py on purpose). Without the server binaries the tests skip with one
line saying how to install them, except under ``CI=true`` where a missing server is a failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ess_tui.testing.pg_cluster import (  # noqa: F401 - re-exported for the tests
    INSTALL_HINT,
    PASSWORD,
    PASSWORD_ENV,
    PGCluster,
    find_bindir,
)


def require_server() -> str:
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(INSTALL_HINT + " (CI=true: a missing server is a failure)")
        pytest.skip(INSTALL_HINT)
    return bindir


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PGCluster]:
    bindir = require_server()
    os.environ[PASSWORD_ENV] = PASSWORD
    cluster = PGCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PGCluster) -> str:
    """A fresh, empty database on the session's cluster."""
    return pg_cluster.new_database()


@pytest.fixture
def own_cluster() -> Iterator[PGCluster]:
    """A cluster of this test's own, for tests that kill the server."""
    bindir = require_server()
    os.environ[PASSWORD_ENV] = PASSWORD
    cluster = PGCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
