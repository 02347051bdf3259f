"""Shared by the binding's tests: the servers' addresses from the environment
scripts/test exports, the loop choice, and a trace recorder."""
from __future__ import annotations

import asyncio
import ctypes
import os
import unittest
import unittest.mock
from typing import List, Tuple

import ascope
from ascope import _core, _lib

PG_DSN = os.environ.get("ASCOPE_PG_DSN")
HTTP_URL = os.environ.get("ASCOPE_HTTP_URL")
FAULT_URL = os.environ.get("ASCOPE_HTTP_FAULT_URL")
LOOP = os.environ.get("ASCOPE_TEST_LOOP", "asyncio")

need_pg = unittest.skipUnless(PG_DSN, "ASCOPE_PG_DSN is not set (scripts/pg-start)")
need_http = unittest.skipUnless(HTTP_URL and FAULT_URL, "ASCOPE_HTTP_URL is not set (scripts/http-start)")


def rss_kib() -> int:
    """The process's resident memory."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def fds() -> int:
    """The process's open file descriptors."""
    return len(os.listdir("/proc/self/fd"))


async def check_cancelled_while_entering(test: unittest.TestCase, connect) -> None:
    """Tasks cancelled, or timed out with asyncio.timeout, at every moment of
    entering ``async with connect() as db`` (delays from 0 to 4.5 ms, 300
    trials each) all end, as asyncio says: cancelled, or TimeoutError, or
    done — never still waiting, never a bare CancelledError out of a timed
    block. Two faults this found: a task cancelled after the scope had its
    resources but before it resumed left the scope waiting for a block that
    never ran (7% of PostgreSQL connects hung); a timeout during the release
    came back as a cancellation at the caller's next await, after the
    timeout's block (1% of SQLite ones)."""
    async def use():
        async with connect() as db:
            await db.fetchval("SELECT 1")

    async def timed(delay):
        try:
            async with asyncio.timeout(delay):
                await use()
            return "done"
        except TimeoutError:
            return "timeout"

    for trial in range(300):
        delay = (trial % 10) * 0.0005
        t = asyncio.ensure_future(use())
        await asyncio.sleep(delay)
        t.cancel()
        # A guard, not a wait toward a state: the hang this checks was forever.
        done, _ = await asyncio.wait([t], timeout=30)
        test.assertTrue(done, f"cancelled after {delay * 1e3:.1f} ms: still entering")
        test.assertTrue(t.cancelled() or t.exception() is None, t.exception() if not t.cancelled() else None)
        t = asyncio.ensure_future(timed(delay))
        done, _ = await asyncio.wait([t], timeout=30)
        test.assertTrue(done, f"timed out after {delay * 1e3:.1f} ms: still entering")
        test.assertFalse(t.cancelled(), f"a bare CancelledError out of a {delay * 1e3:.1f} ms timeout")
        test.assertIn(t.result(), ("done", "timeout"))


async def check_small_prefetch(test: unittest.TestCase, db, count_sql: str) -> None:
    """Cursors with the smallest prefetch (1, 2) end, whole and in order,
    alone and eight at once on one connection: each batch pauses the stream,
    and the resume that follows may deliver the next batch, or the end,
    before it returns (a cursor once waited for a wake-up already given,
    and held its connection for good). count_sql counts 1..$1."""
    async def rows(prefetch: int, n: int) -> list:
        return [x async for (x,) in db.cursor(count_sql, n, prefetch=prefetch)]

    # A guard, not a sleep toward a state: the hang this checks was forever.
    for prefetch in (1, 2):
        for n in (1, 3, 2000):
            got = await asyncio.wait_for(rows(prefetch, n), 60)
            test.assertEqual(got, list(range(1, n + 1)), (prefetch, n))
    many = await asyncio.wait_for(asyncio.gather(*(rows(1, 500) for _ in range(8))), 60)
    test.assertEqual(many, [list(range(1, 501))] * 8)
    test.assertEqual(await db.fetchval("SELECT 5"), 5)


async def check_cursor_left_open(test: unittest.TestCase, db, count_sql: str) -> None:
    """A cursor held in a variable and left by a `break` still holds its
    connection (a stream runs to its end first). A statement from the task
    that reads it closes it rather than waiting for it for ever (it once
    hung); its next read says so. Another task's statement waits for it
    instead, and it is read to its end. count_sql counts 1..$1."""
    for prefetch in (1, 512):
        cur = db.cursor(count_sql, 100000, prefetch=prefetch)
        async for (x,) in cur:
            if x >= 3:
                break
        # A guard, not a wait toward a state: the hang this checks was forever.
        test.assertEqual(await asyncio.wait_for(db.fetchval("SELECT 7"), 30), 7)
        with test.assertRaises(ascope.InterfaceError) as cm:
            await cur.__anext__()
        test.assertIn("aclose", str(cm.exception))
    # two cursors read in turn by one task: the second closes the first (not
    # read through wait_for, whose own task would be the reader)
    a, b = db.cursor(count_sql, 5000, prefetch=2), db.cursor(count_sql, 3, prefetch=2)
    test.assertEqual(await a.__anext__(), (1,))
    test.assertEqual(await b.__anext__(), (1,))
    with test.assertRaises(ascope.InterfaceError):
        await a.__anext__()
    test.assertEqual([x async for (x,) in b], [2, 3])

    # another task's statement waits for the cursor, which is read whole
    async def reader() -> int:
        n = 0
        async for _ in db.cursor(count_sql, 20000, prefetch=64):
            n += 1
            if n == 10:
                started.set()
        return n

    started = asyncio.Event()
    t = asyncio.ensure_future(reader())
    await started.wait()
    test.assertEqual(await asyncio.wait_for(db.fetchval("SELECT 8"), 60), 8)
    test.assertEqual(await asyncio.wait_for(t, 60), 20000)


async def check_transaction_owns_connection(test: unittest.TestCase, db) -> None:
    """A transaction is the connection's: another task's BEGIN would join it
    and its statements would roll back with it. Both are refused while it
    is open; the connection is free again once it ends. db has an empty
    table ``own (v int)``."""
    inside, go = asyncio.Event(), asyncio.Event()

    async def holder():
        with test.assertRaises(ValueError):
            async with db.transaction():
                await db.execute("INSERT INTO own VALUES (1)")
                inside.set()
                await go.wait()
                raise ValueError("rolled back")

    async def others():
        await inside.wait()
        try:
            with test.assertRaises(ascope.Error) as tx:
                async with db.transaction():
                    test.fail("a second transaction on the connection began")
            test.assertEqual(tx.exception.name, "ASCOPE_EBUSY")
            with test.assertRaises(ascope.SQLError) as st:
                await db.execute("INSERT INTO own VALUES (2)")
            test.assertEqual(st.exception.name, "ASCOPE_EBUSY")
            test.assertIn("another task's transaction", str(st.exception))
        finally:
            go.set()

    await asyncio.gather(holder(), others())
    await db.execute("INSERT INTO own VALUES (3)")
    test.assertEqual(await db.fetch("SELECT v FROM own"), [(3,)])


async def check_executemany(test: unittest.TestCase, db, slow_sql: str) -> None:
    """executemany: every row, all or nothing, one call into C for all.
    db has an empty table ``many (k int PRIMARY KEY, v text)``; slow_sql
    takes about a second (the cancellation and the timeout land in it)."""
    async def count() -> int:
        return await db.fetchval("SELECT count(*) FROM many")

    r = await db.executemany("INSERT INTO many VALUES ($1, $2)",
                             ((i, f"v{i}") for i in range(5000)))
    test.assertEqual(r.changes, 5000)
    test.assertEqual(await db.fetch("SELECT k, v FROM many WHERE k IN (0, 4999) ORDER BY k"),
                     [(0, "v0"), (4999, "v4999")])
    test.assertEqual(await db.executemany("INSERT INTO many VALUES ($1, $2)", []), (0, 0))

    # A violation in the middle: raised, and no row of the batch stays.
    rows = [(10000 + i, "x") for i in range(100)] + [(7, "dup")] + [(20000, "y")]
    with test.assertRaises(ascope.UniqueViolation):
        await db.executemany("INSERT INTO many VALUES ($1, $2)", rows)
    test.assertEqual(await count(), 5000)

    # Inside a transaction: a savepoint; the failure caught, the rest commits.
    async with db.transaction():
        await db.execute("INSERT INTO many VALUES (30000, 'kept')")
        with test.assertRaises(ascope.UniqueViolation):
            await db.executemany("INSERT INTO many VALUES ($1, $2)", [(30001, "a"), (30000, "b")])
        await db.executemany("INSERT INTO many VALUES ($1, $2)", [(30002, "c")])
    test.assertEqual(await db.fetch("SELECT k FROM many WHERE k >= 30000 ORDER BY k"),
                     [(30000,), (30002,)])

    # Bad rows are refused before anything is sent; the connection goes on.
    for bad, err in (([(1, "a"), (2,)], ValueError), ([(1, "a"), "ab"], TypeError),
                     ([(1 << 70, "a")], OverflowError), ([5], TypeError)):
        with test.assertRaises(err, msg=repr(bad)):
            await db.executemany("INSERT INTO many VALUES ($1, $2)", bad)
    test.assertEqual(await count(), 5002)

    # In batches (made small here): each bound while the one before runs.
    with unittest.mock.patch.object(ascope.sql, "_MANY_BATCH", 100):
        r = await db.executemany("INSERT INTO many VALUES ($1, $2)",
                                 ((40000 + i, "b") for i in range(1050)))
        test.assertEqual(r.changes, 1050)
        test.assertEqual(await db.fetchval("SELECT count(*) FROM many WHERE v = 'b'"), 1050)
        await db.execute("DELETE FROM many WHERE v = 'b'")
        # a violation in the seventh batch, a bad row in the fifth: nothing stays
        dup = [(50000 + i, "c") for i in range(1000)]
        dup[650] = (7, "dup")
        with test.assertRaises(ascope.UniqueViolation):
            await db.executemany("INSERT INTO many VALUES ($1, $2)", dup)
        bad = [(60000 + i, "d") for i in range(1000)]
        bad[450] = (1, 2, 3)
        with test.assertRaises(ValueError):
            await db.executemany("INSERT INTO many VALUES ($1, $2)", bad)
        test.assertEqual(await count(), 5002)

    # Cancelled or timed out while its rows run: none stays.
    big = [(100000 + i, "z") for i in range(20000)]
    t = asyncio.ensure_future(db.executemany(
        "INSERT INTO many SELECT $1, $2 WHERE (" + slow_sql + ") IS NOT NULL", big[:3] + big[3:5]))
    await asyncio.sleep(0.2)
    t.cancel()
    with test.assertRaises(asyncio.CancelledError):
        await asyncio.wait_for(t, 30)  # a guard: the release never waited for all
    with test.assertRaises(TimeoutError):
        async with asyncio.timeout(0.2):
            await db.executemany("INSERT INTO many SELECT $1, $2 WHERE (" + slow_sql +
                                 ") IS NOT NULL", big[:5])
    test.assertEqual(await count(), 5002)
    test.assertEqual(await db.fetchval("SELECT 7"), 7)


class TestCase(unittest.IsolatedAsyncioTestCase):
    """Runs each test on the loop ASCOPE_TEST_LOOP names: asyncio's or uvloop."""

    def _setupAsyncioRunner(self):  # Python 3.11's hook for the loop factory
        if LOOP == "uvloop":
            import uvloop
            self._asyncioRunner = asyncio.Runner(debug=True, loop_factory=uvloop.new_event_loop)
            return
        super()._setupAsyncioRunner()

    async def asyncSetUp(self) -> None:
        asyncio.get_running_loop().slow_callback_duration = 10  # debug mode, quieter
        self.rt = ascope.runtime()
        self.live0 = self.rt.stat("scopes_live")

    async def asyncTearDown(self) -> None:
        # Every scope a test opened has ended: nothing leaks into the next.
        self.assertEqual(self.rt.stat("scopes_live"), self.live0)
        self.assertEqual(self.rt.live, 0)


KINDS = {3: "acquire", 4: "acquired", 7: "release", 8: "released"}


class Trace:
    """Records acquires and releases (scope id, use index) through the C
    trace hook: what each resource saw, seen from Python."""

    def __init__(self, rt) -> None:
        self.events: List[Tuple[str, int, int, str]] = []
        self._fn = _lib.TRACE_FN(self._on)  # kept alive while installed
        self.rt = rt
        _core.lib.ascope_rt_set_trace(rt.rt, self._fn, None)

    def _on(self, ev, ud) -> None:
        e = ev.contents
        if e.kind in KINDS:
            self.events.append((KINDS[e.kind], e.scope_id, e.id, (e.driver or b"").decode()))

    def close(self) -> None:
        _core.lib.ascope_rt_set_trace(self.rt.rt, ctypes.cast(None, _lib.TRACE_FN), None)

    def releases(self) -> List[Tuple[int, int, str]]:
        return [(s, i, d) for k, s, i, d in self.events if k == "release"]

    def acquired(self) -> List[Tuple[int, int, str]]:
        return [(s, i, d) for k, s, i, d in self.events if k == "acquire"]
