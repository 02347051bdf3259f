import asyncio
import gc
import os
import pathlib
import tempfile
import unittest

import ascope
from support import (TestCase, check_cancelled_while_entering, check_cursor_left_open,
                     check_executemany,
                     check_small_prefetch,
                     check_transaction_owns_connection, fds, rss_kib)
from ascope import _core

COUNT = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {n}) SELECT x FROM c"


class SQLite(TestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "t.db")

    async def asyncTearDown(self):
        await super().asyncTearDown()
        self.dir.cleanup()

    async def test_shapes(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score REAL, data BLOB)")
            r = await db.execute("INSERT INTO t (name, score, data) VALUES ($1, $2, $3)", "ann", 1.5, b"\0x")
            self.assertEqual((r.changes, r.last_id), (1, 1))
            await db.execute("INSERT INTO t (name, score, data) VALUES (?, ?, ?)", "bob", None, None)
            rows = await db.fetch("SELECT id, name, score, data FROM t ORDER BY id")
            self.assertEqual(rows.columns, ("id", "name", "score", "data"))
            self.assertEqual(list(rows), [(1, "ann", 1.5, b"\0x"), (2, "bob", None, None)])
            self.assertEqual(await db.fetchrow("SELECT name FROM t WHERE id = $1", 2), ("bob",))
            self.assertIsNone(await db.fetchrow("SELECT name FROM t WHERE id = 3"))
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 2)
            self.assertEqual(await db.fetchval("SELECT $1", True), 1)
        self.assertEqual(self.rt.stat("sqlite.connections"), 0)

    async def test_pool(self):
        async with ascope.sqlite.connect(self.path, wal=True) as db:
            await db.execute("CREATE TABLE t (v INTEGER)")
        async with ascope.sqlite.create_pool(self.path, max=2, wal=True) as pool:
            async def add(v):
                async with pool.acquire() as db:
                    async with db.transaction(begin="immediate"):
                        await db.execute("INSERT INTO t VALUES ($1)", v)
            await asyncio.gather(*(add(v) for v in range(10)))
            with self.assertRaises(ascope.SQLError):
                async with pool.acquire() as db:
                    async with db.transaction():
                        await db.execute("INSERT INTO t VALUES (100)")
                        await db.execute("INSERT INTO nowhere VALUES (1)")
            async with pool.acquire() as db:
                self.assertEqual(await db.fetchval("SELECT sum(v) FROM t"), 45)
            self.assertLessEqual(pool.stat("size"), 2)
            self.assertEqual(pool.stat("acquired"), 12)
        self.assertEqual(self.rt.stat("sqlite.connections"), 0)

    async def test_constraint_violation_and_bad_sql(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
            await db.execute("INSERT INTO t VALUES (1, 'a')")
            with self.assertRaises(ascope.UniqueViolation) as cm:
                await db.execute("INSERT INTO t VALUES (1, 'b')")
            e = cm.exception
            self.assertIsInstance(e, ascope.IntegrityError)
            self.assertEqual((e.driver, e.code), ("sqlite", "SQLITE_CONSTRAINT_PRIMARYKEY"))
            self.assertEqual(e.name, "ASCOPE_EDRIVER")
            with self.assertRaises(ascope.NotNullViolation):
                await db.execute("INSERT INTO t VALUES (2, NULL)")
            with self.assertRaises(ascope.SyntaxError):
                await db.fetch("SELEC 1")
            with self.assertRaises(ascope.UndefinedTable):
                await db.fetch("SELECT * FROM nope")
            # the connection carries on after each
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 1)

    async def test_transactions_nest_as_savepoints(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE t (v INTEGER)")
            async with db.transaction():
                await db.execute("INSERT INTO t VALUES (1)")
                with self.assertRaises(KeyError):
                    async with db.transaction():  # a savepoint, rolled back alone
                        await db.execute("INSERT INTO t VALUES (2)")
                        raise KeyError("inner")
                async with db.transaction():
                    await db.execute("INSERT INTO t VALUES (3)")
            self.assertEqual([r[0] for r in await db.fetch("SELECT v FROM t ORDER BY v")], [1, 3])
            with self.assertRaises(RuntimeError):
                async with db.transaction(begin="immediate"):
                    await db.execute("INSERT INTO t VALUES (4)")
                    raise RuntimeError("outer")
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 2)

    async def test_cursor_back_pressure(self):
        async with ascope.sqlite.connect(self.path, batch=64) as db:
            cur = db.cursor(COUNT.format(n=20000), prefetch=128)
            n = 0
            most = 0
            async for (x,) in cur:
                n += 1
                most = max(most, len(cur._items))
                if n % 1000 == 0:
                    await asyncio.sleep(0)  # let the stream run ahead if it could
            self.assertEqual(n, 20000)
            # never more than the bound and one batch waiting in Python
            self.assertLessEqual(most, 128 + 64)
            # leaving early stops the stream: the connection is free again
            async for (x,) in db.cursor(COUNT.format(n=100000), prefetch=64):
                if x == 10:
                    break
            self.assertEqual(await db.fetchval("SELECT 7"), 7)
            async with db.cursor(COUNT.format(n=100000)) as cur:
                async for (x,) in cur:
                    break
            self.assertEqual(await db.fetchval("SELECT 8"), 8)

    async def test_cancel_mid_query_and_timeout_inside_a_transaction(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE t (v INTEGER)")
            slow = COUNT.format(n=10**9).replace("SELECT x FROM c", "SELECT count(*) FROM c")
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async with db.transaction():
                        await db.execute("INSERT INTO t VALUES (1)")
                        await db.fetchval(slow)
            # rolled back, and the connection works
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 0)
            task = asyncio.create_task(self._slow(db, slow))
            while not db._scope.rt.stat("sqlite.running"):
                await asyncio.sleep(0.001)
            task.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await task
            self.assertEqual(await db.fetchval("SELECT 1"), 1)

    async def test_statement_cancelled_alone_in_a_task_that_catches_it(self):
        async with ascope.sqlite.connect(self.path) as db:
            slow = COUNT.format(n=10**10).replace("SELECT x FROM c", "SELECT count(*) FROM c")
            caught = []

            async def task_body():
                try:
                    await db.fetchval(slow)
                except asyncio.CancelledError:
                    caught.append(True)
                return await db.fetchval("SELECT 6")

            task = asyncio.create_task(task_body())
            while not db._scope.rt.stat("sqlite.running"):
                await asyncio.sleep(0.001)
            task.cancel()
            # Were the slow statement left to run, this would take hours.
            self.assertEqual(await asyncio.wait_for(task, 10), 6)
            self.assertEqual(caught, [True])

            async def stopped():  # the interrupted job may still be winding down
                while db._scope.rt.stat("sqlite.running"):
                    await asyncio.sleep(0.001)
            await asyncio.wait_for(stopped(), 10)

    async def test_wait_for_on_a_statement_stops_it_alone(self):
        # asyncio.wait_for cancels the statement's future itself: the
        # statement is interrupted, and the connection's next one runs (it
        # would wait hours behind the slow one otherwise).
        async with ascope.sqlite.connect(self.path) as db:
            slow = COUNT.format(n=10**10).replace("SELECT x FROM c", "SELECT count(*) FROM c")
            with self.assertRaises(TimeoutError):
                await asyncio.wait_for(db.fetchval(slow), 0.05)
            self.assertEqual(await asyncio.wait_for(db.fetchval("SELECT 3"), 10), 3)
            slow_ones = [db.fetchval(slow) for _ in range(3)]
            gathered = asyncio.gather(*slow_ones)
            gathered.cancel()  # cancels each statement: queued ones never run
            with self.assertRaises(asyncio.CancelledError):
                await gathered
            self.assertEqual(await asyncio.wait_for(db.fetchval("SELECT 4"), 10), 4)

    async def test_no_leak_over_100000_statements(self):
        # Answered, failed and cancelled (half of some batches cancelled
        # before they ran): every future, C handle and operation goes.
        asyncio.get_running_loop().set_debug(False)
        async with ascope.sqlite.connect(":memory:") as db:
            async def batch(n):
                for k in range(0, n, 1000):
                    got = await asyncio.gather(*(db.fetchval("SELECT $1", i)
                                                 for i in range(k, k + 1000)))
                    self.assertEqual(got[-1], k + 999)
                for _ in range(n // 1000):
                    futs = [db.fetchval("SELECT $1", i) for i in range(100)]
                    futs.append(db.fetchval("SELEC oops"))
                    for f in futs[::2]:
                        f.cancel()
                    await asyncio.gather(*futs, return_exceptions=True)
                while db._inflight:  # the cancelled ones' callbacks still to come
                    await asyncio.sleep(0.001)

            await batch(10000)  # warm the caches
            gc.collect()
            rss, nfd, objs = rss_kib(), fds(), len(_core._objs)
            await batch(100000)
            gc.collect()
            self.assertEqual(db._inflight, 0)
            self.assertEqual(len(_core._objs), objs)
            self.assertEqual(fds(), nfd)
            self.assertLess(rss_kib() - rss, 4096, "memory grew by more than 4 MiB")

    async def _slow(self, db, slow):
        async with ascope.scope():
            await db.fetchval(slow)

    async def test_connect_error(self):
        with self.assertRaises(ascope.SQLConnectionError) as cm:
            async with ascope.sqlite.connect(os.path.join(self.path, "no", "such.db"), mode="rw"):
                self.fail("acquired")
        self.assertEqual(cm.exception.driver, "sqlite")

    async def test_bad_input_is_refused_and_loses_nothing(self):
        path = pathlib.Path(self.path)
        async with ascope.sqlite.connect(path) as db:  # a path-like object will do
            await db.execute("CREATE TABLE t (v INTEGER)")
            with self.assertRaises(OverflowError):
                db.execute("INSERT INTO t VALUES ($1)", 2**64 + 5)
            with self.assertRaises(ValueError):
                db.execute("INSERT INTO t VALUES (1)\x00; DROP TABLE t")
            changes, last_id = await db.execute("INSERT INTO t VALUES ($1)", 2**63 - 1)
            self.assertEqual((changes, last_id), (1, 1))
            self.assertEqual(await db.fetch("SELECT v FROM t"), [(2**63 - 1,)])
        for bad in (self.path + "\x00.other", ":memory:\x00"):
            with self.assertRaises(ValueError):
                async with ascope.sqlite.connect(bad):
                    self.fail("opened")
        self.assertEqual(sorted(os.listdir(self.dir.name)), ["t.db"])
        with self.assertRaises(ValueError):
            async with ascope.open(os.path.join(self.dir.name, "a\x00b"), "w"):
                self.fail("opened")
        self.assertEqual(self.rt.stat("sqlite.connections"), 0)

    async def test_a_task_cancelled_while_connecting_ends(self):
        await check_cancelled_while_entering(self, lambda: ascope.sqlite.connect(self.path))

    async def test_another_loops_calls_are_refused_before_anything_runs(self):
        # A connection, a pool and a file are their loop's: from a thread with
        # a loop of its own, every call is refused with a RuntimeError that
        # says so, nothing reaches C (no row is written), and the owners are
        # unharmed. (A statement from there used to run, from that thread,
        # before asyncio's own error came back; a transaction there hung.)
        import threading
        target = os.path.join(self.dir.name, "f.txt")

        def from_another_loop(coro_fn) -> str:
            out = []

            def run():
                try:
                    asyncio.run(coro_fn())
                    out.append("no error")
                except RuntimeError as e:
                    out.append(str(e))
            th = threading.Thread(target=run)
            th.start()
            th.join(60)  # a guard: joined at once unless the refusal regresses to a hang
            self.assertFalse(th.is_alive(), "a call from another loop hung")
            return out[0]

        async with ascope.sqlite.connect(self.path, wal=True) as db, \
                ascope.sqlite.create_pool(self.path, max=1, wal=True) as pool, \
                ascope.open(target, "w") as f:
            await db.execute("CREATE TABLE x (v INTEGER)")

            async def insert():
                await db.execute("INSERT INTO x VALUES (1)")

            async def transaction():
                async with db.transaction():
                    pass

            async def acquire():
                async with pool.acquire():
                    pass

            async def write():
                await f.write(b"other loop")
            for fn in (insert, transaction, acquire, write):
                self.assertIn("belongs to the event loop it was opened on", from_another_loop(fn),
                              fn.__name__)
            self.assertEqual(await db.fetchval("SELECT count(*) FROM x"), 0)
            async with db.transaction():
                await db.execute("INSERT INTO x VALUES (2)")
            async with pool.acquire() as p:
                self.assertEqual(await p.fetchval("SELECT sum(v) FROM x"), 2)
            await f.write(b"own loop")
        with open(target, "rb") as got:
            self.assertEqual(got.read(), b"own loop")

    async def test_cursors_with_the_smallest_prefetch_end(self):
        async with ascope.sqlite.connect(self.path, batch=64) as db:
            await check_small_prefetch(self, db, COUNT.format(n="$1"))

    async def test_a_cursor_left_open_is_closed_by_its_tasks_next_statement(self):
        async with ascope.sqlite.connect(self.path, batch=64) as db:
            await check_cursor_left_open(self, db, COUNT.format(n="$1"))

    async def test_a_transaction_keeps_other_tasks_off_its_connection(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE own (v INTEGER)")
            await check_transaction_owns_connection(self, db)

    async def test_executemany(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE many (k INTEGER PRIMARY KEY, v TEXT)")
            await check_executemany(self, db, COUNT.format(n=10**10).replace(
                "SELECT x FROM c", "SELECT count(*) FROM c"))

    async def test_many_inserts_in_one_transaction(self):
        async with ascope.sqlite.connect(self.path) as db:
            await db.execute("CREATE TABLE t (v INTEGER)")
            async with db.transaction():
                await asyncio.gather(*(db.execute("INSERT INTO t VALUES ($1)", i) for i in range(2000)))
            self.assertEqual(await db.fetchval("SELECT sum(v) FROM t"), sum(range(2000)))


if __name__ == "__main__":
    unittest.main()
