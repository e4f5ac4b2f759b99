"""Replication (docs/replication.md): a primary and its replicas on
127.0.0.1, driven by redis-py as an application would.

Every test compares full key/value digests (values, and TTLs within a
tolerance: replicas carry the primary's absolute expiry), not samples.
Loads are bounded in count and time; every server is stopped by tearDown.
"""
import os
import random
import signal
import socket
import threading
import time
import unittest

import redis

from kvdtest import KvdServer, KvdTestCase, wait_until

LINK_TIMEOUT = 20.0


def digest(c):
    """{key: (value, ttl bucket)} of every key, through SCAN and GET."""
    out = {}
    for k in c.scan_iter(count=1000):
        v = c.get(k)
        if v is None:
            continue  # expired between SCAN and GET
        ttl = c.pttl(k)
        out[k] = (v, -1 if ttl < 0 else ttl)
    return out


def same_digest(test, a, b, tol_ms=3000):
    da, db = digest(a), digest(b)
    test.assertEqual(set(da), set(db), "key sets differ: only on first %r, only on second %r" %
                     (sorted(set(da) - set(db))[:5], sorted(set(db) - set(da))[:5]))
    for k, (v, t) in da.items():
        v2, t2 = db[k]
        test.assertEqual(v, v2, "value of %r differs" % k)
        test.assertEqual(t < 0, t2 < 0, "TTL of %r: %r against %r" % (k, t, t2))
        if t >= 0:
            test.assertLess(abs(t - t2), tol_ms, "TTL of %r: %r against %r" % (k, t, t2))
    return len(da)


def info(c, section="replication"):
    return c.info(section)


def link_up(c):
    i = info(c)
    return i.get("role") == "slave" and i.get("master_link_status") == "up"


def offset(c):
    return int(info(c)["master_repl_offset"])


def caught_up(p, r):
    """The replica has applied everything the primary has written."""
    return link_up(r) and int(info(r)["slave_repl_offset"]) >= int(info(p)["master_repl_offset"])


class ReplicationBase(KvdTestCase):
    PRIMARY_EXTRA = ()

    def replica_of(self, primary, extra=()):
        r = self.start_server(["--replicaof", "127.0.0.1 %d" % primary.port] + list(extra))
        rc = self.client(r)
        self.assertTrue(wait_until(lambda: link_up(rc), timeout=LINK_TIMEOUT),
                        "replica did not link up:\n" + r.read_log()[-3000:])
        return r, rc

    def write_mix(self, c, n, prefix="k", seed=1):
        """n writes: SETs (a third with a TTL), DELs, MSETs, INCRs."""
        rnd = random.Random(seed)
        p = c.pipeline(transaction=False)
        for i in range(n):
            k = "%s%d" % (prefix, rnd.randrange(n // 2 + 1))
            op = rnd.random()
            if op < 0.55:
                p.set(k, "v%d-%s" % (i, "x" * rnd.randrange(200)), px=rnd.choice([None, None, 600000]))
            elif op < 0.7:
                p.delete(k)
            elif op < 0.85:
                p.mset({"%s-m%d" % (prefix, i % 50): "m%d" % i, "%s-n%d" % (prefix, i % 50): "n%d" % i})
            else:
                p.incr("%s-counter%d" % (prefix, i % 7))
            if i % 200 == 199:
                p.execute()
        p.execute()


class TestReplication(ReplicationBase):

    def test_primary_and_two_replicas_hold_every_acknowledged_write(self):
        p = self.start_server()
        pc = self.client(p)
        self.write_mix(pc, 1500, seed=2)
        r1, c1 = self.replica_of(p)
        r2, c2 = self.replica_of(p)
        self.write_mix(pc, 1500, prefix="after", seed=3)
        self.assertEqual(pc.execute_command("WAIT", 2, 10000), 2)
        self.assertTrue(wait_until(lambda: caught_up(pc, c1) and caught_up(pc, c2), timeout=LINK_TIMEOUT))
        n = same_digest(self, pc, c1)
        self.assertGreater(n, 500)
        self.assertEqual(same_digest(self, pc, c2), n)
        # Reads on replicas; writes refused as Redis refuses them.
        k = next(iter(digest(pc)))
        self.assertEqual(c1.get(k), pc.get(k))
        with self.assertRaisesRegex(redis.exceptions.ReadOnlyError, "read only replica"):
            c1.set("x", "y")
        with self.assertRaises(redis.exceptions.ResponseError):
            c2.execute_command("WAIT", 1, 0)
        # What Redis tooling reads.
        pi = info(pc)
        self.assertEqual(pi["role"], "master")
        self.assertEqual(pi["connected_slaves"], 2)
        ports = sorted(pi["slave%d" % i]["port"] for i in range(2))
        self.assertEqual(ports, sorted([r1.port, r2.port]))
        self.assertEqual(pi["slave0"]["state"], "online")
        ri = info(c1)
        self.assertEqual(ri["master_port"], p.port)
        self.assertEqual(ri["master_replid"], pi["master_replid"])
        self.assertEqual(len(pi["master_replid"]), 40)
        self.assertEqual(ri["slave_read_only"], 1)
        self.assertEqual(ri["slave_priority"], 100)
        self.assertEqual(len(info(pc, "server")["run_id"]), 40)
        role = pc.execute_command("ROLE")
        self.assertEqual(role[0], b"master")
        self.assertEqual(len(role[2]), 2)
        role = c1.execute_command("ROLE")
        self.assertEqual(role[:4], [b"slave", b"127.0.0.1", p.port, b"connected"])
        self.assertEqual(role[4], int(pi["master_repl_offset"]))
        self.assertEqual(pc.execute_command("WAITAOF", 1, 2, 5000), [1, 2])
        st = info(pc, "stats")
        self.assertEqual(st["sync_full"], 2)

    def test_a_replica_of_a_replica_gets_the_primarys_writes(self):
        p = self.start_server()
        pc = self.client(p)
        self.write_mix(pc, 500, seed=9)
        r1, c1 = self.replica_of(p)
        r2, c2 = self.replica_of(r1)
        pc.set("chained", "yes")
        self.assertTrue(wait_until(lambda: c2.get("chained") == b"yes", timeout=LINK_TIMEOUT))
        self.assertTrue(wait_until(lambda: caught_up(pc, c1) and caught_up(c1, c2), timeout=LINK_TIMEOUT))
        same_digest(self, pc, c2)
        self.assertEqual(int(info(c2)["slave_repl_offset"]), int(info(pc)["master_repl_offset"]))

    def test_replicaof_is_idempotent_works_in_multi_and_persists(self):
        p = self.start_server()
        pc = self.client(p)
        pc.set("a", "1")
        r = self.start_server()
        rc = self.client(r)
        tx = rc.pipeline(transaction=True)
        tx.execute_command("REPLICAOF", "127.0.0.1", p.port)
        tx.execute_command("PING")
        self.assertEqual(tx.execute(), [b"OK", True])
        self.assertEqual(rc.execute_command("REPLICAOF", "127.0.0.1", p.port), b"OK Already connected to specified master")
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertEqual(rc.get("a"), b"1")
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "Invalid master port"):
            rc.execute_command("REPLICAOF", "127.0.0.1", "99999")
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "Invalid master host"):
            rc.execute_command("REPLICAOF", "bad\nhost", p.port)
        self.assertEqual(info(rc)["master_port"], p.port)  # refused: nothing changed
        # A restart keeps the primary and the position: no second full sync.
        r.restart()
        rc = self.client(r)
        pc.set("b", "2")
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertEqual(rc.get("b"), b"2")
        st = info(pc, "stats")
        self.assertEqual((st["sync_full"], st["sync_partial_ok"]), (1, 1))
        # REPLICAOF NO ONE promotes, also inside MULTI, and persists too.
        tx = rc.pipeline(transaction=True)
        tx.execute_command("REPLICAOF", "NO", "ONE")
        self.assertEqual(tx.execute(), [b"OK"])
        self.assertEqual(info(rc)["role"], "master")
        self.assertEqual(rc.execute_command("REPLICAOF", "NO", "ONE"), b"OK")
        rc.set("own", "w")
        r.restart()
        rc = self.client(r)
        self.assertEqual(info(rc)["role"], "master")
        self.assertEqual(rc.get("own"), b"w")

    def test_primary_restarts_keep_the_history_for_its_replicas(self):
        p = self.start_server()
        pc = self.client(p)
        self.write_mix(pc, 800, seed=13)
        r, rc = self.replica_of(p)
        self.assertEqual(pc.execute_command("WAIT", 1, 10000), 1)
        rid = info(pc)["master_replid"]
        # A clean restart keeps the id: the replica resumes.
        port = p.port
        p.stop()
        p.start(port=port)
        pc = self.client(p)
        self.assertTrue(wait_until(lambda: link_up(rc), timeout=LINK_TIMEOUT))
        self.assertEqual(info(pc)["master_replid"], rid)
        pc.set("after-clean", "1")
        self.assertEqual(pc.execute_command("WAIT", 1, 10000), 1)
        st = info(pc, "stats")
        self.assertEqual((st["sync_full"], st["sync_partial_ok"]), (0, 1))
        # A crash takes a new id, the old one valid up to the log's end:
        # the replica (which has no more than that) still resumes.
        p.kill9()
        p.start(port=port)
        pc = self.client(p)
        self.assertTrue(wait_until(lambda: link_up(rc), timeout=LINK_TIMEOUT))
        i = info(pc)
        self.assertNotEqual(i["master_replid"], rid)
        self.assertEqual(i["master_replid2"], rid)
        self.assertEqual(int(i["second_repl_offset"]), int(i["master_repl_offset"]) + 1)
        pc.set("after-crash", "1")
        self.assertEqual(pc.execute_command("WAIT", 1, 10000), 1)
        st = info(pc, "stats")
        self.assertEqual((st["sync_full"], st["sync_partial_ok"]), (0, 1))
        self.assertEqual(info(rc)["master_replid"], i["master_replid"])
        same_digest(self, pc, rc)

    def test_replica_killed_under_load_resumes_without_full_sync(self):
        p = self.start_server()
        pc = self.client(p)
        r, rc = self.replica_of(p)
        stop = threading.Event()
        errors = []

        def load():
            c = p.client()
            i = 0
            deadline = time.monotonic() + 20
            try:
                while not stop.is_set() and i < 200000 and time.monotonic() < deadline:
                    c.set("load%d" % (i % 3000), "v%d" % i, px=None if i % 5 else 900000)
                    i += 1
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
            finally:
                c.close()

        t = threading.Thread(target=load)
        t.start()
        try:
            for round in range(3):
                time.sleep(0.4)
                r.kill9()
                time.sleep(0.2)
                r.start()
                rc = self.client(r)
                self.assertTrue(wait_until(lambda: link_up(rc), timeout=LINK_TIMEOUT), r.read_log()[-2000:])
        finally:
            stop.set()
            t.join(30)
        self.assertEqual(errors, [])
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertGreater(same_digest(self, pc, rc), 1000)
        st = info(pc, "stats")
        self.assertEqual(st["sync_full"], 1, "a restarted replica needed a full sync")
        self.assertGreaterEqual(st["sync_partial_ok"], 3)

    def test_full_sync_while_the_primary_writes_and_compacts(self):
        p = self.start_server(["--segment-size", "64kb"])
        pc = self.client(p)
        self.write_mix(pc, 6000, seed=5)
        stop = threading.Event()

        def load():
            c = p.client()
            i = 0
            deadline = time.monotonic() + 20
            while not stop.is_set() and i < 50000 and time.monotonic() < deadline:
                c.set("during%d" % (i % 700), "d%d" % i)
                if i % 500 == 0:
                    c.execute_command("COMPACT")
                i += 1
            c.close()

        t = threading.Thread(target=load)
        t.start()
        try:
            r, rc = self.replica_of(p)
            time.sleep(0.5)
        finally:
            stop.set()
            t.join(30)
        self.assertGreaterEqual(int(info(pc, "persistence")["compactions"]), 1)
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertGreater(same_digest(self, pc, rc), 1000)

    def test_replica_killed_during_full_sync_keeps_its_old_data(self):
        p = self.start_server()
        pc = self.client(p)
        big = "B" * 4000
        for chunk in range(10):  # about 20 MB: the sync takes a while
            pc.mset({"big%d" % (chunk * 500 + i): big for i in range(500)})
        r = self.start_server()
        rc = self.client(r)
        rc.set("old-only", "mine")
        rc.execute_command("REPLICAOF", "127.0.0.1", p.port)
        self.assertTrue(wait_until(lambda: info(rc).get("master_sync_in_progress") == 1, timeout=LINK_TIMEOUT,
                                   interval=0.002))
        r.kill9()
        # The data directory still holds the old data, whole.
        old = KvdServer(["--replicaof", "no one"], datadir=r.dir)
        self._servers.append(old)
        old.start()
        oc = self.client(old)
        self.assertEqual(oc.get("old-only"), b"mine")
        self.assertEqual(oc.dbsize(), 1)
        oc.execute_command("REPLICAOF", "127.0.0.1", p.port)
        self.assertTrue(wait_until(lambda: caught_up(pc, oc), timeout=LINK_TIMEOUT))
        same_digest(self, pc, oc)
        self.assertIsNone(oc.get("old-only"))

    def test_promoted_replica_serves_the_other_replica_with_a_partial_resync(self):
        p = self.start_server()
        pc = self.client(p)
        self.write_mix(pc, 1000, seed=7)
        r1, c1 = self.replica_of(p)
        r2, c2 = self.replica_of(p)
        self.assertEqual(pc.execute_command("WAIT", 2, 10000), 2)
        p.stop()
        c1.execute_command("REPLICAOF", "NO", "ONE")
        i1 = info(c1)
        self.assertEqual(i1["master_replid2"], info(c2)["master_replid"])
        c2.execute_command("REPLICAOF", "127.0.0.1", r1.port)
        self.assertTrue(wait_until(lambda: caught_up(c1, c2), timeout=LINK_TIMEOUT))
        c1.set("new-primary", "yes")
        self.assertEqual(c1.execute_command("WAIT", 1, 10000), 1)
        self.assertEqual(c2.get("new-primary"), b"yes")
        st = info(c1, "stats")
        self.assertEqual((st["sync_full"], st["sync_partial_ok"]), (0, 1))
        same_digest(self, c1, c2)

    def test_synchronous_mode_fails_a_write_no_replica_fsynced_in_time(self):
        p = self.start_server(["--sync-replicas", "1", "--sync-replicas-timeout", "800"])
        pc = self.client(p)
        r, rc = self.replica_of(p)
        self.assertTrue(pc.set("k", "1"))
        self.assertEqual(rc.get("k"), b"1")  # fsynced on the replica before the OK
        # A replica that is connected but does not answer (stopped): the
        # write times out, and stays ("maybe applied").
        os.kill(r.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with self.assertRaisesRegex(redis.exceptions.ResponseError, "NOREPLICAS the write is applied"):
                pc.set("k", "2")
            self.assertGreater(time.monotonic() - t0, 0.7)
            self.assertEqual(pc.get("k"), b"2")
            self.assertEqual(int(info(pc)["repl_sync_timeouts"]), 1)
        finally:
            os.kill(r.proc.pid, signal.SIGCONT)
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertEqual(rc.get("k"), b"2")
        # No replica at all: refused before it runs, as Redis's
        # min-replicas-to-write, and not applied.
        r.stop()
        self.assertTrue(wait_until(lambda: info(pc)["connected_slaves"] == 0, timeout=10))
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "NOREPLICAS Not enough good replicas to write"):
            pc.set("k", "3")
        self.assertEqual(pc.get("k"), b"2")
        tx = pc.pipeline(transaction=True)
        tx.set("k", "4")
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "NOREPLICAS"):  # queued: EXECABORT
            tx.execute()
        self.assertEqual(pc.get("k"), b"2")
        r.start()
        rc = self.client(r)
        self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=LINK_TIMEOUT))
        self.assertTrue(pc.set("k", "5"))
        self.assertEqual(rc.get("k"), b"5")

    def test_stale_reads_follow_replica_serve_stale_data(self):
        p = self.start_server()
        pc = self.client(p)
        pc.set("k", "v")
        r, rc = self.replica_of(p, ["--replica-serve-stale-data", "no"])
        self.assertEqual(rc.get("k"), b"v")
        p.stop()
        self.assertTrue(wait_until(lambda: info(rc)["master_link_status"] == "down", timeout=10))
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "MASTERDOWN"):
            rc.get("k")
        self.assertTrue(rc.ping())
        self.assertGreaterEqual(int(info(rc)["master_link_down_since_seconds"]), 0)
        rc.config_set("replica-serve-stale-data", "yes")
        self.assertEqual(rc.get("k"), b"v")

    def test_replica_announce_ip_and_port_are_what_the_primary_lists(self):
        p = self.start_server()
        pc = self.client(p)
        r, rc = self.replica_of(p, ["--replica-announce-port", "12345", "--slave-announce-ip", "10.9.8.7"])
        self.assertTrue(wait_until(lambda: int(info(pc)["connected_slaves"]) == 1, timeout=10))
        line = info(pc)["slave0"]
        self.assertEqual((line["ip"], line["port"]), ("10.9.8.7", 12345), line)
        self.assertEqual(pc.execute_command("ROLE")[2][0][:2], [b"10.9.8.7", b"12345"])
        self.assertEqual(info(rc)["replica_announced"], 1)
        self.assertEqual(rc.config_get("replica-announce*"),
                         {"replica-announce-ip": "10.9.8.7", "replica-announce-port": "12345",
                          "replica-announced": "yes"})
        # CONFIG SET takes effect at the next handshake, as in Redis.
        rc.config_set("replica-announce-port", "0")
        rc.config_set("replica-announce-ip", "")
        rc.config_set("replica-announced", "no")
        self.assertEqual(info(rc)["replica_announced"], 0)
        rc.execute_command("REPLICAOF", "NO", "ONE")
        self.assertTrue(wait_until(lambda: int(info(pc)["connected_slaves"]) == 0, timeout=10))
        rc.execute_command("REPLICAOF", "127.0.0.1", str(p.port))
        self.assertTrue(wait_until(lambda: int(info(pc)["connected_slaves"]) == 1 and link_up(rc),
                                   timeout=LINK_TIMEOUT))
        line = info(pc)["slave0"]
        self.assertEqual((line["ip"], line["port"]), ("127.0.0.1", r.port), line)
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "replica-announce-port"):
            rc.config_set("replica-announce-port", "70000")

    def test_masterauth_and_refusals(self):
        p = self.start_server(["--requirepass", "sesame"])
        pc = self.client(p, password="sesame")
        pc.set("a", "1")
        bad = self.start_server(["--replicaof", "127.0.0.1 %d" % p.port])
        bc = self.client(bad)
        self.assertTrue(wait_until(lambda: "AUTH" in bad.read_log() or "NOAUTH" in bad.read_log(), timeout=10))
        self.assertEqual(info(bc)["master_link_status"], "down")
        self.assertIsNone(bc.get("a"))
        bc.config_set("masterauth", "sesame")
        self.assertTrue(wait_until(lambda: caught_up(pc, bc), timeout=LINK_TIMEOUT))
        self.assertEqual(bc.get("a"), b"1")
        # A client that is not a kvd replica is refused at PSYNC.
        s = p.sock()
        s.sendall(b"AUTH sesame\r\nPSYNC ? -1\r\n")
        data = b""
        deadline = time.monotonic() + 5
        while b"only a kvd replica" not in data and time.monotonic() < deadline:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        s.close()
        self.assertIn(b"-ERR this primary is kvd", data)


def diverged_records(path):
    """(records, keys) of a divergence file: log records back to back."""
    with open(path, "rb") as f:
        data = f.read()
    off, n, keys = 0, 0, []
    while off < len(data):
        length = int.from_bytes(data[off + 8:off + 12], "little")
        klen = int.from_bytes(data[off + 16:off + 20], "little")
        keys.append(data[off + 44:off + 44 + klen])
        off += length
        n += 1
    assert off == len(data), "a divergence file ends inside a record"
    return n, keys


class TestDivergence(ReplicationBase):

    def rejoin(self, crash):
        """A primary takes writes its replica never got, goes down (crash:
        kill -9, else a clean stop); the replica is promoted and takes
        writes; the old primary rejoins as its replica."""
        p = self.start_server()
        pc = self.client(p)
        r, rc = self.replica_of(p)
        for i in range(200):
            pc.set("common%d" % i, "c")
        self.assertEqual(pc.execute_command("WAIT", 1, 10000), 1)
        r.stop()
        for i in range(50):
            pc.set("lost%d" % i, "only on the old primary")
        if crash:
            p.kill9()
        else:
            p.stop()
        r.start()
        rc = self.client(r)
        rc.execute_command("REPLICAOF", "NO", "ONE")
        for i in range(30):
            rc.set("new%d" % i, "n")
        port = p.port
        p.start(port=port)
        pc = self.client(p)
        pc.execute_command("REPLICAOF", "127.0.0.1", r.port)
        self.assertTrue(wait_until(lambda: caught_up(rc, pc), timeout=LINK_TIMEOUT), p.read_log()[-3000:])
        same_digest(self, rc, pc)
        self.assertIsNone(pc.get("lost0"))
        self.assertEqual(pc.get("new0"), b"n")
        self.assertEqual(int(info(pc)["repl_divergent_records"]), 50)
        files = [f for f in os.listdir(p.dir) if f.startswith("diverged.")]
        self.assertEqual(len(files), 1, os.listdir(p.dir))
        n, keys = diverged_records(os.path.join(p.dir, files[0]))
        self.assertEqual(n, 50)
        self.assertEqual(sorted(keys), sorted(b"lost%d" % i for i in range(50)))
        self.assertIn("not in the primary's history", p.read_log())
        # It stays: a restart keeps the file and the data.
        p.restart()
        self.assertTrue(os.path.exists(os.path.join(p.dir, files[0])))

    def test_old_primary_rejoining_after_a_clean_stop_saves_its_divergent_records(self):
        self.rejoin(crash=False)

    def test_old_primary_rejoining_after_a_crash_saves_its_divergent_records(self):
        self.rejoin(crash=True)


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 between a replica and its primary that,
    while `faults` is set, flips one random bit in some chunks going to
    the replica and drops connections at random moments."""

    def __init__(self, target_port, seed=11):
        self.target = target_port
        self.rnd = random.Random(seed)
        self.faults = True
        self.flipped = 0
        self.dropped = 0
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.stopping = False
        self.lock = threading.Lock()
        self.conns = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopping:
            try:
                a, _ = self.lsock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                a.close()
                continue
            with self.lock:
                self.conns += [a, b]
            threading.Thread(target=self._pump, args=(a, b, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(b, a, True), daemon=True).start()

    def _pump(self, src, dst, to_replica):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_replica and self.faults:
                    x = self.rnd.random()
                    if x < 0.05:
                        i = self.rnd.randrange(len(data))
                        data = data[:i] + bytes([data[i] ^ (1 << self.rnd.randrange(8))]) + data[i + 1:]
                        self.flipped += 1
                    elif x < 0.08:
                        self.dropped += 1
                        break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.stopping = True
        self.lsock.close()
        with self.lock:
            for s in self.conns:
                try:
                    s.close()
                except OSError:
                    pass


class TestReplicationFaults(ReplicationBase):

    def test_flipped_bytes_and_dropped_links_never_reach_the_replica(self):
        p = self.start_server()
        pc = self.client(p)
        proxy = FlakyProxy(p.port)
        try:
            r = self.start_server(["--replicaof", "127.0.0.1 %d" % proxy.port])
            rc = self.client(r)
            # Values carry their own check: any byte changed on the way
            # would show as a value that is not one of those written.
            written = {}
            deadline = time.monotonic() + 25
            i = 0
            while (proxy.flipped < 5 or proxy.dropped < 5) and time.monotonic() < deadline and i < 40000:
                k = "f%d" % (i % 400)
                v = "%s=%d" % (k, i)
                pc.set(k, v)
                written.setdefault(k, set()).add(v.encode())
                i += 1
                if i % 200 == 0:
                    keys = ["f%d" % j for j in range(400)]
                    for key, val in zip(keys, rc.mget(keys)):
                        if val is not None:
                            self.assertIn(val, written[key], "a corrupted value reached the replica")
            self.assertGreaterEqual(proxy.flipped, 1)
            self.assertGreaterEqual(proxy.dropped, 1)
            proxy.faults = False
            self.assertTrue(wait_until(lambda: caught_up(pc, rc), timeout=60.0), r.read_log()[-3000:])
            same_digest(self, pc, rc)
            self.assertGreater(int(info(rc)["repl_stream_errors"]), 0)
        finally:
            proxy.close()


class DelayProxy:
    """A link between a replica and its primary that holds the primary's
    bytes for `delay` seconds, as a slow network does. close() drops what
    it holds: with the primary's kill -9, the loss of the whole machine,
    in-flight bytes included."""

    def __init__(self, target_port, delay=0.1):
        self.target, self.delay = target_port, delay
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4)
        self.port = self.lsock.getsockname()[1]
        self.closed = threading.Event()
        self.socks = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed.is_set():
            try:
                a, _ = self.lsock.accept()
                b = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                return
            self.socks += [a, b]
            q = []
            cv = threading.Condition()
            threading.Thread(target=self._read, args=(b, q, cv), daemon=True).start()
            threading.Thread(target=self._write, args=(a, q, cv), daemon=True).start()
            threading.Thread(target=self._plain, args=(a, b), daemon=True).start()

    def _read(self, src, q, cv):
        while not self.closed.is_set():
            try:
                d = src.recv(65536)
            except OSError:
                d = b""
            with cv:
                q.append((time.monotonic() + self.delay, d))
                cv.notify()
            if not d:
                return

    def _write(self, dst, q, cv):
        while not self.closed.is_set():
            with cv:
                while not q and not self.closed.is_set():
                    cv.wait(0.05)
                if self.closed.is_set():
                    return
                due, d = q[0]
            time.sleep(max(0.0, due - time.monotonic()))
            if self.closed.is_set():
                return
            with cv:
                q.pop(0)
            try:
                if not d:
                    dst.shutdown(socket.SHUT_RDWR)
                    return
                dst.sendall(d)
            except OSError:
                return

    def _plain(self, src, dst):
        while not self.closed.is_set():
            try:
                d = src.recv(65536)
                if not d:
                    return
                dst.sendall(d)
            except OSError:
                return

    def close(self):
        self.closed.set()
        self.lsock.close()
        for s in self.socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


def ledger_run(test, sync_replicas, seconds=2.0, writers=4):
    """A primary with two replicas, each behind a link that delays the
    primary's bytes by 100 ms, under load from `writers` clients writing
    unique keys and noting every acknowledged one in a ledger. Then the
    primary's machine is lost: kill -9, and the bytes in flight on its
    links with it. The replica with the highest offset is promoted.
    Returns (acknowledged, missing) counts."""
    extra = ["--sync-replicas", str(sync_replicas), "--sync-replicas-timeout", "5000"] if sync_replicas else []
    p = test.start_server(extra)
    proxies = [DelayProxy(p.port), DelayProxy(p.port)]
    r1 = test.start_server(["--replicaof", "127.0.0.1 %d" % proxies[0].port])
    r2 = test.start_server(["--replicaof", "127.0.0.1 %d" % proxies[1].port])
    c1, c2 = test.client(r1), test.client(r2)
    for c in (c1, c2):
        test.assertTrue(wait_until(lambda: link_up(c), timeout=LINK_TIMEOUT))
    acked = [[] for _ in range(writers)]
    stop = threading.Event()

    def load(w):
        c = p.client(socket_timeout=10)
        i = 0
        try:
            while not stop.is_set() and i < 100000:
                k = "w%d-%d" % (w, i)
                if c.set(k, k):
                    acked[w].append(k)
                i += 1
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ResponseError):
            pass  # the primary died: this write was not acknowledged
        finally:
            c.close()

    threads = [threading.Thread(target=load, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    p.kill9()
    for x in proxies:
        x.close()
    stop.set()
    for t in threads:
        t.join(30)
    best = max((c1, c2), key=lambda c: int(info(c)["slave_repl_offset"]))
    best.execute_command("REPLICAOF", "NO", "ONE")
    total = sum(len(a) for a in acked)
    keys = [k for a in acked for k in a]
    missing = 0
    for i in range(0, len(keys), 1000):
        chunk = keys[i:i + 1000]
        missing += sum(1 for v in best.mget(chunk) if v is None)
    return total, missing


class TestFailoverLedger(ReplicationBase):

    def test_synchronous_mode_loses_no_acknowledged_write_when_the_primary_dies(self):
        total, missing = ledger_run(self, 1, writers=20)  # each write waits a round trip: more writers
        self.assertGreater(total, 100)
        self.assertEqual(missing, 0, "%d of %d acknowledged writes missing after failover" % (missing, total))
        print("\nsynchronous (sync-replicas 1): %d acknowledged writes, %d missing after kill -9 and failover"
              % (total, missing))

    def test_asynchronous_mode_reports_what_a_failover_lost(self):
        total, missing = ledger_run(self, 0)
        self.assertGreater(total, 300)
        self.assertGreater(missing, 0, "the delayed links should have held acknowledged writes")
        print("\nasynchronous: %d acknowledged writes, %d missing after kill -9 and failover" % (total, missing))


if __name__ == "__main__":
    unittest.main()
