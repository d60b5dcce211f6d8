"""Which write failures are about the data and which about the database.

A batch that fails with a *data* error will fail the same way every time: retrying it would
stop ingest for every cluster, so the caller isolates the message that causes it and
refuses that one. Anything else (a lost connection, a locked or read-only database, a
full disk, a timeout, and errors we cannot classify) is treated as the database being
unavailable: the batch is retried whole and nothing is acknowledged, so nothing is lost.
"""

from __future__ import annotations

import sqlite3

from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StatementError,
)

_DATA_SQLSTATE_CLASSES = ("22", "23", "54")
"""PostgreSQL: data exception (22: U+0000 in text or jsonb, a value out of range),
integrity constraint violation (23), program limit exceeded (54: an index row too large)."""

_PYTHON_DATA_ERRORS = (ValueError, TypeError, OverflowError, RecursionError, UnicodeError)
"""Raised while binding or serializing a value (sqlite3: an integer beyond 64 bits)."""


def is_data_error(exc: BaseException) -> bool:
    # sqlite3's own classes too: on SQLite the writer's hot statements go to the driver
    # directly (`app.store.driver`), so its errors arrive unwrapped.
    if isinstance(exc, DataError | IntegrityError | sqlite3.IntegrityError | sqlite3.DataError):
        return True
    if isinstance(exc, DBAPIError):
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        return isinstance(sqlstate, str) and sqlstate[:2] in _DATA_SQLSTATE_CLASSES
    if isinstance(exc, StatementError):
        return isinstance(exc.orig, _PYTHON_DATA_ERRORS)
    return isinstance(exc, _PYTHON_DATA_ERRORS)


_UNAVAILABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "55P03", "57014", "40001", "40P01")
"""PostgreSQL: connection exceptions (08), the server shutting down or terminating the
backend (57P0x), a lock or statement timeout (55P03, 57014), serialization and deadlock
failures (40001, 40P01): worth one retry, then a 503."""


def is_unavailable(exc: BaseException) -> bool:
    """The database could not answer now (a lost connection, a timeout, a lock): a reader
    may retry, and otherwise tells its client to come back (503), not that it failed (500)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or ""
        if isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES):
            return True
        return isinstance(exc, OperationalError | InterfaceError)
    return isinstance(exc, ConnectionError | TimeoutError | sqlite3.OperationalError)


def is_connection_lost(exc: BaseException) -> bool:
    """The connection died under the statement (a terminated backend, a failover): the same
    read on a fresh connection may well work. A lock or statement timeout is not retried:
    it would only double the wait."""
    if not isinstance(exc, DBAPIError):
        return isinstance(exc, ConnectionError)
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return exc.connection_invalidated or (
        isinstance(sqlstate, str) and sqlstate.startswith(("08", "57P01", "57P02", "57P03"))
    )
