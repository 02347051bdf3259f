"""Exceptions: every failure ascope reports is an :class:`Error`.

``status`` is ascope's negative status code, ``name`` its symbolic name
(``"ASCOPE_EDRIVER"``, ``"ETIMEDOUT"``…), ``driver`` the driver that failed
(``"postgres"``, ``"sqlite"``, ``"http"``, ``"file"``; ``None`` for the core),
``code`` the driver's own code (a SQLSTATE, an SQLite extended code name, a
CURLcode name, an HTTP status) and ``message`` its text. ``secondary`` holds
the errors raised while releasing after this one (a failed ROLLBACK, a close
that failed), in order.
"""
from __future__ import annotations

import builtins
from typing import List, Optional, Type

__all__ = [
    "Error", "Cancelled", "TimeoutError", "ClosedError", "SQLError", "IntegrityError",
    "UniqueViolation", "ForeignKeyViolation", "NotNullViolation", "CheckViolation",
    "ProgrammingError", "UndefinedTable", "UndefinedColumn", "SyntaxError", "DataError",
    "OperationalError", "QueryCanceled", "SerializationFailure", "DeadlockDetected",
    "SQLConnectionError", "ConnectionClosed", "ConnectTimeout", "HTTPError", "HTTPStatusError", "HTTPTimeout", "HTTPTooLarge",
    "HTTPConnectionError", "FileError", "InterfaceError",
]


class Error(Exception):
    """A failure reported by ascope."""

    status: int
    name: str
    driver: Optional[str]
    code: Optional[str]
    message: str
    secondary: List["Error"]

    def __init__(self, message: str, *, status: int = 0, name: str = "", driver: Optional[str] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.status = status
        self.name = name
        self.driver = driver
        self.code = code
        self.message = message
        self.secondary = []

    def __str__(self) -> str:
        head = f"[{self.driver}] " if self.driver else ""
        code = f" {self.code}" if self.code and self.code != self.name else ""
        text = f"{head}{self.name}{code}: {self.message}"
        for e in self.secondary:
            text += f"\n  then, releasing: {e}"
        return text


class Cancelled(Error):
    """ascope cancelled the work (ECANCELED) although this task was not cancelled."""


class TimeoutError(Error, builtins.TimeoutError):  # noqa: A001 - ascope.TimeoutError on purpose
    """A deadline of ascope's passed (ETIMEDOUT): a driver's timeout."""


class InterfaceError(Error):
    """A use the binding cannot serve: a cursor read after the task reading
    it started another statement on its connection (ASCOPE_EBUSY)."""


class ClosedError(Error):
    """The runtime, pool, connection or resource is closing or closed (ASCOPE_ECLOSED)."""


class SQLError(Error):
    """A database's error; ``code`` is the SQLSTATE (PostgreSQL) or the
    extended result code's name (SQLite, ``"SQLITE_CONSTRAINT_UNIQUE"``)."""

    @property
    def sqlstate(self) -> Optional[str]:
        return self.code


class IntegrityError(SQLError):
    """A constraint was violated (SQLSTATE class 23, SQLITE_CONSTRAINT*)."""


class UniqueViolation(IntegrityError):
    """23505, SQLITE_CONSTRAINT_UNIQUE / _PRIMARYKEY."""


class ForeignKeyViolation(IntegrityError):
    """23503, SQLITE_CONSTRAINT_FOREIGNKEY."""


class NotNullViolation(IntegrityError):
    """23502, SQLITE_CONSTRAINT_NOTNULL."""


class CheckViolation(IntegrityError):
    """23514, SQLITE_CONSTRAINT_CHECK."""


class ProgrammingError(SQLError):
    """The statement is wrong (SQLSTATE class 42, SQLite's SQLITE_ERROR)."""


class SyntaxError(ProgrammingError):  # noqa: A001
    """42601, or SQLite's "syntax error"."""


class UndefinedTable(ProgrammingError):
    """42P01, or SQLite's "no such table"."""


class UndefinedColumn(ProgrammingError):
    """42703, or SQLite's "no such column"."""


class DataError(SQLError):
    """SQLSTATE class 22: a bad value (division by zero, out of range…)."""


class OperationalError(SQLError):
    """The database could not do it now (busy, locked, out of resources)."""


class QueryCanceled(OperationalError):
    """57014: statement_timeout, or a cancel request."""


class SerializationFailure(OperationalError):
    """40001: retry the transaction."""


class DeadlockDetected(OperationalError):
    """40P01: retry the transaction."""


class SQLConnectionError(SQLError, ConnectionError):
    """The connection could not be made or was lost (SQLSTATE class 08, SQLITE_CANTOPEN)."""


class ConnectionClosed(SQLConnectionError, ClosedError):
    """The connection is closed: lost, or closing (ASCOPE_ECLOSED from a SQL driver)."""


class ConnectTimeout(SQLConnectionError, TimeoutError):
    """Connecting took longer than the driver's ``connect_timeout`` (ETIMEDOUT, a SQLSTATE of class 08)."""


class HTTPError(Error):
    """An HTTP request failed; ``code`` is libcurl's CURLcode name or the HTTP status."""


class HTTPStatusError(HTTPError):
    """The response's status is 400 or more (raise_for_status)."""

    status_code: int
    response: object

    def __init__(self, message: str, *, status_code: int, response: object = None, **kw) -> None:
        super().__init__(message, **kw)
        self.status_code = status_code
        self.response = response


class HTTPTimeout(HTTPError, builtins.TimeoutError):
    """A timeout of the HTTP driver: total, connect, low speed or slot wait."""


class HTTPTooLarge(HTTPError):
    """The response (or the request) is over a size limit (max_response_bytes…)."""


class HTTPConnectionError(HTTPError, ConnectionError):
    """The server could not be reached or closed the connection."""


class FileError(Error, OSError):
    """A file operation failed; ``errno`` is the error's positive errno value."""


_PG_CODES = {
    "23505": UniqueViolation, "23503": ForeignKeyViolation, "23502": NotNullViolation,
    "23514": CheckViolation, "42601": SyntaxError, "42P01": UndefinedTable,
    "42703": UndefinedColumn, "57014": QueryCanceled, "40001": SerializationFailure,
    "40P01": DeadlockDetected,
    # the server ends the connection (pg_terminate_backend, a shutdown)
    "57P01": SQLConnectionError, "57P02": SQLConnectionError, "57P03": SQLConnectionError,
}
_PG_CLASSES = {"23": IntegrityError, "42": ProgrammingError, "07": ProgrammingError, "22": DataError, "08": SQLConnectionError,
               "53": OperationalError, "55": OperationalError, "57": OperationalError,
               "40": OperationalError}
_SQLITE_CODES = {
    "SQLITE_CONSTRAINT_UNIQUE": UniqueViolation, "SQLITE_CONSTRAINT_PRIMARYKEY": UniqueViolation,
    "SQLITE_CONSTRAINT_FOREIGNKEY": ForeignKeyViolation,
    "SQLITE_CONSTRAINT_NOTNULL": NotNullViolation, "SQLITE_CONSTRAINT_CHECK": CheckViolation,
    "SQLITE_CANTOPEN": SQLConnectionError, "SQLITE_BUSY": OperationalError,
    "SQLITE_LOCKED": OperationalError, "SQLITE_READONLY": OperationalError,
    "SQLITE_FULL": OperationalError, "SQLITE_INTERRUPT": QueryCanceled,
    "SQLITE_MISMATCH": DataError, "SQLITE_TOOBIG": DataError, "SQLITE_RANGE": ProgrammingError,
}


def sql_class(code: Optional[str], message: str) -> Type[SQLError]:
    """The SQLError subclass for a SQLSTATE or an SQLite code name."""
    if not code:
        return SQLError
    if code.startswith("SQLITE_"):
        if code in _SQLITE_CODES:
            return _SQLITE_CODES[code]
        for prefix, cls in _SQLITE_CODES.items():
            if code.startswith(prefix + "_"):
                return cls
        if code.startswith("SQLITE_CONSTRAINT"):
            return IntegrityError
        if code == "SQLITE_ERROR":
            if "syntax error" in message or "incomplete input" in message:
                return SyntaxError
            if "no such table" in message:
                return UndefinedTable
            if "no such column" in message:
                return UndefinedColumn
            return ProgrammingError
        return SQLError
    if code in _PG_CODES:
        return _PG_CODES[code]
    return _PG_CLASSES.get(code[:2], SQLError)
