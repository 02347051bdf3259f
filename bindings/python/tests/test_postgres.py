import asyncio
import itertools
import os
import socket
import unittest

import ascope
from support import (PG_DSN, TestCase, check_cancelled_while_entering, check_cursor_left_open,
                     check_executemany,
                     check_small_prefetch, check_transaction_owns_connection, need_pg)


_tags = itertools.count()


def sleeper():
    """A 30 s statement of this test's own, and a query counting the server's
    backends running it: a sleep another test left running on the server
    (a statement abandoned there runs to its end) must not be mistaken for
    this one."""
    sql = f"SELECT pg_sleep(30) /* {os.getpid()}-{next(_tags)} */"
    return sql


RUNNING = "SELECT count(*) FROM pg_stat_activity WHERE query = $1 AND state = 'active'"


@need_pg
class Postgres(TestCase):
    async def test_shapes_and_types(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            self.assertEqual(await db.fetchval("SELECT $1::int + 1", 41), 42)
            row = await db.fetchrow("SELECT 1::int8 AS a, 'x'::text AS b, 2.5::float8 AS c, "
                                    "true AS d, NULL::int AS e, '\\x0001'::bytea AS f")
            self.assertEqual(row, (1, "x", 2.5, True, None, b"\0\1"))
            rows = await db.fetch("SELECT g, g * 2 AS twice FROM generate_series(1, 3) g")
            self.assertEqual(rows.columns, ("g", "twice"))
            self.assertEqual(list(rows), [(1, 2), (2, 4), (3, 6)])

    async def test_64_concurrent_fetchval_pipeline_on_one_connection(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            before = self.rt.stat("postgres.opened")
            got = await asyncio.gather(*(db.fetchval("SELECT $1::int * 2", i) for i in range(64)))
            self.assertEqual(got, [i * 2 for i in range(64)])
            self.assertEqual(self.rt.stat("postgres.opened"), before, "one connection")
            # They were in flight together, not one after another.
            self.assertGreater(self.rt.stat("postgres.max_pipeline"), 1)

    async def test_a_statement_awaited_alone_is_waited_for_without_sleeping(self):
        # Awaited alone, its answer is waited for by running libuv, not by
        # letting the asyncio loop sleep in select(); not when spin_us is 0,
        # nor when other callbacks are ready, nor past spin_us, nor for a
        # while after a spin ran out.
        loop = asyncio.get_running_loop()
        sel = getattr(loop, "_selector", None)
        if sel is None:
            self.skipTest("the loop's selector is not reachable (uvloop)")
        selects = 0
        real = sel.select

        def counted(timeout=None):
            nonlocal selects
            selects += 1
            return real(timeout)

        sel.select = counted
        rt = self.rt
        try:
            async with ascope.postgres.connect(PG_DSN) as db:
                # The last three: a spin that ran out skips the next
                # statement, then spins again.
                for spin_us, ready, sleep, spins in ((30_000_000, False, 0.02, True),
                                                    (0, False, 0.02, False),
                                                    (30_000_000, True, 0.02, False),
                                                    (1_000, False, 0.2, False),
                                                    (30_000_000, False, 0.02, False),
                                                    (30_000_000, False, 0.02, True)):
                    rt.spin_us = spin_us
                    await asyncio.sleep(0)
                    if ready:
                        loop.call_soon(lambda: None)
                    selects = 0
                    v = await db.fetchval(f"SELECT $1::int FROM pg_sleep({sleep})", 7)
                    self.assertEqual(v, 7)
                    self.assertEqual(selects == 0, spins, (spin_us, ready, sleep, selects))
        finally:
            del sel.select
            rt.spin_us = 100

    async def test_connect_refused(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now
        with self.assertRaises(ascope.SQLConnectionError) as cm:
            async with ascope.postgres.connect(f"host=127.0.0.1 port={port} dbname=x user=x"):
                self.fail("connected")
        self.assertEqual((cm.exception.driver, cm.exception.code), ("postgres", "08001"))

    async def test_connect_timeout_is_a_timeout_and_a_connection_error(self):
        with socket.socket() as mute:  # accepts in the kernel's backlog, never answers
            mute.bind(("127.0.0.1", 0))
            mute.listen(1)
            port = mute.getsockname()[1]
            t0 = asyncio.get_running_loop().time()
            with self.assertRaises(ascope.ConnectTimeout) as cm:
                async with ascope.postgres.connect(f"host=127.0.0.1 port={port} dbname=x user=x",
                                                   connect_timeout=0.2):
                    self.fail("connected")
            self.assertGreaterEqual(asyncio.get_running_loop().time() - t0, 0.15, "seconds, not ms")
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertIsInstance(cm.exception, ascope.SQLConnectionError)
        self.assertEqual(cm.exception.name, "ETIMEDOUT")

    async def test_a_connection_lost_outside_a_transaction_is_connection_closed(self):
        async with ascope.postgres.connect(PG_DSN) as killer, \
                ascope.postgres.connect(PG_DSN) as db:
            pid = await db.fetchval("SELECT pg_backend_pid()")
            await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
            with self.assertRaises(ascope.SQLConnectionError) as cm:
                while True:  # the next statement, or the one after, finds it gone
                    await db.fetchval("SELECT 1")
            self.assertIsInstance(cm.exception, ConnectionError)  # 57P01, or closed
            with self.assertRaises(ascope.ConnectionClosed) as cm:
                await db.fetchval("SELECT 1")
            self.assertIsInstance(cm.exception, ascope.ClosedError)

    async def test_bad_arguments_are_refused_before_anything_is_sent(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            with self.assertRaises(OverflowError):
                db.fetchval("SELECT $1::numeric", 2**64 + 5)
            with self.assertRaises(OverflowError):
                db.fetchval("SELECT $1::int8", -(2**63) - 1)
            self.assertEqual(await db.fetchval("SELECT $1::int8", 2**63 - 1), 2**63 - 1)
            self.assertEqual(await db.fetchval("SELECT $1::numeric", str(2**64 + 5)), str(2**64 + 5))
            with self.assertRaises(ValueError):
                db.fetchval("SELECT 1\x00 + 1")
            for args in ((1,), (1, 2, 3)):  # too few, too many: refused at the call
                with self.assertRaises(ascope.ProgrammingError) as cm:
                    db.fetchval("SELECT $1::int + $2::int", *args)
                self.assertIn("do not match its parameters", str(cm.exception))
            self.assertEqual(await db.fetchval("SELECT 1 + 1"), 2, "the connection goes on")
        with self.assertRaises(ValueError):
            async with ascope.postgres.connect(PG_DSN + "\x00 dbname=other"):
                self.fail("connected")
        self.assertEqual(self.rt.stat("postgres.connections"), 0)

    async def test_bad_sql_and_constraint_violation(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE t (id int PRIMARY KEY)")
            await db.execute("INSERT INTO t VALUES ($1)", 1)
            with self.assertRaises(ascope.UniqueViolation) as cm:
                await db.execute("INSERT INTO t VALUES ($1)", 1)
            self.assertEqual(cm.exception.sqlstate, "23505")
            self.assertIn("duplicate key", cm.exception.message)
            with self.assertRaises(ascope.SyntaxError):
                await db.fetch("SELEC 1")
            with self.assertRaises(ascope.UndefinedTable):
                await db.fetch("SELECT * FROM no_such_table")
            with self.assertRaises(ascope.DataError):
                await db.fetchval("SELECT 1 / 0")
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 1)

    async def test_timeout_inside_a_transaction_cancels_on_the_server_and_rolls_back(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE t (v int)")
            cancels = self.rt.stat("postgres.cancels")
            sleep = sleeper()
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.1):
                    async with db.transaction():
                        await db.execute("INSERT INTO t VALUES (1)")
                        await db.fetchval(sleep)
            self.assertGreater(self.rt.stat("postgres.cancels"), cancels, "no cancel request sent")
            self.assertEqual(await db.fetchval("SELECT count(*) FROM t"), 0)
            active = await db.fetchval(RUNNING, sleep)
            self.assertEqual(active, 0, "the query still runs on the server")

    async def test_task_cancelled_mid_query(self):
        # The connection runs its statements in order: watch from another.
        async with ascope.postgres.connect(PG_DSN) as db, ascope.postgres.connect(PG_DSN) as watch:
            sleep = sleeper()

            async def slow():
                async with ascope.scope():
                    await db.fetchval(sleep)
            t = asyncio.create_task(slow())
            while not await watch.fetchval(RUNNING, sleep):
                await asyncio.sleep(0.01)
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t
            # the connection carries on; the slow query is gone
            self.assertEqual(await db.fetchval("SELECT 5"), 5)

    async def test_statement_cancelled_alone_in_a_task_that_catches_it(self):
        # No scope of its own: the statement is awaited directly, and the
        # task swallows the cancellation. The statement must still stop on
        # the server, and the connection carry on in order.
        async with ascope.postgres.connect(PG_DSN) as db, ascope.postgres.connect(PG_DSN) as watch:
            caught = []
            sleep = sleeper()

            async def slow():
                try:
                    await db.fetchval(sleep)
                except asyncio.CancelledError:
                    caught.append(True)
                return await db.fetchval("SELECT 6")

            t = asyncio.create_task(slow())
            while not await watch.fetchval(RUNNING, sleep):
                await asyncio.sleep(0.01)
            t.cancel()
            self.assertEqual(await asyncio.wait_for(t, 10), 6, "the task went on after catching")
            self.assertEqual(caught, [True])
            self.assertEqual(await watch.fetchval(RUNNING, sleep), 0,
                             "the query still runs on the server")

    async def test_pool_bounds_and_reuses_its_connections(self):
        async with ascope.postgres.create_pool(PG_DSN, max=2) as pool:
            async def work():
                async with pool.acquire() as db:
                    async with db.transaction():
                        pid = await db.fetchval("SELECT pg_backend_pid()")
                        await db.execute("SELECT pg_sleep(0.02)")
                        return pid
            pids = await asyncio.gather(*(work() for _ in range(6)))
            self.assertLessEqual(len(set(pids)), 2, "max=2: two connections at most")
            self.assertEqual(pool.stat("acquired"), 6)
            self.assertLessEqual(pool.stat("size"), 2)
            self.assertLessEqual(pool.stat("created"), 2, "each connection opened once")
        self.assertEqual(self.rt.stat("postgres.connections"), 0, "closing the pool closes them")
        with self.assertRaises(ascope.ClosedError):
            pool.acquire()

    async def test_pool_connection_comes_back_clean_and_waiters_time_out(self):
        table = f"pool_t_{os.getpid()}"
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute(f"DROP TABLE IF EXISTS {table}")
            await db.execute(f"CREATE TABLE {table} (v int)")
        try:
            async with ascope.postgres.create_pool(PG_DSN, max=1, acquire_timeout=0.2) as pool:
                with self.assertRaises(ZeroDivisionError):
                    async with pool.acquire() as db:
                        async with db.transaction():
                            await db.execute(f"INSERT INTO {table} VALUES (1)")
                            1 / 0
                async with pool.acquire() as db:
                    pid = await db.fetchval("SELECT pg_backend_pid()")
                    await db.execute("BEGIN")  # left open by the block: the reset rolls back
                    await db.execute(f"INSERT INTO {table} VALUES (2)")
                    await db.execute("SET application_name = 'dirty'")
                async with pool.acquire() as db:
                    self.assertEqual(await db.fetchval("SELECT pg_backend_pid()"), pid, "reused")
                    self.assertEqual(await db.fetchval(f"SELECT count(*) FROM {table}"), 0)
                    self.assertNotEqual(await db.fetchval("SHOW application_name"), "dirty")
                    # the one connection is lent out: a second acquire waits, then times out
                    with self.assertRaises(ascope.TimeoutError) as cm:
                        async with pool.acquire():
                            self.fail("acquired")
                    self.assertIsInstance(cm.exception, TimeoutError)
                    self.assertEqual(cm.exception.code, "POOL_TIMEOUT")
                self.assertEqual(pool.stat("timeouts"), 1)
        finally:
            async with ascope.postgres.connect(PG_DSN) as db:
                await db.execute(f"DROP TABLE {table}")

    async def test_pool_connection_broken_while_lent_is_not_reused(self):
        # The release failing: the server ends the connection while a block
        # holds it. The block's statement fails; the pool discards that
        # connection instead of lending it again, and the next block gets a
        # new one. Bad pool options are refused when the pool is made.
        async with ascope.postgres.create_pool(PG_DSN, max=1) as pool, \
                ascope.postgres.connect(PG_DSN) as killer:
            with self.assertRaises(ascope.Error):
                async with pool.acquire() as db:
                    pid = await db.fetchval("SELECT pg_backend_pid()")
                    await killer.fetchval("SELECT pg_terminate_backend($1)", pid)
                    await db.fetchval("SELECT 1")
            async with pool.acquire() as db:
                self.assertNotEqual(await db.fetchval("SELECT pg_backend_pid()"), pid)
            self.assertEqual(pool.stat("discarded"), 1)
            self.assertEqual(pool.stat("size"), 1)
        with self.assertRaises(ascope.Error):
            ascope.postgres.create_pool(PG_DSN, max=0).open()
        self.assertEqual(self.rt.stat("postgres.connections"), 0)

    async def test_pool_failures_connect_refused_waiter_cancelled_close_waits(self):
        # acquire failing: nothing listens there
        with socket.socket() as sk:
            sk.bind(("127.0.0.1", 0))
            port = sk.getsockname()[1]
        async with ascope.postgres.create_pool(f"host=127.0.0.1 port={port} dbname=x user=x",
                                               max=1) as pool:
            with self.assertRaises(ascope.SQLConnectionError):
                async with pool.acquire():
                    self.fail("acquired")
            self.assertEqual(pool.stat("connect_errors"), 1)
        async with ascope.postgres.create_pool(PG_DSN, max=1) as pool:
            held = asyncio.Event()
            release = asyncio.Event()

            async def holder():
                async with pool.acquire() as db:
                    await db.fetchval("SELECT 1")
                    held.set()
                    await release.wait()
                    return await db.fetchval("SELECT 2")

            t = asyncio.create_task(holder())
            await held.wait()
            # a waiter cancelled (its timeout) leaves the queue, nothing leaked
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async with pool.acquire():
                        self.fail("acquired")
            self.assertEqual(pool.stat("waiting"), 0)
            # closing waits for the connection lent out
            closing = asyncio.ensure_future(pool.close())
            await asyncio.sleep(0)
            self.assertFalse(closing.done())
            release.set()
            self.assertEqual(await t, 2)
            await closing
        self.assertEqual(self.rt.stat("postgres.connections"), 0)

    async def test_statements_are_queued_when_called(self):
        # A statement is queued at the call, not at its first await: the
        # order of the calls is the order on the connection.
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE o (i int)")
            a = db.execute("INSERT INTO o VALUES (1)")
            b = db.fetchval("SELECT count(*) FROM o")
            self.assertEqual(await b, 1)
            await a

    async def test_nested_transactions_and_commit(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE t (v int)")
            async with db.transaction(isolation="serializable"):
                await db.execute("INSERT INTO t VALUES (1)")
                try:
                    async with db.transaction():
                        await db.execute("INSERT INTO t VALUES (2)")
                        await db.execute("INSERT INTO t VALUES ('x')")
                except ascope.SQLError:
                    pass
                await db.execute("INSERT INTO t VALUES (3)")
            self.assertEqual([r[0] for r in await db.fetch("SELECT v FROM t ORDER BY v")], [1, 3])
            async with db.transaction(isolation="repeatable read"):  # SQL's spelling too
                self.assertEqual(await db.fetchval("SHOW transaction_isolation"), "repeatable read")
                with self.assertRaises(ascope.Error) as cm:
                    async with db.transaction(read_only=True):
                        self.fail("a savepoint took options")
                self.assertIn("a savepoint takes no options", str(cm.exception))
            with self.assertRaises(ascope.Error) as cm:
                async with db.transaction(isolation="sometimes"):
                    self.fail("began")
            self.assertIn('bad transaction options "isolation=sometimes"', str(cm.exception))

    async def test_a_transaction_keeps_other_tasks_off_its_connection(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE own (v int)")
            await check_transaction_owns_connection(self, db)

    async def test_a_task_cancelled_while_connecting_ends(self):
        await check_cancelled_while_entering(self, lambda: ascope.postgres.connect(PG_DSN))

    async def test_executemany(self):
        async with ascope.postgres.connect(PG_DSN) as db:
            await db.execute("CREATE TEMP TABLE many (k int PRIMARY KEY, v text)")
            await check_executemany(self, db, "SELECT 1 FROM pg_sleep(30)")

    async def test_cursors_with_the_smallest_prefetch_end(self):
        async with ascope.postgres.connect(PG_DSN, batch=100) as db:
            await check_small_prefetch(self, db, "SELECT g FROM generate_series(1, $1::int) g")

    async def test_a_cursor_left_open_is_closed_by_its_tasks_next_statement(self):
        async with ascope.postgres.connect(PG_DSN, batch=100) as db:
            await check_cursor_left_open(self, db, "SELECT g FROM generate_series(1, $1::int) g")

    async def test_cursor(self):
        async with ascope.postgres.connect(PG_DSN, batch=100) as db:
            total = 0
            async for (g,) in db.cursor("SELECT g FROM generate_series(1, 10000) g", prefetch=200):
                total += g
            self.assertEqual(total, 10000 * 10001 // 2)
            async for (g,) in db.cursor("SELECT g FROM generate_series(1, 1000000) g"):
                if g == 3:
                    break
            self.assertEqual(await db.fetchval("SELECT 9"), 9)


if __name__ == "__main__":
    unittest.main()
