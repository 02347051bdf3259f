"""SQL connections (SQLite and PostgreSQL share this code, as in C)."""
from __future__ import annotations

import asyncio
import ctypes
import itertools
import warnings
import weakref
from collections import abc
from typing import Any, Awaitable, Iterable, Optional, Sequence, Tuple

from . import _lib
from . import _core as C

sl = _lib.driver("sql")

_NULL, _BOOL, _INT64, _DOUBLE, _TEXT, _BLOB = range(6)
_VAL, _ROW, _ROWS, _EXEC = range(4)
_SQL_EXEC, _SQL_QUERY = 1, 2  # ascope_sql_start's kinds
# Statements queued faster than they are awaited (a gather of thousands) go
# to the database in groups of this many as they are made, so it works on
# one group while Python makes the next, rather than all at the end.
_FLUSH_EVERY = 64
# executemany's rows go to C this many at a time: the next batch is bound in
# Python while the one before runs, and memory holds two batches, not all.
_MANY_BATCH = 4096
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_len = ctypes.c_size_t()
_plen = ctypes.byref(_len)
_op = ctypes.c_void_p()
_pop = ctypes.byref(_op)


_NOT_OURS = ("the connection is inside another task's transaction: its statements would "
             "commit or roll back with it; give concurrent transactions their own connections "
             "(a pool)")


class _Pending(C.OpFuture):
    """A statement's result (see OpFuture): queued, a cancelled statement
    never runs; running, the driver stops it on the server where it safely
    can (see the driver's page). The connection goes on."""

    __slots__ = ()

    def __await__(self):  # type: ignore[override]
        # Awaited while it is the only statement in flight (awaited one by
        # one): its answer is tens of microseconds away, and letting the
        # asyncio loop sleep for it costs as much again to wake it.
        if not self.done() and self._rt.statements == 1:
            self._rt.spin_until(self)
        return (yield from super().__await__())

    __iter__ = __await__


class _Queued(C.OpFuture):
    """A statement's result, made while others were in flight: awaited
    without _Pending's wait (it is not alone), asyncio's own await, in C."""

    __slots__ = ()


class _Rows:
    """executemany's rows, taken a batch at a time."""

    __slots__ = ("it", "width", "n", "done")

    def __init__(self, rows: Iterable[Sequence[Any]]) -> None:
        self.it = iter(rows)
        self.width = -1  # every row's count of values, once the first is seen
        self.n = 0  # rows taken
        self.done = False


class Rows(list):
    """The rows of a result: a list of tuples; ``columns`` names their columns."""

    columns: Tuple[str, ...] = ()


class ExecResult(Tuple[int, int]):
    """What :meth:`Connection.execute` returns: ``(changes, last_id)``, rows
    changed and the last rowid, a tuple with those names."""

    __slots__ = ()

    def __new__(cls, changes: int, last_id: int) -> "ExecResult":
        return tuple.__new__(cls, (changes, last_id))

    @property
    def changes(self) -> int:
        return self[0]

    @property
    def last_id(self) -> int:
        return self[1]

    def __repr__(self) -> str:
        return f"ExecResult(changes={self[0]}, last_id={self[1]})"


_exec_result = tuple.__new__  # with ExecResult: the same, without a Python-level __new__


def _value(r: int, i: int, j: int) -> Any:
    t = sl.ascope_rows_type(r, i, j)
    if t == _INT64:
        return sl.ascope_rows_int64(r, i, j)
    if t == _TEXT:
        p = sl.ascope_rows_text(r, i, j, _plen)
        return ctypes.string_at(p, _len.value).decode("utf-8", "replace")
    if t == _NULL:
        return None
    if t == _DOUBLE:
        return sl.ascope_rows_double(r, i, j)
    if t == _BOOL:
        return bool(sl.ascope_rows_int64(r, i, j))
    p = sl.ascope_rows_blob(r, i, j, _plen)
    return ctypes.string_at(p, _len.value) if p else b""


def _columns(r: int) -> Tuple[str, ...]:
    return tuple(sl.ascope_rows_column_name(r, j).decode() for j in range(sl.ascope_rows_columns(r)))


def _rows(r: int, out: Optional[Rows] = None) -> Rows:
    if out is None:
        out = Rows()
        out.columns = _columns(r)
    n, c = sl.ascope_rows_count(r), sl.ascope_rows_columns(r)
    if c == 1:
        out.extend((_value(r, i, 0),) for i in range(n))
    else:
        out.extend(tuple(_value(r, i, j) for j in range(c)) for i in range(n))
    return out


def _sql_cb(s: int, status: int, r: int, ud: int) -> int:
    try:
        fut, kind, conn = C._objs.pop(ud)
        fut._op = None  # the operation ends with this call
        conn._inflight -= 1
        conn._rt.statements -= 1
        if fut.cancelled():
            return 0
        if status < 0:
            fut.set_exception(conn._error(status))
        elif kind == _VAL:
            # No row or no column reads as NULL there: None, in two calls.
            fut.set_result(_value(r, 0, 0))
        elif kind == _ROWS:
            fut.set_result(_rows(r))
        elif kind == _ROW:
            if r and sl.ascope_rows_count(r):
                fut.set_result(tuple(_value(r, 0, j) for j in range(sl.ascope_rows_columns(r))))
            else:
                fut.set_result(None)
        else:
            fut.set_result(_exec_result(ExecResult, (sl.ascope_rows_changes(r),
                                                    sl.ascope_rows_last_id(r))))
    except BaseException as e:
        C._report(e, "a SQL callback")
    return 0  # handled: a statement's error is the awaiting task's, not the scope's


_sql_cb_c = _lib.SQL_CB(_sql_cb)


def _stream_cb(s: int, status: int, r: int, ud: int) -> int:
    try:
        # A weak reference: a cursor dropped after a `break` is collected,
        # and its __del__ resumes the stream so that this call can stop it.
        ref = C._objs.get(ud)
        cur = ref() if ref is not None else None
        if cur is None:
            C._objs.pop(ud, None)
            return C.STOP if r else 0
        if r:
            if cur._stopping:
                C._objs.pop(ud, None)
                cur._finish()
                return C.STOP
            if not cur.columns:
                cur.columns = _columns(r)
            n = len(cur._items)
            _rows(r, cur._items)
            return cur._delivered(len(cur._items) - n)
        C._objs.pop(ud, None)
        cur._finish(cur._conn._error(status) if status < 0 and not cur._stopping else None)
    except BaseException as e:
        C._report(e, "a SQL stream callback")
    return 0


STOP = C.STOP
_stream_cb_c = _lib.SQL_CB(_stream_cb)


class Cursor(C.Stream):
    """``async for row in db.cursor(sql, *args)``: rows in batches, with back-pressure.

    At most about ``prefetch`` rows wait in Python: past that the stream is
    paused and the database produces nothing more until they are consumed.
    Leaving the loop early (``break``, an exception) stops the stream; use
    ``async with db.cursor(...) as cur`` to stop it at a known point.
    """

    def __init__(self, conn: "Connection", sql: str, args: Sequence[Any], prefetch: int) -> None:
        self._conn = conn
        self._rt = conn._rt
        self._sql = sql
        self._args = args
        self._stream_init(prefetch)
        self._task: "Optional[asyncio.Task[Any]]" = None
        self.columns: Tuple[str, ...] = ()

    def _start(self) -> None:
        conn = self._conn
        sc = C.scope_for(conn._scope)
        s = C.handle_of(sc)
        if conn._cursors:
            conn._close_own_cursors()
        p = conn._bind(self._args)
        key = C.register(weakref.ref(self))
        rc = sl.ascope_sql_stream(s, conn._db, C.cstr(self._sql, "sql"), p, _stream_cb_c, key,
                                  ctypes.byref(self._op))
        if rc < 0:
            del C._objs[key]
            raise conn._error(rc)
        self._started = True
        self._task = asyncio.current_task()
        conn._cursors.add(self)
        sc.add_stream(self)
        conn._rt.kick()

    def _finish(self, err: Optional[BaseException] = None) -> None:
        self._conn._cursors.discard(self)
        super()._finish(err)

    def __aiter__(self) -> "Cursor":
        return self

    async def __anext__(self) -> tuple:
        if not self._started:
            self._start()
        return await self._next()

    async def __aenter__(self) -> "Cursor":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()


class Transaction(C.ScopeCM):
    """``async with db.transaction():`` — BEGIN, then COMMIT if the block ends
    normally, ROLLBACK if it raises, is cancelled or times out. Nested ones
    are savepoints (RELEASE / ROLLBACK TO)."""

    def __init__(self, conn: "Connection", options: str) -> None:
        self._conn = conn
        self._options = options

    def _uses(self, s: int) -> None:
        db = self._conn._db
        if self._conn._scope is not None:
            C.check_loop(self._conn._scope.rt, "connection")
        if not db or self._conn._scope.live_handle() is None:
            raise C.make_error(C.ECLOSED, message="the connection is closed")
        C.check(sl.ascope_use_sql_tx(s, db, C.cstr(self._options, "options") if self._options else None),
                "transaction")

    def _value(self) -> "Transaction":
        return self


def _opts(kw: dict) -> str:
    parts = []
    for k, v in kw.items():
        if v is None:
            continue
        if isinstance(v, bool):
            v = int(v)
        v = str(v)
        if any(ch in v for ch in " \t,'\\") or v == "":  # quoted as libpq's conninfo is
            v = "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        parts.append(f"{k}={v}")
    return " ".join(parts)


class Connection:
    """A database connection, held for the ``async with`` block that opened it.

    Statements take ``$1, $2…`` placeholders (``?`` too on SQLite) and their
    arguments as Python values: None, bool, int, float, str, bytes (anything
    else is sent as its ``str()``). Statements from many tasks on one
    connection are pipelined (PostgreSQL) or run in one hand-off (SQLite).
    """

    def __init__(self, driver: str) -> None:
        self.driver = driver
        self._scope: Optional[C.Scope] = None
        self._rt: Optional[C.Runtime] = None
        self._db = None
        self._inflight = 0  # statements started whose callback has not run
        # Cursors started and not ended (weak: a cursor left behind is
        # collected, and stopped by that).
        self._cursors: "weakref.WeakSet[Cursor]" = weakref.WeakSet()
        self._answered_at_once = False  # the last one sent alone was answered in its call
        self._params = sl.ascope_sql_params_new()
        if not self._params:
            raise MemoryError("ascope_sql_params_new")

    def __del__(self) -> None:
        p, self._params = getattr(self, "_params", None), None
        if p:
            sl.ascope_sql_params_free(p)

    def _error(self, status: int) -> BaseException:
        code = msg = None
        if status == C.EBUSY:  # refused before it was queued: the connection is not ours now
            return C.make_error(status, self.driver, None, _NOT_OURS, sql=True)
        if status == C.EINVAL:  # refused before it was queued: the statement's arguments
            return C.E.ProgrammingError(
                "the statement was refused before it ran: its values do not match its parameters "
                "($1, $2…), or a text value holds a NUL character", status=status, name="EINVAL",
                driver=self.driver)
        if self._db and status != C.ECANCELED:
            code = C._s(sl.ascope_sql_errcode(self._db))
            msg = C._s(sl.ascope_sql_errmsg(self._db))
        return C.make_error(status, self.driver, code, msg, sql=True)

    @staticmethod
    def _add(p: int, a: Any) -> None:
        if a is None:
            rc = sl.ascope_sql_params_add_null(p)
        elif a is True or a is False:
            rc = sl.ascope_sql_params_add_bool(p, int(a))
        elif isinstance(a, int):
            if not _INT64_MIN <= a <= _INT64_MAX:  # ctypes would wrap it silently
                raise OverflowError(f"{a} does not fit a 64-bit integer parameter; pass it "
                                    "as a str (PostgreSQL reads it as numeric)")
            rc = sl.ascope_sql_params_add_int64(p, a)
        elif isinstance(a, float):
            rc = sl.ascope_sql_params_add_double(p, a)
        elif isinstance(a, (bytes, bytearray, memoryview)):
            b = bytes(a)
            rc = sl.ascope_sql_params_add_blob(p, b, len(b))
        else:
            b = str(a).encode()
            rc = sl.ascope_sql_params_add_text(p, b, len(b))
        if rc < 0:
            raise C.make_error(rc, message=f"cannot bind {a!r}")

    def _put(self, p: int, values: Sequence[Any]) -> None:
        add, add_int = self._add, sl.ascope_sql_params_add_int64
        for a in values:
            # An int is the common value, bound without a call of ours; its
            # add fails only for want of memory, which the set remembers and
            # the statement reports.
            if type(a) is int and _INT64_MIN <= a <= _INT64_MAX:
                add_int(p, a)
            else:
                add(p, a)

    def _bind(self, args: Sequence[Any]) -> Optional[int]:
        if not args:
            return None
        p = self._params
        sl.ascope_sql_params_clear(p)
        self._put(p, args)
        return p

    def _bind_many(self, rows: "_Rows") -> Tuple[int, int]:
        """The next batch of rows into one set, row after row: (the set, rows)."""
        p, add, add_int = self._params, self._add, sl.ascope_sql_params_add_int64
        sl.ascope_sql_params_clear(p)
        lo, hi = _INT64_MIN, _INT64_MAX
        width, n = rows.width, 0
        for row in itertools.islice(rows.it, _MANY_BATCH):
            t = type(row)
            if t is not tuple and t is not list and (
                    isinstance(row, (str, bytes)) or not isinstance(row, abc.Sequence)):
                raise TypeError(f"executemany: row {rows.n + n} is a {type(row).__name__}; "
                                "each row is a sequence of values, such as a tuple")
            if len(row) != width:
                if width >= 0:
                    raise ValueError(f"executemany: row {rows.n + n} has {len(row)} values, "
                                     f"the rows before it {width}")
                width = rows.width = len(row)
            for a in row:  # _put's loop, inline: this is every row's path
                if type(a) is int and lo <= a <= hi:
                    add_int(p, a)
                else:
                    add(p, a)
            n += 1
        rows.n += n
        rows.done = n < _MANY_BATCH
        return p, n

    def _submit(self, how: int, sql: str, args: Sequence[Any], kind: int,
                rows: "Optional[_Rows]" = None) -> "asyncio.Future[Any]":
        # Called, not awaited: the statement is queued in C before the
        # caller first awaits, so statements from one task or many keep the
        # order of the calls. rows: executemany's, its next batch as one
        # operation (None when no rows are left).
        b = sql.encode()
        if b"\0" in b:  # C.cstr, inline: this is every statement's path
            raise ValueError("sql: embedded null character")
        s = C.handle_of(C.scope_for(self._scope))
        if self._cursors:
            self._close_own_cursors()
        rt = self._rt
        if rows is None:
            p = self._bind(args) if args else None
            fut = (_Queued if rt.statements else _Pending)(loop=rt.loop)
        else:
            p, nrows = self._bind_many(rows)
            if not nrows:
                return None  # type: ignore[return-value]
            fut = _Queued(loop=rt.loop)  # not _Pending's wait: a batch is not quick
        k = C.register((fut, kind, self))
        if rows is None:
            rc = sl.ascope_sql_start(s, self._db, how, b, p, _sql_cb_c, k, _pop)
        else:
            rc = sl.ascope_sql_exec_many(s, self._db, b, p, nrows, _sql_cb_c, k, _pop)
        if rc < 0:
            del C._objs[k]
            raise self._error(rc)
        fut._op = _op.value
        fut._rt = rt
        # A statement alone on its connection (awaited one by one) is sent
        # now, saving a turn of the loop; with others in flight it waits
        # for the turn's end, so that all the turn's statements go together.
        lone = not self._inflight and not self._answered_at_once
        self._inflight += 1
        rt.statements += 1
        # Counted since libuv last ran, not in flight: 64 tasks each with
        # one statement in flight would otherwise hit the count at every
        # statement, and send each alone.
        rt.queued += 1
        if lone or rt.queued >= _FLUSH_EVERY:
            rt.run_now()
            # A server quick enough to answer inside that call would have
            # every statement of a gather sent and answered alone: the next
            # one waits for the turn's end, with whatever follows it.
            self._answered_at_once = lone and fut.done()
        else:
            self._answered_at_once = False
            rt.kick()
        return fut

    def _close_own_cursors(self) -> None:
        """A stream holds its connection until it ends, so a statement from
        the task reading a cursor would wait for the cursor, and the task
        for the statement: for ever, once the cursor pauses. Such cursors
        are closed instead (their next read raises); other tasks' cursors
        are read on, and the statement waits for them."""
        task = asyncio.current_task()
        for cur in list(self._cursors):
            if cur._task is task and cur._started and not cur._ended and not cur._stopping:
                cur._err = C.E.InterfaceError(
                    "the cursor was closed: the task reading it started another statement on "
                    "its connection, which runs nothing else until a cursor ends; finish or "
                    "close the cursor first (async with db.cursor(...), or await cur.aclose())",
                    status=C.EBUSY, name="ASCOPE_EBUSY", driver=self.driver)
                cur._stop()
                self._cursors.discard(cur)

    # The statements return futures, not coroutines: awaiting one, or
    # handing many to asyncio.gather, costs no Task per statement (as with
    # aiosqlite, asyncio.ensure_future makes one a Task when needed).

    def execute(self, sql: str, *args: Any) -> "Awaitable[ExecResult]":
        """Runs a statement (or, without arguments, a script of several)."""
        return self._submit(_SQL_EXEC, sql, args, _EXEC)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> ExecResult:
        """Runs one statement once per row of values (each row a tuple), all
        or nothing: inside a transaction of its own (a savepoint inside one
        already open), so the first failure rolls every row back and is
        raised. The rows go to C in batches, one call each, the next batch
        bound while the one before runs; two batches at most are held.
        Returns the rows changed, summed, and the last row's ``last_id``.
        While it runs, the connection is inside that transaction: other
        tasks' statements on it are refused meanwhile (give them a
        connection of their own, from a pool)."""
        async with self.transaction():
            feed = _Rows(rows)
            changes = last_id = 0
            running = self._submit(_SQL_EXEC, sql, (), _EXEC, feed)
            while running is not None:
                try:
                    following = None if feed.done else self._submit(_SQL_EXEC, sql, (), _EXEC, feed)
                except BaseException:
                    running.cancel()  # the transaction rolls back once it has ended
                    raise
                try:
                    done = await running
                except BaseException:
                    if following is not None:
                        following.cancel()
                    raise
                changes += done[0]
                last_id = done[1]
                running = following
            return _exec_result(ExecResult, (changes, last_id))

    def fetch(self, sql: str, *args: Any) -> "Awaitable[Rows]":
        """Every row of a query, as tuples; ``.columns`` names the columns."""
        return self._submit(_SQL_QUERY, sql, args, _ROWS)

    def fetchrow(self, sql: str, *args: Any) -> "Awaitable[Optional[tuple]]":
        """The first row, or None."""
        return self._submit(_SQL_QUERY, sql, args, _ROW)

    def fetchval(self, sql: str, *args: Any) -> "Awaitable[Any]":
        """The first column of the first row, or None."""
        return self._submit(_SQL_QUERY, sql, args, _VAL)

    def cursor(self, sql: str, *args: Any, prefetch: int = 512) -> Cursor:
        """The rows of a query as an ``async for``, with back-pressure."""
        return Cursor(self, sql, args, prefetch)

    def transaction(self, **options: Any) -> Transaction:
        """A transaction (a savepoint when one is open): options are the driver's
        (``isolation="serializable"``, ``read_only=True`` on PostgreSQL,
        ``begin="immediate"`` on SQLite)."""
        return Transaction(self, _opts(options))


class Connect(C.ScopeCM):
    """``async with connect(...) as db``: the connection is a use of a scope,
    closed exactly once when the block ends, however it ends."""

    def __init__(self, use: Any, driver: str, target: str, options: str) -> None:
        self._use = use
        self._target = target
        self._options = options
        self._conn = Connection(driver)
        self._index = 0

    def _uses(self, s: int) -> None:
        from . import _core
        self._index = _core.lib.ascope_use_count(s)
        C.check(self._use(s, C.cstr(self._target, "target"), C.cstr(self._options, "options") or None),
                "connect")

    def _on_body(self, sc: C.Scope) -> None:
        self._conn._db = sl.ascope_sql_resource(sc.s, self._index)
        self._conn._scope = sc
        self._conn._rt = sc.rt

    def _value(self) -> Connection:
        return self._conn


def _pool_closed(ud: int) -> None:
    try:
        fut = C._objs.pop(ud)
        if not fut.done():
            fut.set_result(None)
    except BaseException as e:
        C._report(e, "a pool's close")


_pool_closed_c = _lib.POOL_CLOSED_FN(_pool_closed)


class Pool:
    """A pool of connections, for one ``async with`` (or ``open()`` and
    ``await close()``): ``async with pool.acquire() as db:`` lends one to the
    block — a transaction on it is the block's own — and takes it back when
    the block ends, reset (a transaction left open rolled back, session
    settings undone) or closed if broken. Tasks that need transactions of
    their own at once take one each; statements alone pipeline as well on
    one connection (``connect``).

    Options are the pool's — ``min``, ``max`` (10), ``acquire_timeout``
    (seconds; a waiter then fails with ``ascope.TimeoutError``),
    ``idle_timeout``, ``max_lifetime`` — and the driver's connection options
    together (docs/api/pool.md).
    """

    def __init__(self, driver: str, target: str, options: str) -> None:
        self.driver = driver
        self._target = target
        self._options = options
        self._p: Optional[int] = None
        self._rt: Optional[C.Runtime] = None

    def open(self) -> "Pool":
        """Makes the pool on the running loop's runtime (``min`` connections
        start opening now)."""
        if self._p:
            return self
        rt = C.runtime()
        drv = getattr(_lib.driver(self.driver), f"ascope_{self.driver}")()
        p = sl.ascope_sql_pool_new(rt.rt, drv, C.cstr(self._target, "target"),
                                   C.cstr(self._options, "options") or None)
        if not p:
            raise C.make_error(C.EINVAL, self.driver, None,
                               f"cannot make a pool with options {self._options!r}")
        self._p, self._rt = p, rt
        rt.kick()
        return self

    def _open_pool(self) -> int:
        if not self._p:
            raise C.make_error(C.ECLOSED, None, None, f"the {self.driver} pool is not open")
        return self._p

    def acquire(self) -> "Connect":
        """``async with pool.acquire() as db``: a connection for the block."""
        p = self._open_pool()
        C.check_loop(self._rt, "pool")
        return Connect(lambda s, target, options: sl.ascope_use_sql_pool(s, p), self.driver, "",
                       "")

    def stat(self, name: str) -> int:
        """A counter of the pool ("size", "idle", "in_use", "waiting", "created", "acquired"…)."""
        return C.counter(C.lib.ascope_pool_stat(self._open_pool(), C.cstr(name, "counter")), name)

    async def close(self) -> None:
        """Fails the waiters, closes the idle connections, waits for those
        lent out to come back and closes them; returns once all are closed."""
        p, rt = self._p, self._rt
        if not p:
            return
        C.check_loop(rt, "pool")
        self._p = None
        fut = rt.loop.create_future()
        key = C.register(fut)
        C.lib.ascope_pool_close(p, _pool_closed_c, key)
        rt.kick()
        await asyncio.shield(fut)

    def __del__(self) -> None:
        # Its connections stay open until the runtime ends: say so, as an
        # unclosed file or asyncpg pool does (close() needs the loop).
        if getattr(self, "_p", None):
            warnings.warn(f"the {self.driver} pool was never closed (await pool.close(), or "
                          "async with)", ResourceWarning, source=self)

    async def __aenter__(self) -> "Pool":
        return self.open()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


# Durations are seconds in Python, as everywhere in asyncio (and in the
# HTTP session's keywords); the drivers take milliseconds, as "<key>_ms".
_CONNECTION_SECONDS = ("connect_timeout", "cancel_timeout", "busy_timeout")
_POOL_SECONDS = ("acquire_timeout", "idle_timeout", "max_lifetime")


def _seconds(kw: dict, keys: Tuple[str, ...]) -> dict:
    for k in keys:
        if k in kw:
            v = kw.pop(k)
            kw[k + "_ms"] = None if v is None else max(0, round(v * 1000))
    return kw


def _connection_options(kw: dict) -> str:
    return _opts(_seconds(kw, _CONNECTION_SECONDS))


def _pool_options(kw: dict) -> str:
    return _opts(_seconds(kw, _POOL_SECONDS + _CONNECTION_SECONDS))
