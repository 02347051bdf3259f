import asyncio
import gc
import os
import subprocess
import sys
import tempfile
import unittest

import ascope
from ascope import _core, _lib
from support import TestCase, Trace, fds, rss_kib


class Scopes(TestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.dir = tempfile.TemporaryDirectory()

    async def asyncTearDown(self):
        await super().asyncTearDown()
        self.dir.cleanup()

    async def _nest(self, fail):
        p = os.path.join(self.dir.name, "out.txt")
        lock = ascope.Lock()
        async with lock:
            async with ascope.open(p, "w", atomic=True) as f:
                async with ascope.sqlite.connect(":memory:") as db:
                    async with db.transaction():
                        await f.write("x")
                        await db.execute("CREATE TABLE t (v int)")
                        if fail == "raise":
                            raise LookupError("in the block")
                        if fail == "cancel":
                            asyncio.current_task().cancel()
                            await asyncio.sleep(1)
                        if fail == "sql":
                            await db.execute("SELEC")

    async def test_released_exactly_once_in_reverse_order(self):
        for fail, exc in ((None, None), ("raise", LookupError), ("cancel", asyncio.CancelledError),
                          ("sql", ascope.SyntaxError)):
            with self.subTest(fail=fail):
                tr = Trace(self.rt)
                try:
                    if exc is None:
                        await self._nest(fail)
                    else:
                        with self.assertRaises(exc):
                            await self._nest(fail)
                        if exc is asyncio.CancelledError:
                            asyncio.current_task().uncancel()
                finally:
                    tr.close()
                acquired, released = tr.acquired(), tr.releases()
                drivers = [d for _, _, d in acquired]
                self.assertEqual(drivers, ["lock", "file", "sqlite", "sqlite"])
                self.assertEqual(sorted(released), sorted(acquired), "each use released once")
                self.assertEqual(released, list(reversed(acquired)), "in reverse order")

    async def test_errors_reach_the_caller_after_the_release(self):
        # The exception surfaces only once everything was released.
        seen = []
        try:
            async with ascope.sqlite.connect(":memory:") as db:
                async with db.transaction():
                    raise KeyError("x")
        except KeyError:
            seen.append(self.rt.stat("scopes_live") - self.live0)
        self.assertEqual(seen, [0])

    async def test_release_error_is_attached(self):
        # COMMIT fails on a deferred constraint: the block succeeded, the
        # release raises; with an exception in the block it rides on it.
        async with ascope.sqlite.connect(":memory:", foreign_keys=True) as db:
            await db.execute("CREATE TABLE p (id INTEGER PRIMARY KEY)")
            await db.execute("CREATE TABLE c (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED)")
            with self.assertRaises(ascope.Error) as cm:
                async with db.transaction():
                    await db.execute("INSERT INTO c VALUES (7)")
            self.assertEqual(cm.exception.driver, "sqlite")
            self.assertIn("FOREIGN KEY", str(cm.exception))

    async def test_scope_timeout_and_cancel(self):
        with self.assertRaises(ascope.TimeoutError):
            async with ascope.scope(timeout=0.01):
                async with ascope.sqlite.connect(":memory:") as db:
                    await db.fetchval("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                      "SELECT count(*) FROM c")

    async def test_an_unknown_counter_is_a_key_error(self):
        self.assertGreaterEqual(ascope.runtime().stat("scopes_live"), 0)
        with self.assertRaises(KeyError):
            ascope.runtime().stat("no such counter")

    async def test_a_scope_deadline_reaches_any_await_in_its_block(self):
        # As asyncio.timeout's: not only ascope's work, an asyncio.sleep too.
        t0 = asyncio.get_running_loop().time()
        with self.assertRaises(ascope.TimeoutError) as cm:
            async with ascope.scope(timeout=0.05):
                await asyncio.sleep(30)
        self.assertLess(asyncio.get_running_loop().time() - t0, 10)
        self.assertIsInstance(cm.exception, TimeoutError)
        self.assertIsInstance(cm.exception.__cause__, asyncio.CancelledError)
        self.assertEqual(asyncio.current_task().cancelling(), 0, "the cancellation was taken back")
        async with ascope.scope(timeout=30):  # a block that ends in time: nothing raised
            await asyncio.sleep(0)
        outer = ascope.scope(timeout=0.05)
        with self.assertRaises(ascope.TimeoutError):  # the outer deadline's, through the inner
            async with outer:
                async with ascope.scope(timeout=30):
                    await asyncio.sleep(30)
        self.assertEqual(asyncio.current_task().cancelling(), 0)

        async def cancelled_from_outside():
            async with ascope.scope(timeout=30):
                started.set()
                await asyncio.sleep(30)

        started = asyncio.Event()
        task = asyncio.ensure_future(cancelled_from_outside())
        await started.wait()
        task.cancel()
        with self.assertRaises(asyncio.CancelledError):  # not a TimeoutError: not ours
            await task

    async def test_an_idle_runtime_lets_the_loop_sleep(self):
        # Once nothing is pending, libuv says "do not block" (its timeout 0)
        # only because nothing keeps it alive: running it again at once, each
        # turn, would spin the asyncio loop at full CPU for good.
        async with ascope.scope():
            pass
        for _ in range(3):
            await asyncio.sleep(0.01)
        self.assertFalse(self.rt._soon, "the runtime asks to run on every turn of the loop")

    async def test_one_run_of_libuv_is_queued_at_a_time(self):
        # A run from the reader (or a timer) between a kick and its turn
        # leaves that kick's run queued: a second kick must not queue
        # another. Once each run queued a new one, a busy loop ran libuv
        # several times a turn for nothing, and sent statements in rounds
        # of a few instead of all the turn's.
        rt = self.rt
        runs = []
        real = rt._run
        rt._run = lambda: (runs.append(1), real())
        try:
            for _ in range(3):
                await asyncio.sleep(0)  # whatever was queued before runs out
            runs.clear()
            rt.kick()
            rt._run()  # as the reader would, in between
            rt.kick()
            rt.kick()
            for _ in range(3):
                await asyncio.sleep(0)
            self.assertEqual(len(runs), 2, "a kick queued a second run")
        finally:
            del rt._run

    async def test_stale_handle_is_harmless(self):
        sc = _core.Scope(self.rt)
        await sc.enter()
        await sc.exit(None)
        self.assertIsNone(sc.live_handle())
        s2 = _core.Scope(self.rt)
        await s2.enter()
        # the old object's cancel no longer reaches anything, even when the
        # new scope sits in the same memory
        old = _core.Scope.__new__(_core.Scope)
        old.s, old.gen, old.rt = s2.s, s2.gen - 1, self.rt
        old.cancel()
        await s2.exit(None)
        self.assertEqual(s2.status, 0)

    async def test_semaphore_and_lock(self):
        sem = ascope.Semaphore(2)
        inside = 0
        most = 0

        async def worker():
            nonlocal inside, most
            async with sem:
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                inside -= 1

        await asyncio.gather(*(worker() for _ in range(8)))
        self.assertEqual(most, 2)

    async def test_no_leak_over_100000_scopes(self):
        asyncio.get_running_loop().set_debug(False)  # debug mode keeps a traceback per handle
        lock = ascope.Lock()

        async def batch(n):
            for _ in range(n):
                async with ascope.scope():
                    pass
            for _ in range(n // 10):
                async with lock:
                    pass

        await batch(10000)  # warm the caches
        gc.collect()
        rss, nfd, objs = rss_kib(), fds(), len(_core._objs)
        await batch(100000)
        gc.collect()
        self.assertEqual(fds(), nfd)
        self.assertEqual(len(_core._objs), objs)
        self.assertLess(rss_kib() - rss, 4096, "memory grew by more than 4 MiB")


class Library(unittest.TestCase):
    def test_status_codes_by_name(self):
        self.assertEqual(_core.ECANCELED, _core.lib.ascope_err_value(b"ECANCELED"))
        self.assertEqual(_core.EDRIVER, -30001)
        self.assertEqual(_core.status_name(_core.ETIMEDOUT), "ETIMEDOUT")

    def test_each_library_loads_on_its_own(self):
        # Fresh processes: a driver library dlopen()ed alone finds the core
        # and the SQL layer through its own DT_NEEDED and run path.
        _lib.core()
        for key in ("sqlite", "postgres", "http", "file"):
            path = _lib.searched.get(key, [None])[-1] or _lib.driver(key) and _lib.searched[key][-1]
            code = f"import ctypes; l = ctypes.CDLL({path!r}); print(bool(l.ascope_version))"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
            self.assertEqual(out.returncode, 0, out.stderr)

    def test_missing_library_is_reported(self):
        code = ("import os; os.environ['ASCOPE_LIBRARY_PATH'] = '/nonexistent';"
                "from ascope import _lib; _lib._candidates = lambda k: ['/nonexistent/libx.so'];"
                "\ntry:\n  _lib.core()\nexcept _lib.LibraryNotFound as e: print(e)")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)))
        self.assertIn("ASCOPE_LIBRARY_PATH", out.stdout)
        self.assertIn("cannot load", out.stdout)


if __name__ == "__main__":
    unittest.main()
