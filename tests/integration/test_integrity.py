"""
Integrity of a running kvd's data directory, with the real binaries:

- a media error under a mapped segment is an I/O error for that request,
  not the end of kvd: a sealed segment cut short under the running kvd
  (os.truncate) makes GET of a record past the cut answer an error, on
  the I/O thread that reads it, while kvd serves every other key; INFO
  shows the bad segment and the log names it once, with kvfsck;
- expiry is durable: a key that clients saw expire, on access or by the
  active sweep, stays gone after a restart with the clock set back
  (KVD_TEST_CLOCK_OFFSET_MS, a test-only hook that shifts the store's
  clock), and INFO's expired_keys counts each key once;
- the directory lock cannot be sidestepped: with kvd running and LOCK
  deleted, a second kvd, kvcompact and kvfsck --repair on the same
  directory all refuse, and create no LOCK file.

Binaries: $KVD_BIN, $KVFSCK_BIN, $KVCOMPACT_BIN (CTest sets them), else the
build tree's. Every kvd listens on 127.0.0.1 on a free port and is stopped
by tearDown.
"""
import os
import subprocess
import time
import unittest

import redis

from kvdtest import SRC, KvdServer, KvdTestCase, _env, wait_until


def info_fields(r, section):
    """INFO section as {field: text}."""
    return {k: str(v) for k, v in r.info(section).items()}


def tool_bin(env, name):
    b = os.environ.get(env) or os.path.join(SRC, "build", "fsck", name)
    if not os.path.exists(b):
        raise unittest.SkipTest("%s not found at %s (set %s)" % (name, b, env))
    return b


class TestMediaErrors(KvdTestCase):

    VALUE = b"v" * 1000

    def test_truncated_sealed_segment_answers_ioerr_and_kvd_lives(self):
        srv = self.start_server(["--segment-size", "64kb", "--io-threads", "2"])
        r = self.client(srv)
        for i in range(100):
            r.set("key:%05d" % i, self.VALUE)
        self.assertGreaterEqual(int(info_fields(r, "persistence")["segments"]), 2)
        seg1 = os.path.join(srv.dir, "0000000001.seg")
        with open(seg1, "rb") as f:
            data = f.read()
        self.assertGreater(len(data), 32768)  # sealed at about 64 KiB

        def offset(i):
            return data.find(b"key:%05d" % i)

        # Reads go through the segment's mapping: read every key once first,
        # so the pages are mapped and cached before the cut.
        for i in range(100):
            self.assertEqual(self.VALUE, r.get("key:%05d" % i))
        cut = 8192
        near = [i for i in range(100) if 0 < offset(i) and offset(i) + 1100 < cut]
        far = [i for i in range(100) if offset(i) > cut + 100]
        later = [i for i in range(100) if offset(i) < 0]  # in segment 2 or later
        self.assertTrue(near and far and later, (near, far, later))
        os.truncate(seg1, cut)

        with self.assertRaises(redis.ResponseError) as e:
            r.get("key:%05d" % far[-1])
        self.assertIn("IOERR", str(e.exception))
        with self.assertRaises(redis.ResponseError):
            r.get("key:%05d" % far[0])  # a second bad read: still an error
        # kvd lives and serves the other keys.
        self.assertTrue(srv.running())
        self.assertTrue(r.ping())
        self.assertEqual(self.VALUE, r.get("key:%05d" % near[0]))
        self.assertEqual(self.VALUE, r.get("key:%05d" % later[-1]))
        r.set("after", "ok")
        self.assertEqual(b"ok", r.get("after"))

        p = info_fields(r, "persistence")
        self.assertEqual("1", p["segments_bad"])
        self.assertEqual("0000000001.seg", p["segment_bad_last"])
        self.assertGreater(int(p["segment_bad_last_offset"]), cut)

        def logged():
            return "media error reading %s" % seg1 in srv.read_log()
        self.assertTrue(wait_until(logged, timeout=5.0), srv.read_log()[-3000:])
        log = srv.read_log()
        self.assertEqual(1, log.count("media error reading"), log[-3000:])
        self.assertIn("kvfsck %s" % srv.dir, log)


class TestDurableExpiry(KvdTestCase):

    BACK_MS = "-600000"  # ten minutes earlier: every PX 200 key is live again by the clock

    def restart_with_clock_back(self, srv):
        self.assertEqual(0, srv.stop())
        old = os.environ.get("KVD_TEST_CLOCK_OFFSET_MS")
        os.environ["KVD_TEST_CLOCK_OFFSET_MS"] = self.BACK_MS
        try:
            srv.start()
        finally:
            if old is None:
                del os.environ["KVD_TEST_CLOCK_OFFSET_MS"]
            else:
                os.environ["KVD_TEST_CLOCK_OFFSET_MS"] = old
        self.assertIn("KVD_TEST_CLOCK_OFFSET_MS=%s" % self.BACK_MS, srv.read_log())
        return self.client(srv)

    def test_key_seen_expired_on_access_stays_gone(self):
        # hz 1: the sweep comes at most once a second; the GET comes first.
        srv = self.start_server(["--hz", "1"])
        r = self.client(srv)
        r.set("k", "v", px=200)
        r.set("keep", "v")
        time.sleep(0.3)
        self.assertIsNone(r.get("k"))
        self.assertTrue(wait_until(lambda: info_fields(r, "persistence")["expiry_tombstones"] == "1", timeout=5.0),
                        info_fields(r, "persistence"))
        self.assertEqual(1, r.dbsize())
        self.assertEqual("1", info_fields(r, "stats")["expired_keys"])
        r = self.restart_with_clock_back(srv)
        self.assertIsNone(r.get("k"))
        self.assertEqual(0, r.exists("k"))
        self.assertEqual(b"v", r.get("keep"))
        self.assertEqual(1, r.dbsize())

    def test_keys_removed_by_the_sweep_stay_gone(self):
        srv = self.start_server(["--hz", "50"])
        r = self.client(srv)
        with r.pipeline(transaction=False) as p:
            for i in range(20):
                p.set("sw:%d" % i, "v", px=200)
            p.set("keep", "v")
            p.execute()
        # Nobody reads them: only the active sweep can remove them.
        self.assertTrue(wait_until(lambda: info_fields(r, "persistence")["expiry_tombstones"] == "20", timeout=5.0),
                        info_fields(r, "persistence"))
        self.assertEqual(1, r.dbsize())
        self.assertEqual("20", info_fields(r, "stats")["expired_keys"])
        r = self.restart_with_clock_back(srv)
        self.assertEqual(1, r.dbsize())
        self.assertIsNone(r.get("sw:0"))
        self.assertEqual(b"v", r.get("keep"))


class TestDirectoryLock(KvdTestCase):

    def test_deleting_lock_does_not_let_a_second_owner_in(self):
        srv = self.start_server()
        r = self.client(srv)
        r.set("k", "v")
        lock = os.path.join(srv.dir, "LOCK")
        self.assertTrue(os.path.exists(lock))
        os.unlink(lock)

        # A second kvd on the same directory (another port) refuses.
        second = KvdServer(datadir=srv.dir)
        self._servers.append(second)
        second.start(wait=False)
        rc = second.wait_exit(timeout=20)
        self.assertNotEqual(0, rc)
        out = second.read_log() + second.read_stderr()
        self.assertIn("data directory is in use", out)

        # A repairing kvfsck refuses (exit 8) and changes nothing.
        p = subprocess.run([tool_bin("KVFSCK_BIN", "kvfsck"), "--repair", "--yes", srv.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=_env(), timeout=60, text=True)
        self.assertEqual(8, p.returncode, p.stdout + p.stderr)
        self.assertIn("is in use", p.stderr)

        # kvcompact refuses too.
        p = subprocess.run([tool_bin("KVCOMPACT_BIN", "kvcompact"), srv.dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), timeout=60, text=True)
        self.assertEqual(1, p.returncode, p.stdout + p.stderr)
        self.assertIn("in use by another process", p.stderr)

        # None of them created a LOCK file; the first kvd serves on.
        self.assertFalse(os.path.exists(lock))
        self.assertEqual(b"v", r.get("k"))
        r.set("k2", "v2")
        self.assertEqual(0, srv.stop())

        # Once it has stopped, the directory opens again (LOCK recreated).
        srv.start()
        r = self.client(srv)
        self.assertEqual(b"v2", r.get("k2"))
        self.assertTrue(os.path.exists(lock))


if __name__ == "__main__":
    unittest.main()
