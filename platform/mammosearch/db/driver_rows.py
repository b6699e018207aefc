"""Hot read statements run on the driver's own cursor, past SQLAlchemy's execution layer.

A search by id reads two row sets per request (the API token with its user, the hits with
their patients and reports). Through `Connection.execute` each paid for the statement's
cache key, the compiled-cache lookup, an execution context and a result object: about half
of their CPU (145 of 290 us for the pair, measured on PostgreSQL). On PostgreSQL, psycopg
converts every column these statements read (integers, text, booleans, timestamps with time
zone) to what SQLAlchemy would return, so the rows are the driver's own tuples. Elsewhere
(SQLite returns timestamps as text) the statement takes SQLAlchemy's usual path.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Executable


def driver_rows(
    connection: Connection, statement: Executable, params: Mapping[str, Any]
) -> Sequence[Any]:
    """All rows of `statement` with `params`: tuples in its column order, whose fields are
    also read by column name, as SQLAlchemy's rows are.

    Errors are SQLAlchemy's, as from `execute`: a lost connection is invalidated (the pool
    replaces it) and raised as a DBAPIError naming the statement.
    """
    dialect = connection.dialect
    if dialect.name != "postgresql":
        return connection.execute(statement, params).all()
    sql, constants = _compiled(statement, dialect)
    bound = {**constants, **params}
    pooled = connection.connection
    cursor = pooled.cursor()
    try:
        cursor.execute(sql, bound)
        row_type = _row_type(tuple(column[0] for column in cursor.description))
        return [row_type._make(row) for row in cursor.fetchall()]
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, pooled, cursor)
        if lost:
            connection.invalidate(error)
        raise DBAPIError.instance(
            sql,
            bound,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=lost,
            dialect=dialect,
        ) from error
    finally:
        cursor.close()


@lru_cache(maxsize=32)
def _compiled(statement: Executable, dialect: Dialect) -> tuple[str, dict[str, Any]]:
    """The statement's SQL text for this dialect and the values of its constant parameters (a
    LIMIT, a substr length), compiled once per process: statements given here are
    module-level constants."""
    compiled = statement.compile(dialect=dialect)  # type: ignore[attr-defined]
    return compiled.string, dict(compiled.params)


@lru_cache(maxsize=32)
def _row_type(names: tuple[str, ...]) -> type[Any]:
    """A tuple type whose fields are the result's column labels, the names SQLAlchemy's rows
    answer to (a label repeated or not an identifier is reached by position only)."""
    return namedtuple("DriverRow", names, rename=True)
