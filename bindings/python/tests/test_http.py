import asyncio
import unittest

import ascope
from support import FAULT_URL, HTTP_URL, TestCase, need_http


@need_http
class HTTP(TestCase):
    async def test_get_status_and_headers(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/") as http:
            r = await http.get("static/1k.bin")
            self.assertEqual((r.status, len(r.body)), (200, 1024))
            self.assertEqual(r.headers["content-length"], "1024")
            self.assertEqual(await r.read(), r.body)
            r = await http.get("no/such/thing")
            self.assertEqual(r.status, 404)
            self.assertFalse(r.ok)
            with self.assertRaises(ascope.HTTPStatusError) as cm:
                r.raise_for_status()
            self.assertEqual(cm.exception.status_code, 404)
            self.assertEqual(r.url, HTTP_URL + "/no/such/thing", "resolved against base_url")
            self.assertIn(f"GET {HTTP_URL}/no/such/thing: HTTP 404", str(cm.exception))
            with self.assertRaises(ValueError):
                await http.get("static/1k.bin", headers={"X-Split": "a\r\nX-Injected: 1"})
            with self.assertRaises(ValueError):
                await http.get("static/1k.bin\x00/other")
            self.assertEqual((await http.get("static/1k.bin")).status, 200, "the session goes on")
            with self.assertRaises(ascope.HTTPStatusError) as cm:
                await http.get("no/such/thing", raise_for_status=True)
            self.assertEqual((cm.exception.status_code, cm.exception.code), (404, "404"))
            self.assertEqual(cm.exception.response.status, 404)

    async def test_url_is_the_final_one_after_redirects_and_has_no_password(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/") as http:
            r = await http.get("r/3")  # 302 to r/2, to r/1, to static/1k.bin
            self.assertEqual((r.status, r.url), (200, HTTP_URL + "/static/1k.bin"))
            r = await http.get("r/3", max_redirects=0)
            self.assertEqual((r.status, r.url), (302, HTTP_URL + "/r/3"))
            async with http.get("r/2") as resp:  # streamed: from the head on
                self.assertEqual(resp.url, HTTP_URL + "/static/1k.bin")
                self.assertEqual(len(await resp.read()), 1024)
            secret = HTTP_URL.replace("://", "://alice:s3cret@")
            for url in (secret + "/static/1k.bin", secret + "/no/such/thing"):
                r = await http.get(url)
                self.assertNotIn("s3cret", r.url)
                self.assertNotIn("alice", r.url)
                if r.status >= 400:
                    with self.assertRaises(ascope.HTTPStatusError) as cm:
                        r.raise_for_status()
                    self.assertNotIn("s3cret", str(cm.exception))
            # failed before any head: the error's response shows no password either
            with self.assertRaises(ascope.Error) as cm:
                async with http.get(FAULT_URL.replace("://", "://alice:s3cret@") + "/hang",
                                    timeout=0.1):
                    pass
            self.assertNotIn("s3cret", str(cm.exception))
            resp = getattr(cm.exception, "response", None)
            self.assertNotIn("s3cret", resp.url if resp is not None else "")

    async def test_a_loop_left_early_loses_nothing_for_the_next_reader(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/") as http:
            want = (await http.get("static/1m.bin")).body
            self.assertEqual(len(want), 1 << 20)
            async with http.get("static/1m.bin") as resp:
                async for first in resp.iter_chunked(4096):
                    break
                self.assertEqual(first + await resp.read(), want)
            async with http.get("static/1m.bin") as resp:
                got = b""
                async for c in resp.iter_chunked(1000):
                    got += c
                    if len(got) >= 3000:
                        break
                async for c in resp.iter_chunked(7777):
                    got += c
                self.assertEqual(got, want)

    async def test_post_echo(self):
        async with ascope.http.Session() as http:
            with self.assertRaises(ValueError):  # relative, and no base_url to resolve it
                http.get("static/1k.bin")
            r = await http.post(FAULT_URL + "/echo", b"hello body", headers={"X-Test": "1"})
            self.assertEqual(r.status, 200)
            self.assertIn(b"hello body", r.body)

    async def test_timeout(self):
        async with ascope.http.Session(timeout=10) as http:
            with self.assertRaises(ascope.HTTPTimeout) as cm:
                await http.get(FAULT_URL + "/hang", timeout=0.1)
            self.assertIsInstance(cm.exception, TimeoutError)
            self.assertEqual(cm.exception.code, "CURLE_OPERATION_TIMEDOUT")
            # the session carries on
            self.assertEqual((await http.get(HTTP_URL + "/static/1k.bin")).status, 200)

    async def test_size_limit(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/", max_response_bytes=4096) as http:
            with self.assertRaises(ascope.HTTPTooLarge):
                await http.get("static/1m.bin")
            with self.assertRaises(ascope.HTTPTooLarge):
                async with http.get("static/1m.bin") as resp:
                    async for _ in resp.iter_chunked(1024):
                        pass
            self.assertEqual(len((await http.get("static/1k.bin")).body), 1024)

    async def test_connect_refused(self):
        async with ascope.http.Session() as http:
            with self.assertRaises(ascope.HTTPConnectionError):
                await http.get("http://127.0.0.1:1/")

    async def test_streamed_body_with_back_pressure(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/") as http:
            async with http.get("static/1m.bin") as resp:
                self.assertEqual(resp.status, 200)
                sizes = [len(c) async for c in resp.iter_chunked(10000)]
            self.assertEqual(sum(sizes), 1 << 20)
            self.assertTrue(all(s == 10000 for s in sizes[:-1]))
            # leaving early stops the transfer of 64 MiB
            async with http.get("static/64m.bin") as resp:
                async for chunk in resp.iter_chunked(4096):
                    break
                self.assertLessEqual(resp._held, resp._high + (1 << 20))

    async def test_concurrent_and_cancelled(self):
        async with ascope.http.Session(base_url=HTTP_URL + "/") as http:
            rs = await asyncio.gather(*(http.get("static/1k.bin") for _ in range(64)))
            self.assertTrue(all(r.status == 200 and len(r.body) == 1024 for r in rs))
            async def hang():
                return await http.get(FAULT_URL + "/hang")
            t = asyncio.create_task(hang())
            async with asyncio.timeout(30):
                while self.rt.stat("http.active") == 0:  # until it is on the wire
                    await asyncio.sleep(0.001)
            t.cancel()
            with self.assertRaises(asyncio.CancelledError):
                await t
            with self.assertRaises(TimeoutError):
                async with asyncio.timeout(0.05):
                    await http.get(FAULT_URL + "/hang")
            # Both requests are cancelled in C, not left to hang: each gives
            # its connection back (a hang would hold one for good).
            async with asyncio.timeout(30):
                while self.rt.stat("http.active") or self.rt.stat("http.waiting"):
                    await asyncio.sleep(0.001)
            self.assertEqual((await http.get("static/1k.bin")).status, 200)


if __name__ == "__main__":
    unittest.main()
