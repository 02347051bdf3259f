"""examples/python/tour.py: the C tour (examples/tour.c) in Python.

Each scene prints what happens as it happens. SQLite and files need no
server; the PostgreSQL and HTTP scenes run when ASCOPE_PG_DSN and
ASCOPE_HTTP_URL are set (scripts/pg-start, scripts/http-start).

    ASCOPE_LIBRARY_PATH=build PYTHONPATH=bindings/python python3 examples/python/tour.py
"""
import asyncio
import os
import tempfile
import time

import ascope

t0 = time.monotonic()


def say(text):
    print(f"  {(time.monotonic() - t0) * 1000:7.1f} ms  {text}")


async def scene_two_uses(dir):
    print("1. async with db, file: acquired in order, released in reverse")
    path = os.path.join(dir, "report.txt")
    async with ascope.sqlite.connect(os.path.join(dir, "app.db")) as db, \
            ascope.open(path, "w", atomic=True) as out:
        say("body: both resources held")
        await db.execute("CREATE TABLE IF NOT EXISTS t (v INTEGER)")
        await db.executemany("INSERT INTO t VALUES ($1)", [(1,), (2,)])  # all or nothing
        n = await db.fetchval("SELECT count(*) FROM t")
        await out.write(f"{n} rows\n")
    with open(path) as f:
        say(f"done: the report was renamed into place: {f.read().strip()!r}")


async def scene_timeout(dir):
    print("2. asyncio.timeout(): the deadline cancels the body, releases still run")
    try:
        async with asyncio.timeout(0.06):
            async with ascope.sqlite.connect(":memory:") as db:
                say("body: starting a statement that never ends, under a 60 ms deadline")
                await db.fetchval("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                                  "SELECT count(*) FROM c")
    except TimeoutError:
        say("done: TimeoutError, after the connection was closed")


async def scene_cancel_child():
    print("3. a cancelled task: its scope alone is cancelled")
    async with ascope.sqlite.connect(":memory:") as db:
        async def child(name, rows):
            async with ascope.scope(name=name):
                q = f"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < {rows}) " \
                    "SELECT count(*) FROM c"
                say(f"child {name}: counted {await db.fetchval(q)}")
        fast = asyncio.create_task(child("fast", 1000))
        slow = asyncio.create_task(child("slow", 10**10))
        await fast
        say("parent: giving up on the slow child")
        slow.cancel()
        try:
            await slow
        except asyncio.CancelledError:
            say("child slow: cancelled; the connection carries on: "
                f"SELECT 1 = {await db.fetchval('SELECT 1')}")


async def scene_rollback():
    print("4. an exception in the block: the transaction rolls back")
    async with ascope.sqlite.connect(":memory:") as db:
        await db.execute("CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER CHECK (balance >= 0))")
        await db.execute("INSERT INTO accounts VALUES ('ann', 100), ('bob', 0)")
        try:
            async with db.transaction():
                await db.execute("UPDATE accounts SET balance = balance + 150 WHERE name = 'bob'")
                await db.execute("UPDATE accounts SET balance = balance - 150 WHERE name = 'ann'")
        except ascope.CheckViolation as e:
            say(f"failed: {e.code}; rolled back")
        say(f"balances: {list(await db.fetch('SELECT name, balance FROM accounts ORDER BY name'))}")


async def scene_postgres(dsn):
    print("5. PostgreSQL: 64 tasks, one connection, pipelined")
    async with ascope.postgres.connect(dsn) as db:
        got = await asyncio.gather(*(db.fetchval("SELECT $1::int * 2", i) for i in range(64)))
        say(f"64 answers, sum {sum(got)}, at most {ascope.runtime().stat('postgres.max_pipeline')} "
            "in flight at once")


async def scene_http(url):
    print("6. HTTP: a session, a streamed body")
    async with ascope.http.Session(base_url=url + "/", timeout=5) as http:
        r = await http.get("static/1k.bin")
        say(f"GET static/1k.bin: {r.status}, {len(r.body)} bytes")
        async with http.get("static/1m.bin") as resp:
            n = sum([len(c) async for c in resp.iter_chunked(64 * 1024)])
        say(f"streamed static/1m.bin: {n} bytes")


async def main():
    with tempfile.TemporaryDirectory() as d:
        await scene_two_uses(d)
        await scene_timeout(d)
        await scene_cancel_child()
        await scene_rollback()
        if os.environ.get("ASCOPE_PG_DSN"):
            await scene_postgres(os.environ["ASCOPE_PG_DSN"])
        if os.environ.get("ASCOPE_HTTP_URL"):
            await scene_http(os.environ["ASCOPE_HTTP_URL"])


if __name__ == "__main__":
    asyncio.run(main())
