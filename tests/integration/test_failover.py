"""FAILOVER (Redis 6.2's coordinated switchover) on kvd: under load in
both directions with zero acknowledged writes missing, the write pause,
its timeout, ABORT and FORCE, and Redis's errors. Servers on 127.0.0.1.
"""
import os
import signal
import threading
import time
import unittest

import redis

from kvdtest import KvdTestCase, wait_until


def role(r):
    return r.execute_command("ROLE")[0].decode()


def state(r):
    return r.info("replication")["master_failover_state"]


class Ledger:
    """Writes unique keys to whichever node is the primary, recording the
    writes that were acknowledged. A write that failed (READONLY after the
    switch, a dropped connection) is not acknowledged and is retried on
    the other node. Bounded by count and time."""

    def __init__(self, nodes, limit=100000, seconds=60):
        self.nodes = nodes
        self.acked = []
        self.errors = 0
        self.stop = threading.Event()
        self.limit = limit
        self.deadline = time.monotonic() + seconds
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        clients = [n.client(socket_timeout=10) for n in self.nodes]
        cur = 0
        i = 0
        while not self.stop.is_set() and i < self.limit and time.monotonic() < self.deadline:
            key = "ledger:%d" % i
            try:
                clients[cur].set(key, i)
                self.acked.append(key)
                i += 1
            except (redis.ReadOnlyError, redis.ConnectionError, redis.ResponseError):
                self.errors += 1
                cur = (cur + 1) % len(clients)
                time.sleep(0.005)
        for c in clients:
            c.close()

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join(30)


class TestFailover(KvdTestCase):
    def cluster(self, *extra, n=2):
        """A primary and n - 1 replicas (servers and redis-py clients)."""
        p = self.start_server(list(extra))
        rs = [self.start_server(["--replicaof", "127.0.0.1 %d" % p.port] + list(extra)) for _ in range(n - 1)]
        cp = self.client(p)
        crs = [self.client(r) for r in rs]
        self.assertTrue(wait_until(lambda: cp.info("replication")["connected_slaves"] == n - 1, 10))
        return p, rs, cp, crs

    def switch(self, src, csrc, dst, cdst):
        self.assertTrue(csrc.execute_command("FAILOVER", "TO", "127.0.0.1", dst.port, "TIMEOUT", 10000))
        self.assertTrue(wait_until(lambda: role(cdst) == "master" and role(csrc) == "slave", 15),
                        "no switch: %s / %s" % (src.read_log()[-1500:], dst.read_log()[-1500:]))
        self.assertTrue(wait_until(lambda: state(csrc) == "no-failover", 10))
        self.assertEqual(("127.0.0.1", dst.port), (csrc.info("replication")["master_host"],
                                                    csrc.info("replication")["master_port"]))

    def check_ledger(self, led, c):
        missing = [k for k in led.acked if c.get(k) is None]
        self.assertEqual([], missing[:10], "%d of %d acknowledged writes missing" % (len(missing), len(led.acked)))

    def run_both_directions(self, *extra):
        a, (b,), ca, (cb,) = self.cluster(*extra)

        def diag():
            return "ledger: %d acked, %d errors\n%s\n%s" % (len(led.acked), led.errors, a.read_log()[-2000:],
                                                           b.read_log()[-2000:])
        with Ledger([a, b]) as led:
            self.assertTrue(wait_until(lambda: len(led.acked) > 300, 10), diag())
            self.switch(a, ca, b, cb)
            n1 = len(led.acked)
            self.assertTrue(wait_until(lambda: len(led.acked) > n1 + 300, 20), diag())
            self.switch(b, cb, a, ca)
            n2 = len(led.acked)
            self.assertTrue(wait_until(lambda: len(led.acked) > n2 + 300, 20), diag())
        self.assertGreater(len(led.acked), 900)
        # Every acknowledged write is on the final primary and its replica.
        self.check_ledger(led, ca)
        self.assertTrue(wait_until(lambda: cb.get(led.acked[-1]) is not None, 10))
        self.check_ledger(led, cb)
        # A partial resync each time, no full one (the logs are one history).
        self.assertIn("FAILOVER", a.read_log())
        self.assertIn("MASTER MODE enabled (failover request from", b.read_log())

    def test_failover_under_load_both_directions(self):
        self.run_both_directions()

    def test_failover_under_load_synchronous_mode(self):
        self.run_both_directions("--sync-replicas", "1", "--sync-replicas-timeout", "10000")

    def test_any_replica_and_the_other_replica_follows_chained(self):
        a, (b, c), ca, (cb, cc) = self.cluster(n=3)
        ca.set("k", "v1")
        self.assertTrue(ca.execute_command("FAILOVER"))
        self.assertTrue(wait_until(lambda: role(ca) == "slave" and state(ca) == "no-failover", 15))
        host, port = ca.info("replication")["master_host"], ca.info("replication")["master_port"]
        new, cnew = (b, cb) if port == b.port else (c, cc)
        self.assertEqual("master", role(cnew))
        cnew.set("k", "v2")
        self.assertTrue(wait_until(lambda: ca.get("k") == b"v2", 10))
        other = cc if cnew is cb else cb
        self.assertTrue(wait_until(lambda: other.get("k") == b"v2", 10))

    def test_writes_pause_while_waiting_and_abort_resumes_them(self):
        a, (b,), ca, (cb,) = self.cluster()
        ca.set("before", "1")
        os.kill(b.proc.pid, signal.SIGSTOP)  # the target can no longer acknowledge
        try:
            ca.set("x", "1")  # not yet acknowledged by b: the failover must wait
            self.assertTrue(ca.execute_command("FAILOVER", "TO", "127.0.0.1", b.port))
            self.assertEqual("waiting-for-sync", state(ca))
            done = []
            w = self.client(a)
            t = threading.Thread(target=lambda: done.append(w.set("during", "1")))
            t.start()
            time.sleep(0.5)
            self.assertEqual([], done)  # the write waits
            self.assertEqual(b"1", ca.get("before"))  # reads go on
            flags = [line for line in ca.execute_command("CLIENT", "LIST").decode().splitlines() if "cmd=set" in line]
            self.assertTrue(any("flags=b" in line for line in flags), flags)
            # A transaction of connection commands only (Sentinel's shape)
            # does not wait; one that writes does.
            w2 = self.client(a)
            p = w2.pipeline(transaction=True)
            p.client_setname("during-pause").ping()
            self.assertEqual([True, True], p.execute())
            with self.assertRaisesRegex(redis.ResponseError, "FAILOVER already in progress."):
                ca.execute_command("FAILOVER")
            with self.assertRaisesRegex(redis.ResponseError, "REPLICAOF not allowed while failing over."):
                ca.execute_command("REPLICAOF", "NO", "ONE")
            self.assertTrue(ca.execute_command("FAILOVER", "ABORT"))
            t.join(10)
            self.assertEqual([True], done)
            self.assertEqual(("master", "no-failover"), (role(ca), state(ca)))
            self.assertIn("FAILOVER to 127.0.0.1:%d aborted: Failover manually aborted" % b.port, a.read_log())
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        self.assertTrue(wait_until(lambda: cb.get("during") == b"1", 10))

    def test_timeout_without_force_stays_primary(self):
        a, (b,), ca, (cb,) = self.cluster()
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            ca.set("x", "1")
            start = time.monotonic()
            self.assertTrue(ca.execute_command("FAILOVER", "TIMEOUT", 500))
            self.assertTrue(wait_until(lambda: state(ca) == "no-failover", 10))
            self.assertGreaterEqual(time.monotonic() - start, 0.45)
            self.assertEqual("master", role(ca))
            self.assertTrue(ca.set("after", "1"))
            self.assertIn("Replica never caught up before timeout", a.read_log())
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)

    def test_force_switches_at_the_timeout(self):
        a, (b,), ca, (cb,) = self.cluster()
        os.kill(b.proc.pid, signal.SIGSTOP)
        try:
            ca.set("x", "1")  # b cannot acknowledge it: only FORCE switches
            self.assertTrue(ca.execute_command("FAILOVER", "TO", "127.0.0.1", b.port, "TIMEOUT", 300, "FORCE"))
            self.assertEqual("waiting-for-sync", state(ca))
            self.assertTrue(wait_until(lambda: state(ca) == "failover-in-progress", 10))
            self.assertEqual("slave", role(ca))
        finally:
            os.kill(b.proc.pid, signal.SIGCONT)
        # The target wakes up, gets PSYNC ... FAILOVER and takes over.
        self.assertTrue(wait_until(lambda: role(cb) == "master" and state(ca) == "no-failover", 15),
                        "%s\n%s" % (a.read_log()[-2000:], b.read_log()[-2000:]))
        self.assertEqual(b"1", cb.get("x"))  # b got it from the stream before taking over
        cb.set("y", "2")
        self.assertTrue(wait_until(lambda: ca.get("y") == b"2", 10))

    def test_errors_as_redis(self):
        a, (b,), ca, (cb,) = self.cluster()
        lone = self.client(self.start_server())
        cases = [
            (cb, ("FAILOVER",), "FAILOVER is not valid when server is a replica."),
            (lone, ("FAILOVER",), "FAILOVER requires connected replicas."),
            (ca, ("FAILOVER", "ABORT"), "No failover in progress."),
            (ca, ("FAILOVER", "TIMEOUT", "0"), "FAILOVER timeout must be greater than 0"),
            (ca, ("FAILOVER", "TIMEOUT", "abc"), "value is not an integer or out of range"),
            (ca, ("FAILOVER", "TO", "127.0.0.1", "abc"), "value is not an integer or out of range"),
            (ca, ("FAILOVER", "TO", "127.0.0.1"), "syntax error"),
            (ca, ("FAILOVER", "BOGUS"), "syntax error"),
            (ca, ("FAILOVER", "ABORT", "x"), "syntax error"),
            (ca, ("FAILOVER", "FORCE"), "FAILOVER with force option requires both a timeout and target HOST and IP."),
            (ca, ("FAILOVER", "TO", "127.0.0.1", "1"), "FAILOVER target HOST and PORT is not a replica."),
        ]
        for c, args, err in cases:
            with self.assertRaises(redis.ResponseError) as cm:
                c.execute_command(*args)
            self.assertEqual(err, str(cm.exception), args)
        # Nothing changed: still primary and replica, writes go through.
        self.assertEqual(("master", "slave"), (role(ca), role(cb)))
        ca.set("k", "v")
        self.assertTrue(wait_until(lambda: cb.get("k") == b"v", 10))
        # PSYNC FAILOVER with the wrong id is refused by the target.
        with self.assertRaisesRegex(redis.ResponseError, "PSYNC FAILOVER replid must match my replid."):
            self.client(b).execute_command("PSYNC", "0" * 40, "1", "FAILOVER")
        self.assertEqual("slave", role(cb))


if __name__ == "__main__":
    unittest.main()
