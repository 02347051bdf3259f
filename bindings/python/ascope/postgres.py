"""PostgreSQL: ``async with ascope.postgres.connect(dsn) as db``."""
from __future__ import annotations

from typing import Any

from . import _lib
from .sql import Connect, Connection, _opts

__all__ = ["connect", "Connection"]


def connect(dsn: str, **options: Any) -> Connect:
    """A pipelined connection, for one ``async with``: statements awaited by
    many tasks at once share it without waiting for one another.

    dsn is libpq's (``"host=... dbname=..."`` or ``"postgresql://..."``);
    options are the driver's (docs/drivers/postgres.md): ``connect_timeout``
    (ms), ``cancel_timeout``, ``cache``, ``batch``, ``results``, ``sync="batch"``.
    """
    lib = _lib.driver("postgres")
    return Connect(lib.ascope_use_postgres, "postgres", dsn, _opts(options))
