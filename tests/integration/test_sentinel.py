"""Redis Sentinel (Debian's redis-sentinel 7.0) in charge of kvd: three
Sentinels, a kvd primary and two kvd replicas, all on 127.0.0.1, with a
short down-after-milliseconds.

The ledger client is an application as Sentinel's users write one:
redis-py's Sentinel class (`master_for`), which asks the Sentinels where
the primary is and reconnects when it dies or answers -READONLY. It
writes unique keys and notes every write that was acknowledged (+OK), so
that after each failover every acknowledged key can be looked for on the
new primary.

Two Sentinel periods are shortened with SENTINEL DEBUG (Redis 7.0):
INFO every second instead of every ten, so that the replication offsets
Sentinel compares to choose the replica to promote were read after the
primary died (with the default period they can be up to 5 s old, and
Sentinel may then promote the replica with the shorter log: an
acknowledged write would be lost whatever the server), and hello
messages every second instead of two (an old primary back as a primary
is converted after four of those periods: 4 s instead of 8).

Every server and Sentinel listens on a free loopback port and is stopped
at the end, also on failure; every wait and every load is bounded. A
failure prints the tails of the Sentinel and kvd logs and the ledger's
figures.
"""
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import redis
from redis.sentinel import Sentinel

from kvdtest import KvdTestCase, free_port, wait_until
from test_replication import diverged_records

SENTINEL_BIN = os.environ.get("REDIS_SENTINEL_BIN", "/usr/bin/redis-sentinel")
MASTER = "mymaster"
DOWN_AFTER_MS = 1500
# Sentinel starts no new failover of a primary for twice this after the
# last one started; a failover also ends at the latest after this long.
FAILOVER_TIMEOUT_MS = 4000

# Bounds, generous for sanitizer builds on a loaded machine.
FAILOVER_BOUND = 25.0   # kill -9 of the primary to the new one named by every Sentinel
FOLLOW_BOUND = 25.0     # the other replica linked to the new primary
RESUME_BOUND = 25.0     # the ledger client's first acknowledged write on the new primary
CONVERT_BOUND = 40.0    # restart of the old primary to its link up as a replica of the new one
LINK_BOUND = 20.0
DISCOVER_BOUND = 30.0

ROUNDS = 10


def tail(text, n=2500):
    return text[-n:] if len(text) > n else text


def info_repl(node):
    c = node.client(socket_timeout=5)
    try:
        return c.info("replication")
    finally:
        c.close()


def follows(node, primary):
    """node is a replica of primary (by port) with its link up."""
    try:
        i = info_repl(node)
    except (redis.exceptions.RedisError, OSError):
        return False
    return (i.get("role") == "slave" and int(i.get("master_port", 0)) == primary.port
            and i.get("master_link_status") == "up")


def divergent_files(node):
    try:
        return sorted(f for f in os.listdir(node.dir) if f.startswith("diverged."))
    except FileNotFoundError:
        return []


class SentinelProc:
    """One redis-sentinel with its own config file (Sentinel rewrites it),
    working directory and log."""

    START_TIMEOUT = 10.0

    def __init__(self, workdir, primary_port, quorum=2):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.conf = os.path.join(workdir, "sentinel.conf")
        self.logfile = os.path.join(workdir, "sentinel.log")
        self.primary_port = primary_port
        self.quorum = quorum
        self.port = None
        self.proc = None

    def start(self):
        for _ in range(3):
            self.port = free_port()
            with open(self.conf, "w") as f:
                f.write("port %d\nbind 127.0.0.1\ndaemonize no\ndir %s\nlogfile %s\n"
                        "sentinel resolve-hostnames no\n"
                        "sentinel monitor %s 127.0.0.1 %d %d\n"
                        "sentinel down-after-milliseconds %s %d\n"
                        "sentinel failover-timeout %s %d\n"
                        "sentinel parallel-syncs %s 1\n"
                        % (self.port, self.workdir, self.logfile, MASTER, self.primary_port, self.quorum,
                           MASTER, DOWN_AFTER_MS, MASTER, FAILOVER_TIMEOUT_MS, MASTER))
            self.proc = subprocess.Popen([SENTINEL_BIN, self.conf], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir)
            if wait_until(self._ready, self.START_TIMEOUT, 0.05):
                c = self.client()
                try:
                    c.execute_command("SENTINEL", "DEBUG", "info-period", 1000, "publish-period", 1000)
                finally:
                    c.close()
                return self
            self.stop()
            if "Address already in use" not in self.log():
                raise AssertionError("redis-sentinel did not start:\n" + tail(self.log()))
        raise AssertionError("redis-sentinel could not find a free port")

    def _ready(self):
        if self.proc.poll() is not None:
            return True  # exited: start() looks at why
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                s.sendall(b"PING\r\n")
                s.settimeout(2.0)
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def client(self):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5, socket_connect_timeout=5)

    def query(self, fn):
        """fn(client), or None if the Sentinel does not answer."""
        c = self.client()
        try:
            return fn(c)
        except (redis.exceptions.RedisError, OSError):
            return None
        finally:
            c.close()

    def primary_port_now(self):
        a = self.query(lambda c: c.sentinel_get_master_addr_by_name(MASTER))
        return int(a[1]) if a else None

    def log(self):
        try:
            with open(self.logfile, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


class Ledger:
    """Writer threads, each with its own redis-py Sentinel client following
    the primary: unique keys, SET key value, each reply noted. A write is
    acknowledged when SET answered OK; any error (connection lost,
    -READONLY, -NOREPLICAS, no primary known) makes it "not acknowledged":
    it may or may not have been applied. Bounded in writes and in time."""

    def __init__(self, sentinel_ports, writers=2, value_size=16, max_writes=500000, max_seconds=600.0, rate=1000):
        self.sentinel_ports = list(sentinel_ports)
        self.writers = writers
        self.pad = "x" * max(0, value_size)
        self.max_writes = max_writes
        self.max_seconds = max_seconds
        self.rate = rate          # most writes a second per writer
        self.lock = threading.Lock()
        self.acked = {}           # key -> (value, epoch at the acknowledgement)
        self.unacked = set()      # keys whose write got an error
        self.errors = collections.Counter()
        self.epoch = 0            # set by the test: which primary's reign it is
        self.last_ack = 0.0
        self.stop_ev = threading.Event()
        self.threads = []

    def value(self, k):
        return (k + ":" + self.pad).encode()

    def start(self):
        for w in range(self.writers):
            t = threading.Thread(target=self._run, args=(w,), daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def _run(self, w):
        deadline = time.monotonic() + self.max_seconds
        s = Sentinel([("127.0.0.1", p) for p in self.sentinel_ports], socket_timeout=3, socket_connect_timeout=3)
        m = s.master_for(MASTER, socket_timeout=15, socket_connect_timeout=3)
        t0 = time.monotonic()
        try:
            i = 0
            while not self.stop_ev.is_set() and i < self.max_writes and time.monotonic() < deadline:
                ahead = t0 + i / self.rate - time.monotonic()
                if ahead > 0:
                    self.stop_ev.wait(ahead)
                k = "ledger:%d:%d" % (w, i)
                i += 1
                v = self.value(k)
                try:
                    ok = m.set(k, v)
                except redis.exceptions.RedisError as e:
                    with self.lock:
                        self.unacked.add(k)
                        self.errors[type(e).__name__ + ": " + str(e)[:40]] += 1
                    self.stop_ev.wait(0.05)
                    continue
                with self.lock:
                    if ok:
                        self.acked[k] = (v, self.epoch)
                        self.last_ack = time.monotonic()
                    else:
                        self.unacked.add(k)
                        self.errors["SET answered %r" % (ok,)] += 1
        finally:
            m.close()
            for sc in s.sentinels:
                sc.close()

    def count(self):
        with self.lock:
            return len(self.acked)

    def snapshot(self):
        with self.lock:
            return dict(self.acked)

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(30)
        alive = [t for t in self.threads if t.is_alive()]
        assert not alive, "ledger writer threads still running 30 s after being told to stop"

    def summary(self):
        with self.lock:
            return "ledger: %d acknowledged, %d not acknowledged; errors: %s" % (
                len(self.acked), len(self.unacked), dict(self.errors.most_common(8)))


def missing_on(node, acked):
    """Acknowledged keys absent from node (or with another value)."""
    c = node.client(socket_timeout=30)
    try:
        keys = sorted(acked)
        out = []
        for i in range(0, len(keys), 1000):
            chunk = keys[i:i + 1000]
            for k, v in zip(chunk, c.mget(chunk)):
                if v != acked[k][0]:
                    out.append(k)
        return out
    finally:
        c.close()


class SentinelTestCase(KvdTestCase):
    """A kvd primary, two kvd replicas and three Sentinels monitoring them;
    helpers to find the primary through Sentinel, kill it, restart it and
    wait for each step, with the logs of everything on failure."""

    NODE_EXTRA = ["--io-threads", "2"]

    def setUp(self):
        super().setUp()
        if not os.path.exists(SENTINEL_BIN):
            self.skipTest("redis-sentinel not found at %s (Debian's redis-sentinel)" % SENTINEL_BIN)
        self.sdir = tempfile.mkdtemp(prefix="kvdsentinel-")
        self.sentinels = []
        self.nodes = []
        self.ledger = None
        self.names = {}
        self.notes = []

    def tearDown(self):
        # Collected before everything is stopped and the logs removed;
        # printed by run() if the test failed.
        try:
            self._diag_text = self.diagnostics()
        except Exception as e:  # never hide the test's own failure
            self._diag_text = "diagnostics failed: %r" % e
        try:
            if self.ledger is not None:
                self.ledger.stop_ev.set()
                for t in self.ledger.threads:
                    t.join(30)
            for s in self.sentinels:
                s.stop()
        finally:
            try:
                super().tearDown()
            finally:
                shutil.rmtree(self.sdir, ignore_errors=True)

    def run(self, result=None):
        """Prints the diagnostics of a failed or errored test."""
        result = result if result is not None else self.defaultTestResult()
        before = len(result.failures) + len(result.errors)
        self._diag_text = None
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before and self._diag_text:
            sys.stderr.write("\n===== diagnostics of %s =====\n%s\n" % (self.id(), self._diag_text))
        return out

    def diagnostics(self):
        parts = list(self.notes[-40:])
        if self.ledger is not None:
            parts.append(self.ledger.summary())
        for i, s in enumerate(self.sentinels):
            parts.append("--- sentinel %d (port %s) log tail ---\n%s" % (i, s.port, tail(s.log(), 3000)))
        for n in self.nodes:
            parts.append("--- %s (port %s, %s) log tail ---\n%s%s" % (
                self.names.get(id(n)), n.port, "running" if n.running() else "not running",
                tail(n.read_log(), 2500), tail(n.read_stderr(), 1000)))
        return "\n".join(parts)

    def note(self, msg):
        self.notes.append("%.1f %s" % (time.monotonic(), msg))

    # ---- set-up ----

    def start_cluster(self, extra=(), replica_extra=((), ())):
        base = list(self.NODE_EXTRA) + list(extra)
        p = self.start_server(base)
        self.nodes.append(p)
        p.extra = list(base)  # a restart runs without --replicaof: as the node's state file says
        for rx in replica_extra:
            r = self.start_server(base + ["--replicaof", "127.0.0.1 %d" % p.port] + list(rx))
            r.extra = base + list(rx)
            self.nodes.append(r)
        for i, n in enumerate(self.nodes):
            self.names[id(n)] = "node%d" % i
        for r in self.nodes[1:]:
            self.assertTrue(wait_until(lambda: follows(r, p), LINK_BOUND, 0.1),
                            "%s did not link up to the primary" % self.name(r))
        for i in range(3):
            self.sentinels.append(SentinelProc(os.path.join(self.sdir, "s%d" % i), p.port).start())
        self.assertTrue(wait_until(lambda: self.discovered(p, self.nodes[1:]), DISCOVER_BOUND, 0.2),
                        "the Sentinels did not find the replicas and each other in %.0f s" % DISCOVER_BOUND)
        return p

    def name(self, node):
        return self.names.get(id(node), "node?")

    def node_at(self, port):
        for n in self.nodes:
            if n.port == port:
                return n
        return None

    def discovered(self, primary, replicas):
        """Every Sentinel names primary, lists the replicas (online, by
        their listening ports) and the two other Sentinels."""
        want = sorted(r.port for r in replicas)
        for s in self.sentinels:
            if s.primary_port_now() != primary.port:
                return False
            slaves = s.query(lambda c: c.sentinel_slaves(MASTER)) or []
            ok = sorted(int(x["port"]) for x in slaves if not x.get("is_sdown") and not x.get("is_disconnected")
                        and x.get("master-link-status") == "ok")
            if ok != want:
                return False
            if len(s.query(lambda c: c.sentinel_sentinels(MASTER)) or []) != 2:
                return False
        return True

    def sentinel_view(self):
        return [s.primary_port_now() for s in self.sentinels]

    def current_primary(self):
        ports = set(self.sentinel_view())
        self.assertEqual(len(ports), 1, "the Sentinels disagree on the primary: %r" % self.sentinel_view())
        n = self.node_at(ports.pop())
        self.assertIsNotNone(n, "the Sentinels name a port that is no kvd here: %r" % self.sentinel_view())
        return n

    def log_count(self, event):
        return sum(s.log().count(event) for s in self.sentinels)

    # ---- one failover ----

    def fail_primary(self, primary):
        """kill -9 of primary; waits until every Sentinel names another node
        and the remaining replica follows it. Returns (new primary, seconds
        from the kill to the first Sentinel naming it, to all of them)."""
        switches = self.log_count("+switch-master")
        t0 = time.monotonic()
        primary.kill9()
        self.note("killed %s (port %d)" % (self.name(primary), primary.port))
        first = [None]
        # What Sentinel will compare to choose (kvd's offset: the last
        # sequence number appended), read before it marks the primary down.
        time.sleep(0.3)
        offs = []
        for n in self.nodes:
            if n is not primary:
                try:
                    offs.append("%s %s" % (self.name(n), info_repl(n).get("slave_repl_offset")))
                except (redis.exceptions.RedisError, OSError) as e:
                    offs.append("%s %r" % (self.name(n), e))
        self.note("offsets 0.3 s after the kill: " + ", ".join(offs))

        def moved():
            v = self.sentinel_view()
            if first[0] is None and any(x not in (None, primary.port) for x in v):
                first[0] = time.monotonic() - t0
            return len(set(v)) == 1 and v[0] not in (None, primary.port)

        self.assertTrue(wait_until(moved, FAILOVER_BOUND, 0.05),
                        "no new primary named by every Sentinel %.0f s after kill -9: %r" %
                        (FAILOVER_BOUND, self.sentinel_view()))
        t_all = time.monotonic() - t0
        new = self.current_primary()
        self.assertIsNot(new, primary)
        self.assertEqual(info_repl(new)["role"], "master", "the node Sentinel names is no primary")
        self.assertTrue(wait_until(lambda: self.log_count("+switch-master") > switches, 10, 0.1),
                        "+switch-master not in the Sentinel logs")
        self.note("%s promoted: named by a Sentinel %.2f s, by all %.2f s after the kill" %
                  (self.name(new), first[0], t_all))
        for other in self.nodes:
            if other is not primary and other is not new:
                self.assertTrue(wait_until(lambda: follows(other, new), FOLLOW_BOUND, 0.1),
                                "%s does not follow the new primary %s: %r" %
                                (self.name(other), self.name(new), info_repl(other)))
        return new, first[0], t_all

    def restart_and_convert(self, old, primary):
        """Restarts old (killed) on its port and data directory, without
        --replicaof: it comes back as a primary, as its state file says;
        waits until Sentinel has made it a replica of primary, link up.
        Returns the seconds that took."""
        conversions = self.log_count("+convert-to-slave")
        t0 = time.monotonic()
        old.start(port=old.port)
        self.note("restarted %s on port %d" % (self.name(old), old.port))
        self.assertTrue(wait_until(lambda: follows(old, primary), CONVERT_BOUND, 0.1),
                        "%s was not made a replica of %s in %.0f s: %r" %
                        (self.name(old), self.name(primary), CONVERT_BOUND, info_repl(old)))
        took = time.monotonic() - t0
        self.assertGreater(self.log_count("+convert-to-slave"), conversions,
                           "the old primary follows, but no Sentinel logged +convert-to-slave")
        self.note("%s converted to a replica %.2f s after its restart" % (self.name(old), took))
        return took

    def wait_acks(self, n, bound):
        """Waits until the ledger has n more acknowledged writes; returns
        the seconds that took."""
        t0 = time.monotonic()
        start = self.ledger.count()
        self.assertTrue(wait_until(lambda: self.ledger.count() >= start + n, bound, 0.02),
                        "the ledger client wrote nothing through Sentinel for %.0f s (%s)" %
                        (bound, self.ledger.summary()))
        return time.monotonic() - t0


def stats(xs):
    xs = sorted(xs)
    return "min %.2f s, median %.2f s, max %.2f s" % (xs[0], xs[len(xs) // 2], xs[-1]) if xs else "none"


class TestSentinelDiscovery(SentinelTestCase):

    def test_sentinels_find_the_replicas_and_each_other(self):
        """INFO's slaveN lines give Sentinel the replicas, by the port each
        announced; the hello messages on __sentinel__:hello, published and
        read through kvd's pub/sub, give each Sentinel the two others."""
        p = self.start_cluster()
        for s in self.sentinels:
            m = s.query(lambda c: c.sentinel_master(MASTER))
            self.assertEqual((m["ip"], int(m["port"])), ("127.0.0.1", p.port))
            self.assertTrue(m["is_master"])
            self.assertFalse(m["is_sdown"] or m["is_odown"] or m["is_disconnected"], m)
            self.assertEqual(m["num-slaves"], 2)
            self.assertEqual(m["num-other-sentinels"], 2)
            self.assertEqual(m["quorum"], 2)
            slaves = s.query(lambda c: c.sentinel_slaves(MASTER))
            self.assertEqual(sorted(int(x["port"]) for x in slaves), sorted(n.port for n in self.nodes[1:]))
            for x in slaves:
                self.assertEqual(x["ip"], "127.0.0.1")
                self.assertEqual(x["master-host"], "127.0.0.1")
                self.assertEqual(int(x["master-port"]), p.port)
                self.assertEqual(x["master-link-status"], "ok")
                self.assertEqual(int(x["slave-priority"]), 100)
                self.assertTrue(x["is_slave"])
            others = s.query(lambda c: c.sentinel_sentinels(MASTER))
            self.assertEqual(sorted(int(x["port"]) for x in others),
                             sorted(o.port for o in self.sentinels if o is not s))
            # Sentinel's own connections, as it names them.
            names = [c.get("name", "") for c in self.client(p).client_list()]
            self.assertTrue(any(n.startswith("sentinel-") and n.endswith("-cmd") for n in names), names)
            self.assertTrue(any(n.startswith("sentinel-") and n.endswith("-pubsub") for n in names), names)
        # The hello channel is a real kvd channel, with the Sentinels on it.
        c = self.client(p)
        self.assertEqual(c.pubsub_numsub("__sentinel__:hello"), [(b"__sentinel__:hello", 3)])


class TestSentinelPriority(SentinelTestCase):

    def test_a_replica_with_priority_0_is_never_promoted(self):
        p = self.start_cluster(replica_extra=(["--replica-priority", "0"], ()))
        never, other = self.nodes[1], self.nodes[2]
        for s in self.sentinels:
            prio = {int(x["port"]): int(x["slave-priority"]) for x in s.query(lambda c: c.sentinel_slaves(MASTER))}
            self.assertEqual(prio, {never.port: 0, other.port: 100})
        pc = self.client(p)
        for i in range(200):
            pc.set("k%d" % i, "v%d" % i)
        self.assertEqual(pc.execute_command("WAIT", 2, 10000), 2)
        new, first, t_all = self.fail_primary(p)
        self.assertIs(new, other, "the replica with replica-priority 0 was promoted")
        self.assertEqual(info_repl(never)["slave_priority"], 0)
        nc = self.client(new)
        self.assertEqual(nc.get("k199"), b"v199")
        nc.set("after", "failover")
        rc = self.client(never)
        self.assertTrue(wait_until(lambda: rc.get("after") == b"failover", LINK_BOUND, 0.1))
        print("\npriority 0: the other replica promoted, named by every Sentinel %.2f s after kill -9" % t_all)


class TestSentinelFailovers(SentinelTestCase):

    def test_ten_failovers_in_synchronous_mode_lose_no_acknowledged_write(self):
        """sync-replicas 1: a write is acknowledged once one replica has
        fsynced it, and Sentinel promotes the replica with the highest
        offset, so every acknowledged write survives each failover. Ten
        kill -9 of the primary in a row under the ledger's load (the node
        that dies changes every time: it is the one promoted last time),
        each old primary restarted and converted by Sentinel; after each,
        every acknowledged write is on the new primary. Records the old
        primary had written and the new one lacks are saved in its
        diverged.* files: none of them is an acknowledged write."""
        self.start_cluster(["--sync-replicas", "1", "--sync-replicas-timeout", "3000"])
        self.ledger = Ledger([s.port for s in self.sentinels], writers=2).start()
        deaths = collections.Counter()
        fail_first, fail_all, resume, convert = [], [], [], []
        divergent = {}  # (node, file name in its directory) -> (node, keys)
        last_kill = None
        rnd = 0
        while rnd < ROUNDS:
            primary = self.current_primary()
            for n in self.nodes:
                if n is not primary:
                    self.assertTrue(wait_until(lambda: follows(n, primary), LINK_BOUND, 0.1),
                                    "%s does not follow %s before round %d" % (self.name(n), self.name(primary), rnd))
            # Load on this primary; and Sentinel starts no failover of the
            # same primary within twice failover-timeout of the last.
            self.wait_acks(100, RESUME_BOUND)
            if last_kill is not None:
                time.sleep(max(0.0, last_kill + 2 * FAILOVER_TIMEOUT_MS / 1000.0 + 0.5 - time.monotonic()))
                self.wait_acks(20, RESUME_BOUND)
            last_kill = time.monotonic()
            deaths[self.name(primary)] += 1
            new, t_first, t_all = self.fail_primary(primary)
            with self.ledger.lock:
                self.ledger.epoch = rnd + 1
            fail_first.append(t_first)
            fail_all.append(t_all)
            # Clients reconnect: writes are acknowledged again, by the new
            # primary (kill -9 to the first acknowledgement after it is named).
            resume.append(time.monotonic() - last_kill + self.wait_acks(1, RESUME_BOUND))
            before = divergent_files(primary)
            convert.append(self.restart_and_convert(primary, new))
            for f in divergent_files(primary):
                if f not in before:
                    nrec, keys = diverged_records(os.path.join(primary.dir, f))
                    divergent[(id(primary), f)] = (primary, [k.decode() for k in keys])
                    self.note("%s saved %d divergent records in %s" % (self.name(primary), nrec, f))
            acked = self.ledger.snapshot()
            missing = missing_on(new, acked)
            self.assertEqual(missing, [], "round %d: %d of %d acknowledged writes missing on the new primary %s "
                             "(first: %r)" % (rnd, len(missing), len(acked), self.name(new), missing[:5]))
            for node, keys in divergent.values():
                wrong = [k for k in keys if k in acked]
                self.assertEqual(wrong, [], "acknowledged writes among the divergent records of %s" % self.name(node))
            self.note("round %d: %s died, %s promoted; %d acknowledged, none missing" %
                      (rnd, self.name(primary), self.name(new), len(acked)))
            rnd += 1
        self.ledger.stop()
        acked = self.ledger.snapshot()
        final = self.current_primary()
        self.assertEqual(missing_on(final, acked), [])
        # The node that dies changes every round (it is the one promoted the
        # round before). Which one Sentinel promotes is its choice: the
        # highest offset, then the smallest run id. Usually all three die
        # in turn, but one ThreadSanitizer run had Sentinel promote the two
        # restarted nodes sixteen times in a row, never the third.
        self.assertGreaterEqual(len(deaths), 2, dict(deaths))
        # Divergent records are kept until an operator removes them.
        gone = ["%s/%s" % (self.name(n), f) for (i, f), (n, _) in divergent.items()
                if not os.path.exists(os.path.join(n.dir, f))]
        # Not asserted here: a node that diverges twice loses its first
        # file (a kvd bug, test_a_node_that_diverges_twice_keeps_both_files).
        if gone:
            print("\nnote: diverged files gone by the end: %r" % gone)
        print("\n%d failovers (sync-replicas 1), deaths %s\n  kill -9 to new primary named by one Sentinel: %s"
              "\n  ... by all three: %s\n  kill -9 to the next acknowledged write: %s"
              "\n  restart of the old primary to its conversion: %s\n  %s; 0 missing; %d divergent records "
              "(none acknowledged) in %d files" %
              (rnd, dict(deaths), stats(fail_first), stats(fail_all), stats(resume), stats(convert),
               self.ledger.summary(), sum(len(k) for _, k in divergent.values()), len(divergent)))


class TestSentinelDivergence(SentinelTestCase):
    """Asynchronous mode: writes acknowledged by a primary that no replica
    received are lost from the cluster's history at a failover; they must
    be in the old primary's diverged.* files once Sentinel has converted
    it. To have such writes at every kill, the replicas are stopped
    (SIGSTOP) while the ledger writes large values: far more than the
    loopback sockets hold on their way to the stopped replicas."""

    def forced_divergence(self, primary, epoch):
        """The ledger writes through Sentinel with the replicas stopped;
        kill -9 of primary; the replicas continued; Sentinel promotes one
        and converts the restarted old primary. Checks that every write
        acknowledged and now missing is in the one diverged.* file the old
        primary saved, and that its data is then the new primary's.
        Returns (new primary, that file's name, lost keys, timings)."""
        self.ledger = Ledger([s.port for s in self.sentinels], writers=2, value_size=32 * 1024, max_writes=3000)
        self.ledger.epoch = epoch
        self.ledger.start()
        self.wait_acks(50, RESUME_BOUND)
        self.assertIs(self.current_primary(), primary)
        replicas = [n for n in self.nodes if n is not primary]
        for r in replicas:
            os.kill(r.proc.pid, signal.SIGSTOP)
        self.note("replicas stopped")
        try:
            self.wait_acks(300, 60)
            primary.kill9()
            t0 = time.monotonic()
            self.note("%s killed" % self.name(primary))
        finally:
            for r in replicas:
                os.kill(r.proc.pid, signal.SIGCONT)
        new = self.wait_new_primary(primary, t0)
        t_fail = time.monotonic() - t0
        self.wait_acks(20, RESUME_BOUND)
        self.ledger.stop()
        acked = self.ledger.snapshot()
        lost = missing_on(new, acked)
        self.assertGreater(len(lost), 0, "every acknowledged write reached a replica: nothing to check")
        self.assertTrue(all(acked[k][1] == epoch for k in lost), "lost writes acknowledged by another primary")
        before = divergent_files(primary)
        convert = self.restart_and_convert(primary, new)
        files = [f for f in divergent_files(primary) if f not in before]
        self.assertEqual(len(files), 1, os.listdir(primary.dir))
        n, keys = diverged_records(os.path.join(primary.dir, files[0]))
        keys = set(k.decode() for k in keys)
        self.assertEqual(int(info_repl(primary)["repl_divergent_records"]), n)
        self.assertEqual(sorted(set(lost) - keys), [], "acknowledged writes lost and not saved")
        # Its data is now the new primary's: the lost writes are only in the file.
        self.assertTrue(wait_until(lambda: int(info_repl(primary)["slave_repl_offset"]) >=
                                   int(info_repl(new)["master_repl_offset"]), LINK_BOUND, 0.1))
        self.assertEqual(missing_on(primary, {k: v for k, v in acked.items() if k not in lost}), [])
        pc = self.client(primary)
        self.assertEqual([k for k in lost if pc.exists(k)], [])
        self.note("%d acknowledged, %d lost, all in %s (%d records)" % (len(acked), len(lost), files[0], n))
        self.ledger = None
        return new, files[0], lost, (len(acked), n, t_fail, convert)

    def wait_new_primary(self, old, t0):
        def moved():
            v = self.sentinel_view()
            return len(set(v)) == 1 and v[0] not in (None, old.port)

        self.assertTrue(wait_until(moved, FAILOVER_BOUND + (time.monotonic() - t0), 0.05),
                        "no new primary named by every Sentinel: %r" % self.sentinel_view())
        new = self.current_primary()
        for other in self.nodes:
            if other is not old and other is not new:
                self.assertTrue(wait_until(lambda: follows(other, new), FOLLOW_BOUND, 0.1),
                                "%s does not follow the new primary" % self.name(other))
        return new

    def test_asynchronous_failover_saves_the_old_primarys_lost_writes(self):
        p = self.start_cluster()
        new, f, lost, (acked, n, t_fail, convert) = self.forced_divergence(p, 0)
        print("\nasynchronous: %d acknowledged, %d lost at the failover, all in %s (%d records); "
              "failover %.2f s, conversion %.2f s" % (acked, len(lost), f, n, t_fail, convert))

    # KVD BUG (reported): a node's later full sync removes the diverged.*
    # files an earlier one saved: they are in the old data directory,
    # which the switch to the snapshot removes whole (repl_sync.c,
    # sync_end). The writes they held are then gone. Remove this
    # decorator once kvd keeps them.
    @unittest.expectedFailure
    def test_a_node_that_diverges_twice_keeps_both_files(self):
        """The same node diverges at two failovers: the first file must
        still be there after the second."""
        p = self.start_cluster()
        b, f1, lost1, _ = self.forced_divergence(p, 0)
        # Make p the primary again: SENTINEL FAILOVER, with the third node
        # at replica-priority 0 so that Sentinel chooses p.
        third = next(n for n in self.nodes if n is not p and n is not b)
        self.client(third).config_set("replica-priority", 0)
        self.assertTrue(wait_until(lambda: all(
            {int(x["port"]): int(x["slave-priority"]) for x in (s.query(lambda c: c.sentinel_slaves(MASTER)) or [])}
            .get(third.port) == 0 for s in self.sentinels), LINK_BOUND, 0.2))
        t0 = time.monotonic()
        self.assertTrue(wait_until(lambda: self.sentinels[0].query(
            lambda c: c.execute_command("SENTINEL", "FAILOVER", MASTER)), 2 * FAILOVER_TIMEOUT_MS / 1000.0 + 5, 0.5),
            "SENTINEL FAILOVER refused")
        self.assertIs(self.wait_new_primary(b, t0), p)
        self.assertTrue(wait_until(lambda: follows(b, p), CONVERT_BOUND, 0.1), "the old primary was not converted")
        self.client(third).config_set("replica-priority", 100)
        time.sleep(max(0.0, t0 + 2 * FAILOVER_TIMEOUT_MS / 1000.0 + 0.5 - time.monotonic()))
        new, f2, lost2, _ = self.forced_divergence(p, 1)
        self.assertNotEqual(f1, f2)
        self.assertEqual(sorted(divergent_files(p)), sorted([f1, f2]),
                         "the first divergence's file is gone after the second")
        keys = set(k.decode() for k in diverged_records(os.path.join(p.dir, f1))[1])
        self.assertEqual(sorted(set(lost1) - keys), [])


if __name__ == "__main__":
    unittest.main()
