import asyncio
import os
import tempfile
import unittest

import ascope
from support import TestCase


class Files(TestCase):
    async def asyncSetUp(self):
        await super().asyncSetUp()
        self.dir = tempfile.TemporaryDirectory()
        self.path = os.path.join(self.dir.name, "f.txt")

    async def asyncTearDown(self):
        await super().asyncTearDown()
        self.dir.cleanup()

    async def test_write_read_iterate(self):
        async with ascope.open(self.path, "w") as f:
            self.assertEqual(await f.write("hello "), 6)
            await f.write(b"world")
            await f.sync()
        async with ascope.open(self.path) as f:
            self.assertEqual(await f.read(), b"hello world")
            self.assertEqual(await f.read(5, 0), b"hello")
            self.assertEqual([c async for c in f.iter_chunked(4)], [b"hell", b"o wo", b"rld"])

    async def test_atomic_replace(self):
        with open(self.path, "w") as f:
            f.write("old")
        async with ascope.open(self.path, "w", atomic=True) as f:
            await f.write("new")
            with open(self.path) as g:
                self.assertEqual(g.read(), "old", "replaced before the block ended")
        with open(self.path) as g:
            self.assertEqual(g.read(), "new")
        with self.assertRaises(ValueError):
            async with ascope.open(self.path, "w", atomic=True) as f:
                await f.write("half")
                raise ValueError
        with self.assertRaises(TimeoutError):
            async with asyncio.timeout(0.01):
                async with ascope.open(self.path, "w", atomic=True) as f:
                    await f.write("late")
                    await asyncio.sleep(10)
        with open(self.path) as g:
            self.assertEqual(g.read(), "new")
        self.assertEqual(os.listdir(self.dir.name), ["f.txt"], "a temporary file was left")

    async def test_errors(self):
        with self.assertRaises(ascope.FileError) as cm:
            async with ascope.open(os.path.join(self.dir.name, "missing")):
                self.fail("opened")
        self.assertIsInstance(cm.exception, OSError)
        self.assertEqual((cm.exception.driver, cm.exception.code), ("file", "ENOENT"))
        self.assertEqual(cm.exception.errno, 2)
        self.assertEqual(cm.exception.filename, os.path.join(self.dir.name, "missing"))
        with self.assertRaises(ValueError) as bad:  # as open() says it
            async with ascope.open(self.path, "q"):
                self.fail("opened")
        self.assertIn("invalid mode 'q'", str(bad.exception))
        with open(self.path, "w") as f:
            f.write("x")
        with self.assertRaises(ascope.FileError) as cm:
            async with ascope.open(self.path, "x"):
                self.fail("opened")
        self.assertEqual(cm.exception.code, "EEXIST")
        async with ascope.open(self.path, "r") as f:
            with self.assertRaises(ascope.FileError):
                await f.write("not writable")
            self.assertEqual(await f.read(), b"x")  # the file carries on

    async def test_large_stream_bounded(self):
        with open(self.path, "wb") as f:
            f.write(os.urandom(1 << 22))
        for chunk in (1 << 12, 1 << 16):  # the driver's stream; reads into the chunks
            n = 0
            async with ascope.open(self.path) as f:
                it = f.iter_chunked(chunk, prefetch=4)
                async for c in it:
                    n += len(c)
                    waiting = it._slots if hasattr(it, "_slots") else it._items
                    self.assertLessEqual(len(waiting), 4 + 1)
            self.assertEqual(n, 1 << 22)

    async def test_chunks_read_ahead_match_the_file(self):
        from ascope import files
        chunk = 1 << 16
        for size in (0, 1, chunk - 1, chunk, 3 * chunk, 5 * chunk + 123):
            data = os.urandom(size)
            with open(self.path, "wb") as f:
                f.write(data)
            async with ascope.open(self.path) as f:
                it = f.iter_chunked(chunk)
                if files._fresh_bytes is not None:
                    self.assertIsInstance(it, files._ReadAhead)
                got = [c async for c in it]
            self.assertEqual(b"".join(got), data, f"size {size}")
            self.assertTrue(all(type(c) is bytes for c in got))
            self.assertTrue(all(len(c) == chunk for c in got[:-1]), f"size {size}")
        # Leaving early: the reads still in flight finish inside the block,
        # and the file carries on.
        async with ascope.open(self.path) as f:
            async for c in f.iter_chunked(chunk):
                break
            self.assertEqual(await f.read(5), data[:5])
        self.assertEqual(c, data[:chunk])

    @unittest.skipUnless(os.path.exists("/proc/self/mem"), "needs Linux's /proc/self/mem")
    async def test_a_failing_read_in_a_chunked_read_raises_and_leaks_nothing(self):
        # /proc/self/mem fails every read at offset 0 (nothing is mapped
        # there) with EIO: a real read error, with several reads in flight
        # on the read-ahead path. Each path raises it once, and the reads
        # still in flight end inside the block, leaving nothing registered.
        from ascope import _core
        before = len(_core._objs)
        for chunk in (1 << 12, 1 << 16):  # the driver's stream; the read-ahead
            got = []
            async with ascope.open("/proc/self/mem") as f:
                with self.assertRaises(ascope.FileError) as cm:
                    async for c in f.iter_chunked(chunk):
                        got.append(c)
                self.assertEqual(cm.exception.code, "EIO", chunk)
                self.assertEqual(got, [])
            self.assertEqual(len(_core._objs), before, f"chunk {chunk}: a read left registered")


if __name__ == "__main__":
    unittest.main()
