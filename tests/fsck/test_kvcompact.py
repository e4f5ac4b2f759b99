"""
kvcompact against data directories written by a real kvd (127.0.0.1 only):
it shrinks a directory full of overwrites, deletes and expired keys, and a
kvd restarted on it returns exactly the same key/value set; it refuses to
run while kvd holds the directory; kvfsck is clean afterwards.

Binaries: $KVD_BIN, $KVCOMPACT_BIN, $KVFSCK_BIN (CTest sets them).
    /usr/bin/python3 -m unittest -v test_kvcompact
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

from kvdtest import KvdServer  # noqa: E402


def binary(var, rel):
    b = os.environ.get(var) or os.path.join(SRC, "build", "test", rel)
    if not os.path.exists(b):
        raise unittest.SkipTest("%s not found (set %s)" % (b, var))
    return b


def run(args, timeout=120):
    e = dict(os.environ)
    e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=e)
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in p.stderr, p.stderr
    return p


def dir_bytes(d):
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".seg"))


class TestKvcompact(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="kvcompact-test-")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def kvd(self, d, extra=()):
        s = KvdServer(["--segment-size", "65536", "--compact-dead-ratio", "0"] + list(extra), datadir=d,
                      workdir=tempfile.mkdtemp(prefix="kvd-", dir=self.tmp))
        self.servers.append(s)
        s.start()
        return s

    def snapshot(self, c):
        keys = sorted(c.keys("*"))
        return {k: (c.get(k), c.pttl(k) > 0) for k in keys}

    def test_shrinks_a_churned_directory_and_keeps_every_key(self):
        d = os.path.join(self.tmp, "data")
        s = self.kvd(d)
        c = s.client()
        for i in range(3000):
            k = "k%d" % (i % 50)
            if i % 10 == 3:
                c.delete(k)
            elif i % 10 == 7:
                c.mset({k: "m%d" % i, "k%d" % ((i + 1) % 50): "m%d" % i})
            else:
                c.set(k, "v%d-" % i + "x" * 200)
        for i in range(20):
            c.set("gone%d" % i, "x" * 100, px=50)   # expire before the compaction
            c.set("kept%d" % i, "y" * 100, ex=3600)  # keep their TTL
        time.sleep(0.2)
        want = self.snapshot(c)
        c.close()
        self.assertEqual(0, s.stop())
        before = dir_bytes(d)

        p = run([binary("KVCOMPACT_BIN", "fsck/kvcompact"), d])
        self.assertEqual(0, p.returncode, p.stderr)
        self.assertIn("compacted", p.stdout)
        after = dir_bytes(d)
        self.assertLess(after, before // 3, (before, after))

        f = run([binary("KVFSCK_BIN", "fsck/kvfsck"), d])
        self.assertEqual(0, f.returncode, f.stdout + f.stderr)

        s2 = self.kvd(d)
        c = s2.client()
        self.assertEqual(want, self.snapshot(c))
        for i in range(20):
            self.assertEqual(-2, c.pttl("gone%d" % i))
            self.assertGreater(c.ttl("kept%d" % i), 3000)
        c.set("after", "compaction")
        c.close()
        self.assertEqual(0, s2.stop())
        # A second run has nothing left to drop and changes nothing.
        p = run([binary("KVCOMPACT_BIN", "fsck/kvcompact"), d])
        self.assertEqual(0, p.returncode, p.stderr)

    def test_segment_left_by_a_crash_after_the_rename_is_superseded(self):
        # The window between the output's rename and the unlink of the
        # older inputs: an input still beside the output that replaces it.
        d = os.path.join(self.tmp, "data")
        s = self.kvd(d)
        c = s.client()
        for i in range(2000):
            c.set("k%d" % (i % 30), "v%d-" % i + "x" * 200)
        want = self.snapshot(c)
        c.close()
        self.assertEqual(0, s.stop())
        first = os.path.join(d, "0000000001.seg")
        saved = os.path.join(self.tmp, "first.seg")
        shutil.copyfile(first, saved)
        self.assertEqual(0, run([binary("KVCOMPACT_BIN", "fsck/kvcompact"), d]).returncode)
        self.assertFalse(os.path.exists(first))
        shutil.copyfile(saved, first)
        f = run([binary("KVFSCK_BIN", "fsck/kvfsck"), d])
        self.assertEqual(0, f.returncode, f.stdout + f.stderr)
        self.assertIn("0000000001.seg", f.stdout)  # listed, not checked
        s2 = self.kvd(d)
        c = s2.client()
        self.assertEqual(want, self.snapshot(c))
        c.close()
        self.assertEqual(0, s2.stop())
        self.assertFalse(os.path.exists(first))  # recovery removed it

    def test_refuses_while_kvd_holds_the_directory(self):
        d = os.path.join(self.tmp, "data")
        s = self.kvd(d)
        c = s.client()
        c.set("a", "1")
        p = run([binary("KVCOMPACT_BIN", "fsck/kvcompact"), d])
        self.assertEqual(1, p.returncode)
        self.assertIn("in use by another process", p.stderr)
        self.assertEqual(b"1", c.get("a"))
        c.close()
        self.assertEqual(0, s.stop())

    def test_usage_errors(self):
        b = binary("KVCOMPACT_BIN", "fsck/kvcompact")
        self.assertEqual(2, run([b]).returncode)
        self.assertEqual(2, run([b, "--bogus", "x"]).returncode)
        h = run([b, "--help"])
        self.assertEqual(0, h.returncode)
        self.assertIn("Exit codes", h.stdout)
        self.assertEqual(1, run([b, os.path.join(self.tmp, "missing")]).returncode)

    def test_online_compaction_under_concurrent_writers_loses_nothing(self):
        d = os.path.join(self.tmp, "data")
        s = self.kvd(d)
        import threading
        model = {}
        lock = threading.Lock()
        errors = []

        def writer(t):
            c = s.client()
            try:
                for i in range(1500):
                    k = "t%d:%d" % (t, i % 40)
                    v = "%d:%d:" % (t, i) + "z" * (i % 300)
                    c.set(k, v)
                    with lock:
                        model[k] = v.encode()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                c.close()

        threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        c = s.client()
        started = 0
        deadline = time.time() + 60
        while any(t.is_alive() for t in threads) and time.time() < deadline:
            try:
                r = c.execute_command("COMPACT")
                started += r in ("Background compaction started", b"Background compaction started")
            except Exception as e:  # noqa: BLE001 - redis-py raises the error reply
                self.assertIn("already in progress", str(e))
            time.sleep(0.05)
        for t in threads:
            t.join(60)
        self.assertEqual([], errors)
        self.assertGreater(started, 2)
        for k, v in model.items():
            self.assertEqual(v, c.get(k), k)
        info = c.info("persistence")
        self.assertGreaterEqual(info["compactions"], 1)
        c.close()
        self.assertEqual(0, s.stop())
        s2 = self.kvd(d)
        c = s2.client()
        for k, v in model.items():
            self.assertEqual(v, c.get(k), k)
        c.close()
        self.assertEqual(0, s2.stop())
        f = run([binary("KVFSCK_BIN", "fsck/kvfsck"), d])
        self.assertEqual(0, f.returncode, f.stdout + f.stderr)


if __name__ == "__main__":
    unittest.main()
