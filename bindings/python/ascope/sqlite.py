"""SQLite: ``async with ascope.sqlite.connect(path) as db``."""
from __future__ import annotations

import os
from typing import Any, Union

from . import _lib
from .sql import Connect, Connection, Pool, _connection_options, _pool_options

__all__ = ["connect", "create_pool", "Connection", "Pool"]


def connect(path: Union[str, "os.PathLike[str]"], **options: Any) -> Connect:
    """A connection to the SQLite database at path, for one ``async with``.

    options are the driver's (docs/drivers/sqlite.md): ``mode="rwc"|"rw"|"ro"|"memory"``,
    ``wal=True``, ``busy_timeout=5.0`` (seconds), ``cache=32``, ``batch=256``,
    ``foreign_keys=True``, ``synchronous="normal"``.
    """
    lib = _lib.driver("sqlite")
    path = os.fspath(path)
    if path == ":memory:" and "mode" not in options:
        options["mode"] = "memory"
    return Connect(lib.ascope_use_sqlite, "sqlite", path, _connection_options(options))


def create_pool(path: Union[str, "os.PathLike[str]"], **options: Any) -> Pool:
    """A pool of connections to the SQLite database at path (see Pool):
    options are the pool's (``min``, ``max``, ``acquire_timeout``…) and the
    connection's, as for connect."""
    _lib.driver("sqlite")
    return Pool("sqlite", os.fspath(path), _pool_options(options))
