"""examples/python/tour.py runs to its end and says what the docs say it
says, and the tour in docs/bindings/python.md runs as it is written: each
in a process of its own, as a user runs it, with the environment these
tests have (the servers' addresses, the library path)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import unittest

from support import HTTP_URL, LOOP, PG_DSN

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
TOUR = os.path.join(ROOT, "examples", "python", "tour.py")
GUIDE = os.path.join(ROOT, "docs", "bindings", "python.md")


@unittest.skipIf(LOOP != "asyncio", "the tour runs on asyncio's own loop; once is enough")
class TestTour(unittest.TestCase):
    def run_tour(self, **env_changes: str) -> str:
        env = dict(os.environ)
        env.update(env_changes)
        for k, v in env_changes.items():
            if v == "":
                del env[k]
        p = subprocess.run([sys.executable, TOUR], env=env, capture_output=True, text=True,
                           timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        return p.stdout

    def test_the_scenes_without_servers(self) -> None:
        out = self.run_tour(ASCOPE_PG_DSN="", ASCOPE_HTTP_URL="")
        self.assertIn("renamed into place: '2 rows'", out)
        self.assertIn("done: TimeoutError, after the connection was closed", out)
        self.assertIn("child fast: counted 1000", out)
        self.assertIn("child slow: cancelled; the connection carries on: SELECT 1 = 1", out)
        self.assertIn("failed: SQLITE_CONSTRAINT_CHECK; rolled back", out)
        self.assertIn("balances: [('ann', 100), ('bob', 0)]", out)
        self.assertNotIn("5. PostgreSQL", out)
        self.assertNotIn("6. HTTP", out)

    @unittest.skipUnless(PG_DSN and HTTP_URL, "the servers are not up (scripts/test starts them)")
    def test_the_scenes_with_servers(self) -> None:
        out = self.run_tour()
        self.assertIn("64 answers, sum 4032", out)
        self.assertIn("GET static/1k.bin: 200, 1024 bytes", out)
        self.assertIn("streamed static/1m.bin: 1048576 bytes", out)


@unittest.skipIf(LOOP != "asyncio", "the guide's tour runs on asyncio's own loop")
@unittest.skipUnless(PG_DSN and HTTP_URL, "the servers are not up (scripts/test starts them)")
class TestGuide(unittest.TestCase):
    def test_the_guides_tour_runs_as_written(self) -> None:
        with open(GUIDE) as f:
            code = re.search(r"## The tour, in Python.*?```python\n(.*?)```", f.read(), re.S).group(1)
        with tempfile.TemporaryDirectory() as d:
            p = subprocess.run([sys.executable, "-c", code], cwd=d, capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(p.stderr, "")
            with open(os.path.join(d, "report.txt")) as f:
                self.assertEqual(f.read(), "2 rows\n")


if __name__ == "__main__":
    unittest.main()
