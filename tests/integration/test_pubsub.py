"""Pub/sub, CLIENT LIST/INFO/KILL, RESET, SCRIPT KILL and commands that
act on the server inside MULTI, against a real kvd on 127.0.0.1 with two
I/O threads (clients are spread over both, so messages and CLIENT KILL
cross threads). Expected replies are Redis 7.0.15's, byte for byte where
a raw socket is used (captured from redis-server 7.0.15 with the same
requests).
"""
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import unittest

import redis

from kvdtest import (KvdServer, KvdTestCase, RespError, RespReader, SharedKvdTestCase, cmd, kvd_bin, wait_until)


class ConfKvd(KvdServer):
    """A KvdServer started as `kvd CONFIG-FILE --bind ... --port ...`."""

    def __init__(self, conf, extra=(), **kw):
        super().__init__(extra, **kw)
        self.conf = conf

    def argv(self, port=None):
        return [kvd_bin(), self.conf] + super().argv(port)[1:]

SUB_MODE_ERR = ("ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET "
                "are allowed in this context")
# Redis 7.0.15's CLIENT LIST line: every field, in order.
CLIENT_LINE = re.compile(
    r"id=(\d+) addr=(127\.0\.0\.1:\d+) laddr=(127\.0\.0\.1:\d+) fd=\d+ name=(\S*) age=\d+ idle=\d+ "
    r"flags=([A-Za-z]+) db=0 sub=(\d+) psub=(\d+) ssub=0 multi=(-?\d+) qbuf=\d+ qbuf-free=\d+ argv-mem=\d+ "
    r"multi-mem=\d+ rbs=\d+ rbp=\d+ obl=\d+ oll=\d+ omem=\d+ tot-mem=\d+ events=r cmd=(\S+) user=default "
    r"redir=-1 resp=2$")


def clients(r, *args):
    """CLIENT LIST parsed: a list of dicts, one per line, each checked
    against Redis's line format."""
    out = []
    for line in r.execute_command("CLIENT", "LIST", *args).decode().splitlines():
        m = CLIENT_LINE.match(line)
        assert m, "not Redis's CLIENT LIST format: %r" % line
        out.append(dict(zip(("id", "addr", "laddr", "name", "flags", "sub", "psub", "multi", "cmd"), m.groups())))
    return out


class Conn:
    """A raw RESP connection (subscriber-mode replies are arrays that
    redis-py's plain client does not expect)."""

    def __init__(self, srv):
        self.s = srv.sock(10)
        self.rd = RespReader(self.s)

    def send(self, *args):
        self.s.sendall(cmd(*args))

    def call(self, *args):
        self.send(*args)
        return self.rd.read()

    def read(self):
        return self.rd.read()

    def close(self):
        self.s.close()


class TestPubSub(SharedKvdTestCase):
    SERVER_EXTRA = ("--io-threads", "2")

    def setUp(self):
        super().setUp()
        self.conns = []

    def tearDown(self):
        for c in self.conns:
            c.close()
        super().tearDown()

    def conn(self):
        c = Conn(self.srv)
        self.conns.append(c)
        return c

    def test_subscribe_replies_are_redis_bytes(self):
        # The same bytes redis-server 7.0.15 sends for this stream.
        reqs = [cmd("SUBSCRIBE", "a", "b"), cmd("GET", "x"), cmd("PING"), cmd("PING", "hi"), cmd("UNSUBSCRIBE"),
                cmd("UNSUBSCRIBE"), cmd("PSUBSCRIBE", "p*"), cmd("PUNSUBSCRIBE"), cmd("PUNSUBSCRIBE"),
                cmd("PUBSUB", "NUMPAT"), cmd("PUBSUB"), cmd("PUBSUB", "FOO"), cmd("SUBSCRIBE"), cmd("PUBLISH", "a")]
        want = (b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"
                b"-" + SUB_MODE_ERR.encode() + b"\r\n"
                b"*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n"
                b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"
                b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n"
                b"*3\r\n$10\r\npsubscribe\r\n$2\r\np*\r\n:1\r\n*3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n"
                b"*3\r\n$12\r\npunsubscribe\r\n$-1\r\n:0\r\n:0\r\n"
                b"-ERR wrong number of arguments for 'pubsub' command\r\n"
                b"-ERR unknown subcommand 'FOO'. Try PUBSUB HELP.\r\n"
                b"-ERR wrong number of arguments for 'subscribe' command\r\n"
                b"-ERR wrong number of arguments for 'publish' command\r\n")
        with self.srv.sock(5) as s:
            s.sendall(b"".join(reqs))
            got = b""
            deadline = time.monotonic() + 5
            while len(got) < len(want) and time.monotonic() < deadline:
                got += s.recv(65536)
        self.assertEqual(want, got)

    def test_messages_reach_every_subscriber_in_one_order(self):
        subs = [self.conn() for _ in range(6)]  # spread over both I/O threads
        for i, c in enumerate(subs):
            if i % 2:
                self.assertEqual([b"psubscribe", b"news.*", 1], c.call("PSUBSCRIBE", "news.*"))
            else:
                self.assertEqual([b"subscribe", b"news.a", 1], c.call("SUBSCRIBE", "news.a"))
        pubs = [self.client() for _ in range(2)]
        n = 300
        # Two publishers at once: every subscriber must see the same
        # interleaving (one order under the registry's lock).
        counts = []

        def publish(p, tag):
            counts.append([p.publish("news.a", "%s%d" % (tag, i)) for i in range(n)])
        ts = [threading.Thread(target=publish, args=(p, t)) for p, t in zip(pubs, "xy")]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        self.assertEqual([[6] * n, [6] * n], counts)  # 3 channel + 3 pattern subscribers
        orders = []
        for i, c in enumerate(subs):
            got = [c.read() for _ in range(2 * n)]
            if i % 2:
                self.assertTrue(all(m[:3] == [b"pmessage", b"news.*", b"news.a"] for m in got))
            else:
                self.assertTrue(all(m[:2] == [b"message", b"news.a"] for m in got))
            orders.append([m[-1] for m in got])
        for o in orders:
            self.assertEqual(orders[0], o)
        self.assertEqual(["x%d" % i for i in range(n)], [m.decode() for m in orders[0] if m.startswith(b"x")])

    def test_publish_counts_and_pubsub_introspection(self):
        a, b = self.conn(), self.conn()
        a.call("SUBSCRIBE", "c1")
        a.call("SUBSCRIBE", "c2")
        b.call("SUBSCRIBE", "c1")
        b.call("PSUBSCRIBE", "c*")
        a.call("PSUBSCRIBE", "c*")
        a.call("PSUBSCRIBE", "x?")
        r = self.r
        # c1: two channel subscribers and two clients on the pattern c*.
        self.assertEqual(4, r.publish("c1", "m"))
        self.assertEqual(3, r.publish("c2", "m"))
        self.assertEqual(0, r.publish("zz", "m"))
        self.assertEqual([b"c1", b"c2"], sorted(r.execute_command("PUBSUB", "CHANNELS")))
        self.assertEqual([b"c2"], r.execute_command("PUBSUB", "CHANNELS", "*2"))
        self.assertEqual([b"c1", 2, b"c2", 1, b"zz", 0], r.execute_command("PUBSUB", "NUMSUB", "c1", "c2", "zz"))
        self.assertEqual(2, r.execute_command("PUBSUB", "NUMPAT"))  # distinct patterns
        info = r.info("stats")
        self.assertEqual((2, 2), (info["pubsub_channels"], info["pubsub_patterns"]))
        with self.assertRaisesRegex(redis.ResponseError, r"wrong number of arguments for 'pubsub\|numpat'"):
            r.execute_command("PUBSUB", "NUMPAT", "x")
        # A client that goes away leaves no channel behind.
        a.close()
        b.close()
        self.conns.clear()
        self.assertTrue(wait_until(lambda: r.execute_command("PUBSUB", "NUMPAT") == 0, 5))
        self.assertEqual([], r.execute_command("PUBSUB", "CHANNELS"))
        self.assertEqual(0, r.publish("c1", "m"))

    def test_redis_py_pubsub_client(self):
        p = self.r.pubsub()
        p.subscribe("jobs")
        p.psubscribe("ev:*")
        self.assertEqual("subscribe", p.get_message(timeout=5)["type"])
        self.assertEqual("psubscribe", p.get_message(timeout=5)["type"])
        other = self.client()
        self.assertEqual(1, other.publish("jobs", "j1"))
        self.assertEqual(1, other.publish("ev:x", "e1"))
        m1, m2 = p.get_message(timeout=5), p.get_message(timeout=5)
        self.assertEqual(("message", b"jobs", b"j1"), (m1["type"], m1["channel"], m1["data"]))
        self.assertEqual(("pmessage", b"ev:*", b"ev:x", b"e1"), (m2["type"], m2["pattern"], m2["channel"], m2["data"]))
        p.unsubscribe()
        p.punsubscribe()
        p.close()

    def test_subscriber_mode_refuses_other_commands_and_reset_leaves_it(self):
        c = self.conn()
        c.call("SUBSCRIBE", "s")
        self.assertEqual(RespError(SUB_MODE_ERR), c.call("GET", "x"))
        self.assertEqual("RESET", c.call("RESET"))
        self.assertIsNone(c.call("GET", "x"))  # a normal client again
        self.assertEqual(0, self.r.publish("s", "m"))

    def test_publish_in_multi_reaches_subscribers_after_the_write(self):
        c = self.conn()
        c.call("SUBSCRIBE", "done")
        seen = []
        r2 = self.client()

        def reader():
            m = c.read()
            seen.append((m, r2.get("k")))
        t = threading.Thread(target=reader)
        t.start()
        p = self.r.pipeline(transaction=True)
        p.set("k", "v1").publish("done", "k").get("k")
        self.assertEqual([True, 1, b"v1"], p.execute())
        t.join(10)
        self.assertEqual([([b"message", b"done", b"k"], b"v1")], seen)

    def test_slow_subscriber_is_cut_off_by_the_pubsub_limit(self):
        r = self.r
        old = r.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
        try:
            r.config_set("client-output-buffer-limit", "pubsub 256kb 0 0")
            slow = socket.create_connection(("127.0.0.1", self.srv.port))
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.sendall(cmd("SUBSCRIBE", "firehose"))
            fast = self.conn()
            fast.call("SUBSCRIBE", "firehose")
            self.assertTrue(wait_until(lambda: r.execute_command("PUBSUB", "NUMSUB", "firehose")[1] == 2, 5))
            before = r.info("stats")["client_output_buffer_limit_disconnections"]
            payload = "x" * 4096
            sent = 0
            deadline = time.monotonic() + 20
            # Bounded: the slow client must go within 16 MiB of messages.
            while time.monotonic() < deadline and sent < 4096:
                n = r.publish("firehose", payload)
                sent += 1
                self.assertEqual([b"message", b"firehose", payload.encode()], fast.read())  # it keeps up
                if n == 1:
                    break
            self.assertLess(sent, 4096, "the slow subscriber was never cut off")
            self.assertEqual(before + 1, r.info("stats")["client_output_buffer_limit_disconnections"])
            self.assertIn("limit=hard sub=1 psub=0", self.srv.read_log())
            # Closed by the server (the kernel may still be handing the
            # tiny window the bytes sent before): gone from the lists.
            self.assertEqual(1, len(clients(r, "TYPE", "pubsub")))
            self.assertEqual([b"firehose", 1], r.execute_command("PUBSUB", "NUMSUB", "firehose"))
            slow.close()
            # The normal class does not apply to subscribers, nor this
            # one to normal clients: the fast subscriber is still served.
            self.assertEqual(1, r.publish("firehose", "last"))
            self.assertEqual([b"message", b"firehose", b"last"], fast.read())
        finally:
            r.config_set("client-output-buffer-limit", old)

    def test_publish_on_a_replica(self):
        replica = KvdServerOnce.start(["--io-threads", "2", "--replicaof", "127.0.0.1 %d" % self.srv.port])
        try:
            rr = replica.client()
            self.assertTrue(wait_until(lambda: rr.info("replication").get("master_link_status") == "up", 10))
            with self.assertRaises(redis.ReadOnlyError):
                rr.set("k", "v")
            c = Conn(replica)
            c.call("SUBSCRIBE", "r")
            self.assertEqual(1, rr.publish("r", "hello"))  # read-only replica, pub/sub still works
            self.assertEqual([b"message", b"r", b"hello"], c.read())
            # Messages are not replicated: a primary's subscribers only.
            self.assertEqual(0, self.r.publish("r", "x"))
            c.close()
            rr.close()
        finally:
            KvdServerOnce.stop(replica, self)


class TestGateOrder(KvdTestCase):
    def test_subscriber_mode_is_checked_before_stale_data(self):
        # A replica of a primary that is not there, refusing stale reads.
        srv = self.start_server(["--replicaof", "127.0.0.1 1", "--replica-serve-stale-data", "no"])
        c = Conn(srv)
        try:
            self.assertTrue(c.call("GET", "k").startswith("MASTERDOWN "))
            self.assertTrue(c.call("SET", "k", "v").startswith("READONLY "))
            c.call("SUBSCRIBE", "x")
            # As Redis 7.0 (processCommand): read-only first, then
            # subscriber mode, then stale data.
            self.assertTrue(c.call("SET", "k", "v").startswith("READONLY "))
            self.assertEqual(RespError(SUB_MODE_ERR), c.call("GET", "k"))
            self.assertEqual([b"pong", b""], c.call("PING"))
        finally:
            c.close()


class KvdServerOnce:
    """A second kvd inside a shared-server test, always stopped and checked."""

    @staticmethod
    def start(extra):
        from kvdtest import KvdServer
        s = KvdServer(extra)
        s.start()
        return s

    @staticmethod
    def stop(s, test):
        try:
            rc = s.stop()
            test.assertEqual(0, rc)
            test.assertEqual([], s.sanitizer_reports(), s.read_stderr()[-4000:])
        finally:
            s.cleanup()


class TestClientCommands(KvdTestCase):
    AUTO_START = True
    SERVER_EXTRA = ("--io-threads", "2")

    def test_client_list_and_info_in_redis_format(self):
        r = self.r
        r.client_setname("me")
        others = [self.client() for _ in range(3)]
        for i, o in enumerate(others):
            o.client_setname("o%d" % i)
        lst = clients(r)
        self.assertEqual(4, len(lst))
        self.assertEqual(sorted(int(c["id"]) for c in lst), [int(c["id"]) for c in lst])  # oldest first
        self.assertEqual({"me", "o0", "o1", "o2"}, {c["name"] for c in lst})
        me = [c for c in lst if c["name"] == "me"][0]
        self.assertEqual(("N", "-1", "client"), (me["flags"], me["multi"], me["cmd"]))
        self.assertEqual("127.0.0.1:%d" % self.srv.port, me["laddr"])
        info = r.execute_command("CLIENT", "INFO").decode()
        self.assertTrue(CLIENT_LINE.match(info.rstrip("\n")), info)
        self.assertIn("id=%s " % me["id"], info)
        by_id = clients(r, "ID", me["id"], lst[-1]["id"])
        self.assertEqual({me["id"], lst[-1]["id"]}, {c["id"] for c in by_id})
        self.assertEqual(4, len(clients(r, "TYPE", "normal")))
        self.assertEqual([], clients(r, "TYPE", "pubsub"))
        for bad, err in ((("ID", "x"), "Invalid client ID"), (("TYPE", "foo"), "Unknown client type 'foo'"),
                         (("FOO",), "syntax error")):
            with self.assertRaisesRegex(redis.ResponseError, err):
                r.execute_command("CLIENT", "LIST", *bad)

    def test_client_list_shows_multi_and_subscriptions(self):
        c = Conn(self.srv)
        c.call("MULTI")
        c.call("SET", "a", "1")
        s = Conn(self.srv)
        s.call("SUBSCRIBE", "x", "y")
        s.read()
        s.call("PSUBSCRIBE", "z*")
        try:
            lst = {int(e["id"]): e for e in clients(self.r)}
            m = [e for e in lst.values() if e["flags"] == "x"]
            self.assertEqual(1, len(m))
            self.assertEqual("1", m[0]["multi"])
            p = [e for e in lst.values() if e["flags"] == "P"]
            self.assertEqual(("2", "1"), (p[0]["sub"], p[0]["psub"]))
        finally:
            c.close()
            s.close()

    def test_client_kill_filters(self):
        r = self.r
        victims = [Conn(self.srv) for _ in range(4)]
        for v in victims:
            v.call("PING")
        ids = [int(v.call("CLIENT", "ID")) for v in victims]
        addrs = {int(e["id"]): e["addr"] for e in clients(r)}
        # ID
        self.assertEqual(1, r.execute_command("CLIENT", "KILL", "ID", ids[0]))
        self.assertTrue(victims[0].rd.at_eof(5))
        # ADDR, and the old form's +OK / error
        self.assertEqual(1, r.execute_command("CLIENT", "KILL", "ADDR", addrs[ids[1]]))
        self.assertTrue(victims[1].rd.at_eof(5))
        self.assertEqual(b"OK", r.execute_command("CLIENT", "KILL", addrs[ids[2]]))
        self.assertTrue(victims[2].rd.at_eof(5))
        with self.assertRaisesRegex(redis.ResponseError, "^No such client$"):
            r.execute_command("CLIENT", "KILL", addrs[ids[2]])
        self.assertEqual(0, r.execute_command("CLIENT", "KILL", "ADDR", "1.2.3.4:5"))
        # USER: only default exists
        with self.assertRaisesRegex(redis.ResponseError, "No such user 'bob'"):
            r.execute_command("CLIENT", "KILL", "USER", "bob")
        # LADDR + USER default + TYPE normal kill everyone but the caller
        n = r.execute_command("CLIENT", "KILL", "LADDR", "127.0.0.1:%d" % self.srv.port, "USER", "default",
                              "TYPE", "normal")
        self.assertEqual(1, n)
        self.assertTrue(victims[3].rd.at_eof(5))
        self.assertEqual(1, len(clients(r)))  # the caller (SKIPME yes by default)
        for args, err in ((("ID", "0"), "client-id should be greater than 0"),
                          (("TYPE", "foo"), "Unknown client type 'foo'"),
                          (("SKIPME", "maybe"), "syntax error"), (("ID", "1", "FOO"), "syntax error")):
            with self.assertRaisesRegex(redis.ResponseError, err):
                r.execute_command("CLIENT", "KILL", *args)
        for v in victims:
            v.close()

    def test_client_kill_skipme_no_closes_the_caller_after_its_reply(self):
        self.r.ping()  # connected: the other normal client
        c = Conn(self.srv)
        self.assertEqual(2, c.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "no"))
        self.assertTrue(c.rd.at_eof(5))
        c.close()
        self.assertTrue(wait_until(lambda: len(clients(self.client())) == 1, 5))

    def test_script_kill_answers_notbusy(self):
        with self.assertRaisesRegex(redis.ResponseError, r"^NOTBUSY No scripts in execution right now\.$"):
            self.r.execute_command("SCRIPT", "KILL")
        c = Conn(self.srv)
        self.assertEqual(RespError("NOTBUSY No scripts in execution right now."), c.call("SCRIPT", "KILL"))
        c.close()


class TestSentinelTransaction(KvdTestCase):
    """The failover transaction Sentinel sends to the replica it promotes,
    and to the other replicas (sentinel.c, sentinelSendSlaveOf), replayed
    against kvd: each effect checked."""

    def test_promote_a_replica_in_one_transaction(self):
        primary = self.start_server(["--io-threads", "2"])
        # The replica runs from a config file naming its primary, so that
        # CONFIG REWRITE has a file to rewrite.
        confdir = tempfile.mkdtemp(prefix="kvdconf-")
        self.addCleanup(shutil.rmtree, confdir, True)
        conf = os.path.join(confdir, "kvd.conf")
        with open(conf, "w") as f:
            f.write("# a replica\nio-threads 2\nreplicaof 127.0.0.1 %d\n" % primary.port)
        replica = ConfKvd(conf)
        self._servers.append(replica)
        replica.start()
        rp = self.client(primary)
        rr = self.client(replica)
        rp.set("k", "v")
        self.assertTrue(wait_until(lambda: rr.get("k") == b"v", 10))
        # Clients the transaction must kill: a normal one and a subscriber.
        normal = Conn(replica)
        normal.call("PING")
        sub = Conn(replica)
        sub.call("SUBSCRIBE", "__sentinel__:hello")
        s = Conn(replica)
        s.call("CLIENT", "SETNAME", "sentinel-1234-cmd")
        replies = [s.call(*c) for c in (("MULTI",), ("SLAVEOF", "NO", "ONE"), ("CONFIG", "REWRITE"),
                                          ("CLIENT", "KILL", "TYPE", "normal"), ("CLIENT", "KILL", "TYPE", "pubsub"),
                                          ("EXEC",))]
        self.assertEqual(["OK"] + ["QUEUED"] * 4, replies[:5])
        ex = replies[5]
        self.assertEqual(4, len(ex))
        self.assertEqual(["OK", "OK"], ex[:2])
        with open(conf) as f:
            text = f.read()
        # The role survives a restart: the replicaof line is gone.
        self.assertTrue(text.startswith("# a replica\nio-threads 2\n"), text)
        self.assertNotIn("replicaof", text)
        # rr (redis-py) and `normal` are normal clients; the caller is skipped.
        self.assertEqual(2, ex[2])
        self.assertEqual(1, ex[3])
        self.assertTrue(normal.rd.at_eof(5))
        self.assertTrue(sub.rd.at_eof(5))
        self.assertEqual(b"master", s.call("ROLE")[0])
        info = s.call("INFO", "replication").decode()
        self.assertIn("role:master", info)
        self.assertEqual("OK", s.call("SET", "k2", "v2"))
        # And the way back: SLAVEOF host port in the same shape.
        replies = [s.call(*c) for c in (("MULTI",), ("SLAVEOF", "127.0.0.1", str(primary.port)),
                                          ("CONFIG", "REWRITE"), ("CLIENT", "KILL", "TYPE", "normal"),
                                          ("CLIENT", "KILL", "TYPE", "pubsub"), ("EXEC",))]
        self.assertEqual(["OK", "OK"], replies[5][:2])
        with open(conf) as f:
            self.assertIn("\nreplicaof 127.0.0.1 %d\n" % primary.port, f.read())
        rr2 = self.client(replica)
        self.assertTrue(wait_until(lambda: rr2.info("replication").get("master_link_status") == "up", 10))
        self.assertEqual(b"slave", s.call("ROLE")[0])
        for c in (normal, sub, s):
            c.close()


if __name__ == "__main__":
    unittest.main()
