"""ascope for Python: ``async with`` over ascope's C drivers, on the running asyncio loop.

::

    import ascope
    async with ascope.postgres.connect(dsn) as db:
        async with db.transaction():
            await db.execute("INSERT INTO t VALUES ($1)", 1)
        print(await db.fetchval("SELECT count(*) FROM t"))

The C library (libascope and its driver libraries) is found through
``ASCOPE_LIBRARY_PATH``, then the system's library path, then a build tree of
the checkout this package sits in. docs/bindings/python.md is the guide.
"""
from __future__ import annotations

import importlib
from typing import Any

from ._lib import LibraryNotFound
from .errors import *  # noqa: F401,F403
from .errors import __all__ as _errors_all

__version__ = "0.1.0"
__all__ = ["open", "runtime", "version", "LibraryNotFound", "sqlite", "postgres", "http",
           "Lock", "Semaphore", "scope"] + list(_errors_all)

_lazy = {"sqlite", "postgres", "http", "sql"}


def __getattr__(name: str) -> Any:
    # Drivers load on first use, so a missing driver library is reported
    # when (and only when) it is needed.
    # Each is kept as a module attribute once loaded: later uses skip this.
    if name in _lazy:
        value = importlib.import_module(f".{name}", __name__)
    elif name in ("open", "File"):
        from . import files
        value = getattr(files, name)
    elif name in ("Lock", "Semaphore", "scope", "Scope"):
        from . import sync
        value = getattr(sync, name)
    else:
        raise AttributeError(f"module 'ascope' has no attribute {name!r}")
    globals()[name] = value
    return value


def runtime() -> Any:
    """The ascope runtime of the running asyncio loop (``.stat(name)`` reads its counters)."""
    from . import _core
    return _core.runtime()


def version() -> str:
    """The loaded libascope's version, "major.minor.patch"."""
    from . import _core
    v = _core.lib.ascope_version()
    return f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}"
