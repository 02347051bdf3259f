"""PostgreSQL: ``async with ascope.postgres.connect(dsn) as db``."""
from __future__ import annotations

from typing import Any

from . import _lib
from .sql import Connect, Connection, Pool, _connection_options, _pool_options

__all__ = ["connect", "create_pool", "Connection", "Pool"]


def connect(dsn: str, **options: Any) -> Connect:
    """A pipelined connection, for one ``async with``: statements awaited by
    many tasks at once share it without waiting for one another.

    dsn is libpq's (``"host=... dbname=..."`` or ``"postgresql://..."``);
    options are the driver's (docs/drivers/postgres.md): ``connect_timeout``
    and ``cancel_timeout`` (seconds), ``cache``, ``batch``, ``results``,
    ``sync="batch"``.
    """
    lib = _lib.driver("postgres")
    return Connect(lib.ascope_use_postgres, "postgres", dsn, _connection_options(options))


def create_pool(dsn: str, **options: Any) -> Pool:
    """A pool of connections to dsn: ``async with ascope.postgres.create_pool(dsn,
    max=8) as pool:`` then ``async with pool.acquire() as db:``. options: the
    pool's (``min``, ``max``, ``acquire_timeout``…, see Pool) and the
    connection's, as for connect."""
    _lib.driver("postgres")
    return Pool("postgres", dsn, _pool_options(options))
