"""
Durability against a real kvd: a clean restart keeps every key, value and
TTL; kill -9 in the middle of a stream of acknowledged writes from several
clients loses none of them; a second kvd on the same data directory is
refused while the first keeps serving.
"""
import os
import signal
import threading
import time
import unittest

import redis

from kvdtest import KvdServer, KvdTestCase, wait_until


class TestRestart(KvdTestCase):
    def test_restart_keeps_keys_values_and_ttls(self):
        srv = self.start_server()
        c = srv.client()
        values = {}
        for i in range(300):
            k = b"key:%d" % i
            v = os.urandom(i % 97) + b"\x00\r\n" + b"%d" % i
            values[k] = v
        with c.pipeline(transaction=False) as p:
            for k, v in values.items():
                p.set(k, v)
            p.execute()
        # Overwrites, deletes, TTLs, a transaction, counters, binary keys.
        c.set(b"key:0", b"overwritten")
        values[b"key:0"] = b"overwritten"
        c.delete(b"key:1", b"key:2")
        del values[b"key:1"], values[b"key:2"]
        c.set("ttl:ex", "a", ex=1000)
        c.set("ttl:px", "b", px=500000)
        c.set("ttl:gone", "c", px=50)  # must not come back
        c.set("ttl:persisted", "d", ex=100)
        c.persist("ttl:persisted")
        c.incrby("counter", 41)
        c.incr("counter")
        with c.pipeline(transaction=True) as p:
            p.set("tx:a", "1").set("tx:b", "2").delete("key:3")
            p.execute()
        del values[b"key:3"]
        c.append("appended", "x")
        c.append("appended", "y")
        c.rename("key:4", "renamed")
        values[b"renamed"] = values.pop(b"key:4")
        pttl_before = c.pttl("ttl:px")
        c.close()
        time.sleep(0.1)  # ttl:gone expires

        self.assertEqual(0, srv.stop())
        self.assertIn("bye", srv.read_log())
        srv.start()
        c = srv.client()
        for k, v in values.items():
            self.assertEqual(v, c.get(k), k)
        # + ttl:ex, ttl:px, ttl:persisted, counter, tx:a, tx:b, appended
        self.assertEqual(len(values) + 7, c.dbsize(), sorted(c.keys("*"))[:20])
        self.assertTrue(990 <= c.ttl("ttl:ex") <= 1000, c.ttl("ttl:ex"))
        pttl_after = c.pttl("ttl:px")
        self.assertTrue(pttl_before - 20000 < pttl_after <= pttl_before, (pttl_before, pttl_after))
        self.assertIsNone(c.get("ttl:gone"))
        self.assertEqual(-1, c.ttl("ttl:persisted"))
        self.assertEqual(b"d", c.get("ttl:persisted"))
        self.assertEqual(b"42", c.get("counter"))
        self.assertEqual([b"1", b"2"], c.mget("tx:a", "tx:b"))
        self.assertEqual(b"xy", c.get("appended"))
        self.assertIsNone(c.get("key:4"))
        # The log was recovered, and the INFO says so.
        info = c.info("persistence")
        self.assertGreater(info["recovery_records"], 0)
        self.assertEqual(0, info["recovery_problems"])
        c.close()
        # A second restart gives the same result (recovery is idempotent).
        srv.restart()
        c = srv.client()
        self.assertEqual(b"42", c.get("counter"))
        self.assertEqual(len(values) + 7, c.dbsize())
        c.close()

    def test_flushall_survives_restart(self):
        srv = self.start_server()
        c = srv.client()
        c.mset({"a": 1, "b": 2})
        c.flushall()
        c.set("c", 3)
        c.close()
        srv.restart()
        c = srv.client()
        self.assertEqual([b"c"], c.keys("*"))
        c.close()


class Ledger:
    """What one writer thread was told: per key the last acknowledged
    value, and the one request in flight when the server died."""

    def __init__(self, t):
        self.t = t
        self.acked = {}       # key -> last acknowledged value (bytes)
        self.inflight = None  # (kind, keys, value) sent but not answered
        self.acks = 0
        self.error = None

    def possible(self, key):
        """The values key may hold after recovery: the acknowledged one
        (None if never acknowledged), or the in-flight one."""
        vals = {self.acked.get(key)}
        if self.inflight and key in self.inflight[1]:
            vals.add(self.inflight[2])
        return vals


class TestKill9(KvdTestCase):
    def _kill9_under_load(self, srv, threads=6, seconds=1.5, prefix=b"t"):
        stop = threading.Event()
        ledgers = [Ledger(t) for t in range(threads)]
        started = threading.Barrier(threads + 1, timeout=30)

        def writer(led):
            t = led.t
            c = srv.client(socket_timeout=10)
            try:
                started.wait()
                seq = 0
                deadline = time.monotonic() + 60
                while not stop.is_set() and time.monotonic() < deadline:
                    seq += 1
                    if seq % 5 == 0:
                        key = prefix + b"%d:ctr" % t
                        nxt = int(led.acked.get(key, b"0")) + 1
                        led.inflight = ("incr", (key,), b"%d" % nxt)
                        self_check = c.incr(key)
                        if self_check != nxt:
                            raise AssertionError("INCR answered %r, expected %r" % (self_check, nxt))
                        led.acked[key] = b"%d" % nxt
                    elif seq % 7 == 0:
                        # Atomic multi-key write: both or none.
                        keys = (prefix + b"%d:m1" % t, prefix + b"%d:m2" % t)
                        val = b"%d" % seq
                        led.inflight = ("mset", keys, val)
                        c.mset({k: val for k in keys})
                        for k in keys:
                            led.acked[k] = val
                    else:
                        key = prefix + b"%d:k%d" % (t, seq % 16)
                        val = b"%d" % seq
                        led.inflight = ("set", (key,), val)
                        c.set(key, val)
                        led.acked[key] = val
                    led.inflight = None
                    led.acks += 1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError):
                pass  # the server died: the request in flight may or may not be there
            except BaseException as e:
                led.error = repr(e)
            finally:
                c.close()

        ts = [threading.Thread(target=writer, args=(led,)) for led in ledgers]
        for t in ts:
            t.start()
        started.wait()
        time.sleep(seconds)
        srv.kill9()
        stop.set()
        for t in ts:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in ts), "writer threads hang after kill -9")
        self.assertEqual([], [led.error for led in ledgers if led.error])
        total_acks = sum(led.acks for led in ledgers)
        self.assertGreater(total_acks, 20, "too few writes were acknowledged before the kill to mean anything")

        srv.start()
        c = srv.client()
        lost = []
        for led in ledgers:
            keys = set(led.acked) | (set(led.inflight[1]) if led.inflight else set())
            for k in sorted(keys):
                got = c.get(k)
                if got not in led.possible(k):
                    lost.append((k, led.acked.get(k), led.inflight, got))
            m1, m2 = c.mget(prefix + b"%d:m1" % led.t, prefix + b"%d:m2" % led.t)
            if m1 != m2:
                lost.append(("MSET torn", led.t, m1, m2))
        self.assertEqual([], lost[:20], "acknowledged writes lost after kill -9 (%d)" % len(lost))
        info = c.info("persistence")
        c.close()
        return info, total_acks

    def test_kill9_keeps_acknowledged_writes(self):
        srv = self.start_server()
        info, acks = self._kill9_under_load(srv)
        self.assertEqual(0, info["recovery_problems"])
        self.assertEqual(0, info["failstop"])
        # The killed kvd had zero-filled its segment ahead of the log
        # (preallocate yes); the restart cut those zeros, saving nothing.
        self.assertGreater(info["recovery_unwritten_bytes_cut"], 0)

    def test_kill9_repeated_on_same_directory(self):
        # Crash, recover, crash again on top of the recovered log: the
        # first round's keys come back unchanged after the second crash.
        srv = self.start_server()
        self._kill9_under_load(srv, threads=3, seconds=0.7, prefix=b"r1:")
        c = srv.client()
        before = {k: c.get(k) for k in c.keys("*")}
        c.close()
        self.assertGreater(len(before), 3)
        self._kill9_under_load(srv, threads=3, seconds=0.7, prefix=b"r2:")
        c = srv.client()
        for k, v in before.items():
            self.assertEqual(v, c.get(k), k)
        c.close()

    def test_kill9_everysec_keeps_writes_within_window(self):
        # --fsync everysec: writes are acknowledged after write(); a kill -9
        # (not a power loss) loses none of them, since the page cache
        # survives the process.
        srv = self.start_server(["--fsync", "everysec"])
        info, acks = self._kill9_under_load(srv, threads=4, seconds=0.8)
        self.assertEqual("everysec", info["fsync_policy"])


class TestDirectoryLock(KvdTestCase):
    def test_second_kvd_on_same_dir_is_refused(self):
        first = self.start_server()
        c = first.client()
        c.set("owner", "first")
        second = KvdServer(datadir=first.dir)
        self._servers.append(second)  # tearDown stops it whatever happens
        second.start(wait=False)
        rc = second.wait_exit(20)
        self.assertEqual(1, rc, "the second kvd on a locked directory exited with %r" % rc)
        msg = second.read_stderr() + second.read_log()
        self.assertRegex(msg, r"(?i)lock|in use", msg)
        self.assertIn(first.dir, msg)
        # The first goes on serving, reads and writes.
        self.assertEqual(b"first", c.get("owner"))
        c.set("after", "1")
        self.assertEqual(b"1", c.get("after"))
        self.assertTrue(first.running())
        c.close()
        # Once the first stops, the directory can be opened again.
        self.assertEqual(0, first.stop())
        second.start()
        c = second.client()
        self.assertEqual([b"first", b"1"], c.mget("owner", "after"))
        c.close()


class TestLifecycle(KvdTestCase):
    def test_pidfile_and_sigint(self):
        srv = KvdServer()
        pidfile = os.path.join(srv.workdir, "kvd.pid")
        srv.extra = ["--pidfile", pidfile]
        self._servers.append(srv)
        srv.start()
        with open(pidfile) as f:
            self.assertEqual(srv.proc.pid, int(f.read().strip()))
        c = srv.client()
        c.set("k", "v")
        c.close()
        srv.proc.send_signal(signal.SIGINT)
        self.assertEqual(0, srv.wait_exit(10))
        self.assertFalse(os.path.exists(pidfile), "pidfile left behind after a clean exit")
        self.assertIn("SIGINT", srv.read_log())
        srv.start()
        self.assertEqual(b"v", srv.client().get("k"))

    def test_sigterm_under_load_drains_acknowledged_writes(self):
        # SIGTERM while clients stream writes: kvd exits 0, and every write
        # a client saw acknowledged is there after the restart.
        srv = self.start_server()
        threads, ledgers = 4, []
        stop = threading.Event()
        started = threading.Barrier(threads + 1, timeout=30)

        def writer(t):
            led = Ledger(t)
            ledgers.append(led)
            c = srv.client(socket_timeout=10)
            try:
                started.wait()
                seq = 0
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    seq += 1
                    key, val = b"s%d:k%d" % (t, seq % 8), b"%d" % seq
                    led.inflight = ("set", (key,), val)
                    c.set(key, val)
                    led.acked[key] = val
                    led.inflight = None
                    led.acks += 1
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError):
                pass
            except BaseException as e:
                led.error = repr(e)
            finally:
                c.close()

        ts = [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        started.wait()
        time.sleep(0.5)
        self.assertEqual(0, srv.stop(15))
        stop.set()
        for t in ts:
            t.join(30)
        self.assertFalse(any(t.is_alive() for t in ts))
        self.assertEqual([], [led.error for led in ledgers if led.error])
        self.assertGreater(sum(led.acks for led in ledgers), 10)
        srv.start()
        c = srv.client()
        lost = [(k, led.acked[k], c.get(k)) for led in ledgers for k in led.acked
                if c.get(k) not in led.possible(k)]
        c.close()
        self.assertEqual([], lost[:20])

    def test_refuses_bad_options(self):
        # Usage errors exit 2 without touching the data directory.
        srv = KvdServer(["--fsync", "sometimes"])
        self._servers.append(srv)
        srv.start(wait=False)
        self.assertEqual(2, srv.wait_exit(10))
        self.assertIn("fsync", srv.read_stderr())


if __name__ == "__main__":
    unittest.main()
