"""
Every command kvd supports, against a real kvd, with Redis 7's exact
replies and error strings. Errors are checked over a raw connection
(self.call) so that the full text, prefix included, is compared; values
and normal replies mostly through redis-py.
"""
import re
import socket
import time
import unittest

import redis

from kvdtest import (KvdServer, KvdTestCase, RespError, RespReader, SharedKvdTestCase, cmd, raw_exchange,
                     wait_until)

ERR_INT = "ERR value is not an integer or out of range"
ERR_SYNTAX = "ERR syntax error"


def parse_info(text):
    """INFO text -> {section: {field: value-string}}."""
    out, sec = {}, None
    for line in text.split("\r\n"):
        if line.startswith("# "):
            sec = line[2:].strip().lower()
            out[sec] = {}
        elif line and sec is not None:
            k, _, v = line.partition(":")
            out[sec][k] = v
    return out


class CommandCase(SharedKvdTestCase):
    """Shared server; self.call(*args) sends one command on a raw
    connection kept for the test and returns the reply (errors as
    RespError strings with their prefix)."""

    def setUp(self):
        super().setUp()
        self._sock = None

    def tearDown(self):
        if self._sock:
            self._sock.close()
        super().tearDown()

    def call(self, *args):
        if self._sock is None:
            self._sock = self.srv.sock()
            self._rd = RespReader(self._sock)
        self._sock.sendall(cmd(*args))
        return self._rd.read()

    def assertErr(self, expected, *args):
        reply = self.call(*args)
        self.assertIsInstance(reply, RespError, "%r answered %r, not an error" % (args, reply))
        self.assertEqual(expected, str(reply), "reply to %r" % (args,))

    # TTLs are checked with a few seconds of slack: the suite may run on
    # a loaded machine (sanitizers, parallel CTest).
    def assertTTL(self, key, secs, slack=5):
        ttl = self.call("TTL", key)
        self.assertTrue(secs - slack <= ttl <= secs, "TTL %s is %r, expected about %d" % (key, ttl, secs))

    def assertPTTL(self, key, ms, slack=5000):
        pttl = self.call("PTTL", key)
        self.assertTrue(ms - slack < pttl <= ms, "PTTL %s is %r, expected about %d" % (key, pttl, ms))

    def info(self, section=None):
        text = self.call("INFO", section) if section else self.call("INFO")
        return text.decode()


class TestConnection(CommandCase):
    def test_ping(self):
        self.assertEqual("PONG", self.call("PING"))
        self.assertEqual(b"hello world", self.call("PING", "hello world"))
        self.assertErr("ERR wrong number of arguments for 'ping' command", "PING", "a", "b")

    def test_echo(self):
        self.assertEqual(b"x\x00y", self.call("ECHO", b"x\x00y"))
        self.assertEqual(b"", self.call("ECHO", ""))
        self.assertErr("ERR wrong number of arguments for 'echo' command", "ECHO")

    def test_quit_replies_ok_and_closes(self):
        with self.srv.sock() as s:
            s.sendall(cmd("QUIT") + cmd("PING"))
            rd = RespReader(s)
            self.assertEqual("OK", rd.read())
            self.assertTrue(rd.at_eof(5), "connection still open after QUIT")
        self.assertTrue(self.r.ping())

    def test_select(self):
        self.assertEqual("OK", self.call("SELECT", "0"))
        self.assertErr("ERR DB index is out of range", "SELECT", "1")
        self.assertErr("ERR DB index is out of range", "SELECT", "-1")
        self.assertErr(ERR_INT, "SELECT", "abc")
        self.assertErr("ERR wrong number of arguments for 'select' command", "SELECT")

    def test_auth_without_requirepass(self):
        self.assertErr("ERR AUTH <password> called without any password configured for the default user. "
                       "Are you sure your configuration is correct?", "AUTH", "whatever")
        # Redis 7: without a password the default user is "nopass", so the
        # two-argument form succeeds for it (and fails for anyone else).
        self.assertEqual("OK", self.call("AUTH", "default", "anything"))
        self.assertErr("WRONGPASS invalid username-password pair or user is disabled.", "AUTH", "bob", "x")
        self.assertIsInstance(self.call("HELLO", "2", "AUTH", "default", "anything"), list)
        self.assertErr("ERR syntax error", "AUTH", "a", "b", "c")
        # redis-py given a username and password connects.
        self.assertTrue(self.client(username="default", password="x").ping())

    def test_hello(self):
        reply = self.call("HELLO", "2")
        self.assertIsInstance(reply, list)
        fields = dict(zip(reply[0::2], reply[1::2]))
        self.assertEqual(2, fields[b"proto"])
        self.assertEqual(b"standalone", fields[b"mode"])
        self.assertEqual(b"master", fields[b"role"])
        self.assertEqual(self.call("CLIENT", "ID"), fields[b"id"])
        self.assertErr("NOPROTO unsupported protocol version", "HELLO", "3")
        self.assertErr("ERR Protocol version is not an integer or out of range", "HELLO", "x")
        # HELLO with no version answers too (redis-py / redis-cli probe it).
        self.assertIsInstance(self.call("HELLO"), list)
        # SETNAME option.
        self.assertIsInstance(self.call("HELLO", "2", "SETNAME", "viahello"), list)
        self.assertEqual(b"viahello", self.call("CLIENT", "GETNAME"))

    def test_client_setname_getname_setinfo_id(self):
        self.assertIsNone(self.call("CLIENT", "GETNAME"))
        self.assertEqual("OK", self.call("CLIENT", "SETNAME", "worker-1"))
        self.assertEqual(b"worker-1", self.call("CLIENT", "GETNAME"))
        self.assertErr("ERR Client names cannot contain spaces, newlines or special characters.",
                       "CLIENT", "SETNAME", "a b")
        self.assertEqual(b"worker-1", self.call("CLIENT", "GETNAME"))
        self.assertEqual("OK", self.call("CLIENT", "SETINFO", "lib-name", "redis-py"))
        self.assertEqual("OK", self.call("CLIENT", "SETINFO", "LIB-VER", "4.3.4"))
        self.assertErr("ERR Unrecognized option 'bogus'", "CLIENT", "SETINFO", "bogus", "x")
        my_id = self.call("CLIENT", "ID")
        self.assertIsInstance(my_id, int)
        self.assertGreater(my_id, 0)
        self.assertEqual(my_id, self.call("CLIENT", "ID"))
        # Another connection has another id.
        self.assertNotEqual(my_id, self.r.client_id())
        self.assertTrue(str(self.call("CLIENT", "NOSUCH")).startswith("ERR unknown subcommand"))

    def test_command(self):
        count = self.call("COMMAND", "COUNT")
        self.assertIsInstance(count, int)
        table = self.call("COMMAND")
        self.assertEqual(count, len(table))
        names = {e[0] for e in table}
        for name in (b"get", b"set", b"multi", b"exec", b"scan", b"config", b"info", b"getex", b"pexpireat"):
            self.assertIn(name, names)
        self.assertIsInstance(self.call("COMMAND", "DOCS"), list)
        info = self.call("COMMAND", "INFO", "get", "nosuchcmd", "SET")
        self.assertEqual(3, len(info))
        self.assertEqual(b"get", info[0][0])
        self.assertEqual(2, info[0][1])
        self.assertIn("readonly", info[0][2])
        self.assertEqual([1, 1, 1], info[0][3:6])
        self.assertIsNone(info[1])
        self.assertEqual(b"set", info[2][0])
        self.assertEqual(-3, info[2][1])
        self.assertIn("write", info[2][2])
        # redis-py's own helper parses the table.
        self.assertIn("get", self.r.command())

    def test_unknown_command(self):
        self.assertErr("ERR unknown command 'foo', with args beginning with: 'a' 'b' ", "foo", "a", "b")
        self.assertErr("ERR unknown command 'nosuch', with args beginning with: ", "nosuch")
        # The connection goes on.
        self.assertEqual("PONG", self.call("PING"))
        # Long names and arguments are cut as Redis 7 cuts them: the name
        # to 128 characters, the quoted arguments to about 128 together.
        self.assertErr("ERR unknown command '%s', with args beginning with: " % ("n" * 128), "n" * 200)
        self.assertErr("ERR unknown command 'foo', with args beginning with: '%s' " % ("a" * 128),
                       "foo", "a" * 200, "b")
        self.assertErr("ERR unknown command 'foo', with args beginning with: '%s' '%s' " % ("a" * 100, "b" * 25),
                       "foo", "a" * 100, "b" * 100, "c")
        # CR and LF become spaces, one each (the reply stays one line).
        self.assertErr("ERR unknown command 'foo', with args beginning with: 'a  b' ", "foo", "a\r\nb")

    def test_wrong_arity(self):
        self.assertErr("ERR wrong number of arguments for 'get' command", "get")
        self.assertErr("ERR wrong number of arguments for 'get' command", "GET", "a", "b")
        self.assertErr("ERR wrong number of arguments for 'set' command", "SET", "a")
        self.assertErr("ERR wrong number of arguments for 'incrby' command", "INCRBY", "a")
        self.assertErr("ERR wrong number of arguments for 'del' command", "DEL")


class TestServerCommands(CommandCase):
    PERSISTENCE_FIELDS = (
        "loading", "aof_enabled", "fsync_policy", "log_bytes", "live_bytes", "dead_bytes", "segments",
        "active_segment", "records", "last_seq", "fdatasyncs", "fdatasync_avg_us", "fdatasync_max_us",
        "group_commits", "writes_per_group_commit", "writes_per_fdatasync", "failstop", "failstop_reason",
        "recovery_mode", "recovery_segments", "recovery_records", "recovery_keys", "recovery_torn_bytes_cut",
        "recovery_problems", "recovery_skipped_bytes", "recovery_ms")

    def test_threads_are_named_and_serving_threads_keep_normal_priority(self):
        # Names show in top -H and ps -L; only background threads
        # (kvd-compact, kvd-hints, kvd-scrub) run at a lowered priority.
        import os
        task = "/proc/%d/task" % self.srv.proc.pid
        threads = {}
        for tid in os.listdir(task):
            with open(os.path.join(task, tid, "comm")) as f:
                name = f.read().strip()
            with open(os.path.join(task, tid, "stat")) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            threads.setdefault(name, []).append(int(fields[16]))  # field 19: nice
        self.assertIn("kvd-io-0", threads)
        self.assertIn("kv-writer", threads)
        self.assertEqual([0], threads["kv-writer"])
        for name, nices in threads.items():
            if name.startswith("kvd-io-"):
                self.assertEqual([0], nices, name)

    def test_info_sections(self):
        self.r.set("a", "1")
        self.r.set("b", "2", ex=100)
        info = parse_info(self.info())
        for sec in ("server", "clients", "persistence", "stats", "keyspace"):
            self.assertIn(sec, info)
        self.assertEqual("7.0.0", info["server"]["redis_version"][:5])
        self.assertEqual(str(self.srv.port), info["server"]["tcp_port"])
        self.assertEqual(str(self.srv.proc.pid), info["server"]["process_id"])
        self.assertGreaterEqual(int(info["clients"]["connected_clients"]), 2)
        self.assertEqual("10000", info["clients"]["maxclients"])
        for f in self.PERSISTENCE_FIELDS:
            self.assertIn(f, info["persistence"], "INFO persistence lacks %s" % f)
        self.assertEqual("always", info["persistence"]["fsync_policy"])
        self.assertEqual("0", info["persistence"]["failstop"])
        self.assertGreater(int(info["persistence"]["log_bytes"]), 0)
        self.assertGreater(int(info["persistence"]["fdatasyncs"]), 0)
        for f in ("total_connections_received", "total_commands_processed", "instantaneous_ops_per_sec",
                  "rejected_connections", "expired_keys", "keyspace_hits", "keyspace_misses"):
            self.assertIn(f, info["stats"])
        self.assertTrue(info["keyspace"]["db0"].startswith("keys=2,expires=1"), info["keyspace"])

    def test_info_one_section(self):
        text = self.info("keyspace")
        self.assertEqual("# Keyspace\r\n", text)  # empty store: no db0 line
        self.r.set("x", "1")
        self.assertIn("db0:keys=1,expires=0", self.info("keyspace"))
        text = self.info("persistence")
        self.assertIn("# Persistence", text)
        self.assertNotIn("# Server", text)
        self.assertNotIn("# Keyspace", text)

    def test_info_hits_misses(self):
        before = parse_info(self.info("stats"))["stats"]
        self.r.set("h", "1")
        self.r.get("h")
        self.r.get("nope")
        after = parse_info(self.info("stats"))["stats"]
        self.assertEqual(int(before["keyspace_hits"]) + 1, int(after["keyspace_hits"]))
        self.assertEqual(int(before["keyspace_misses"]) + 1, int(after["keyspace_misses"]))

    def test_dbsize(self):
        self.assertEqual(0, self.call("DBSIZE"))
        self.r.mset({"a": 1, "b": 2, "c": 3})
        self.assertEqual(3, self.call("DBSIZE"))
        self.r.delete("b")
        self.assertEqual(2, self.call("DBSIZE"))

    def test_config_get(self):
        reply = self.call("CONFIG", "GET", "maxclients")
        self.assertEqual([b"maxclients", b"10000"], reply)
        everything = self.call("CONFIG", "GET", "*")
        d = dict(zip(everything[0::2], everything[1::2]))
        for name in (b"dir", b"bind", b"port", b"appendfsync", b"requirepass", b"maxclients", b"hz",
                     b"io-threads", b"proto-max-bulk-len", b"segment-size", b"save", b"appendonly"):
            self.assertIn(name, d)
        self.assertEqual(b"127.0.0.1", d[b"bind"])
        self.assertEqual(self.srv.dir.encode(), d[b"dir"])
        self.assertEqual(b"always", d[b"appendfsync"])
        # glob patterns, case-insensitive, several at once
        d = dict(zip(*[iter(self.call("CONFIG", "GET", "max*"))] * 2))
        self.assertEqual({b"maxclients"}, set(d))
        d = dict(zip(*[iter(self.call("CONFIG", "GET", "APPENDFSYNC", "h?"))] * 2))
        self.assertEqual({b"appendfsync": b"always", b"hz": b"10"}, d)
        self.assertEqual([], self.call("CONFIG", "GET", "nosuchsetting"))
        # redis-py view
        self.assertEqual({"maxclients": "10000"}, self.r.config_get("maxclients"))

    def test_config_set(self):
        try:
            self.assertEqual("OK", self.call("CONFIG", "SET", "maxclients", "500"))
            self.assertEqual([b"maxclients", b"500"], self.call("CONFIG", "GET", "maxclients"))
            self.assertEqual("OK", self.call("CONFIG", "SET", "hz", "20", "loglevel", "verbose"))
            self.assertEqual([b"hz", b"20"], self.call("CONFIG", "GET", "hz"))
            self.assertEqual([b"loglevel", b"verbose"], self.call("CONFIG", "GET", "loglevel"))
            self.assertErr("ERR CONFIG SET failed (possibly related to argument 'port') - can't set immutable config",
                           "CONFIG", "SET", "port", "1234")
            self.assertErr("ERR CONFIG SET failed (possibly related to argument 'dir') - can't set immutable config",
                           "CONFIG", "SET", "dir", "/tmp")
            self.assertErr("ERR Unknown option or number of arguments for CONFIG SET - 'nosuch'",
                           "CONFIG", "SET", "nosuch", "1")
            bad = self.call("CONFIG", "SET", "hz", "abc")
            self.assertIsInstance(bad, RespError)
            self.assertTrue(bad.startswith("ERR CONFIG SET failed (possibly related to argument 'hz')"), bad)
            self.assertEqual([b"hz", b"20"], self.call("CONFIG", "GET", "hz"))
            self.assertEqual([str(self.srv.port).encode()], self.call("CONFIG", "GET", "port")[1:])
            self.assertTrue(str(self.call("CONFIG", "NOSUCH")).startswith("ERR unknown subcommand"))
        finally:
            self.r.config_set("maxclients", "10000")
            self.r.config_set("hz", "10")
            self.r.config_set("loglevel", "notice")

    def test_flushdb_flushall(self):
        self.r.mset({"a": 1, "b": 2})
        self.r.set("c", 3, ex=100)
        self.assertEqual("OK", self.call("FLUSHDB"))
        self.assertEqual(0, self.r.dbsize())
        self.assertEqual([], self.r.keys())
        self.assertIsNone(self.r.get("a"))
        self.r.mset({"a": 1, "b": 2})
        self.assertEqual("OK", self.call("FLUSHALL"))
        self.assertEqual(0, self.r.dbsize())
        self.r.set("a", 1)
        self.assertEqual("OK", self.call("FLUSHALL", "ASYNC"))
        self.assertEqual(0, self.r.dbsize())
        self.assertEqual("OK", self.call("FLUSHDB", "SYNC"))
        self.assertErr(ERR_SYNTAX, "FLUSHALL", "bogus")

    def test_compact_and_bgrewriteaof_start_a_background_compaction(self):
        for i in range(300):
            self.r.set("ck%d" % (i % 10), "v" * 500)  # overwrites: dead bytes
        for name in ("COMPACT", "BGREWRITEAOF"):
            reply = self.call(name)
            if isinstance(reply, RespError):  # the previous one still runs
                self.assertEqual("ERR Background compaction already in progress", reply)
            else:
                self.assertEqual("Background compaction started", reply)
            deadline = time.time() + 10
            while time.time() < deadline:
                info = parse_info(self.info("persistence"))["persistence"]
                if info["compaction_in_progress"] == "0":
                    break
                time.sleep(0.05)
            self.assertEqual("0", info["compaction_in_progress"])
            self.assertEqual("ok", info["compaction_last_status"])
        for i in range(10):
            self.assertEqual(b"v" * 500, self.r.get("ck%d" % i))
        self.assertEqual("PONG", self.call("PING"))


class TestShutdown(KvdTestCase):
    def test_shutdown_exits_zero(self):
        srv = self.start_server()
        c = srv.client()
        c.set("k", "v")
        with srv.sock() as s:
            s.sendall(cmd("SHUTDOWN"))
            self.assertTrue(RespReader(s).at_eof(10))
        self.assertEqual(0, srv.wait_exit(10))
        self.assertIn("user requested shutdown", srv.read_log())
        # The write made before SHUTDOWN is there after a restart.
        srv.start()
        self.assertEqual(b"v", srv.client().get("k"))


class TestAuth(KvdTestCase):
    AUTH_ERR = "WRONGPASS invalid username-password pair or user is disabled."

    def test_requirepass(self):
        srv = self.start_server(["--requirepass", "s3cret pass"])

        def ex(*reqs):
            return raw_exchange(srv, b"".join(cmd(*r) for r in reqs), len(reqs))

        self.assertEqual(["NOAUTH Authentication required."], ex(("GET", "a")))
        self.assertEqual(["NOAUTH Authentication required."], ex(("SET", "a", "1")))
        self.assertEqual(["PONG"], ex(("PING",)))  # allowed before AUTH, as in Redis 7
        self.assertEqual([self.AUTH_ERR, "NOAUTH Authentication required."], ex(("AUTH", "wrong"), ("GET", "a")))
        self.assertEqual([self.AUTH_ERR], ex(("AUTH", "default", "wrong")))
        self.assertEqual([self.AUTH_ERR], ex(("AUTH", "someone", "s3cret pass")))
        self.assertEqual(["OK", "OK", b"1"], ex(("AUTH", "s3cret pass"), ("SET", "a", "1"), ("GET", "a")))
        self.assertEqual(["OK", b"1"], ex(("AUTH", "default", "s3cret pass"), ("GET", "a")))
        # HELLO before AUTH, and HELLO 2 AUTH.
        r = ex(("HELLO", "2"))[0]
        self.assertIsInstance(r, RespError)
        self.assertTrue(r.startswith("NOAUTH HELLO must be called with the client already authenticated"), r)
        r = ex(("HELLO", "2", "AUTH", "default", "s3cret pass"), ("GET", "a"))
        self.assertIsInstance(r[0], list)
        self.assertEqual(b"1", r[1])
        self.assertEqual([self.AUTH_ERR], ex(("HELLO", "2", "AUTH", "default", "nope")))
        # A queued MULTI command before AUTH is refused.
        self.assertEqual(["NOAUTH Authentication required."], ex(("MULTI",)))
        # redis-py with the password.
        self.assertEqual(b"1", self.client(srv, password="s3cret pass").get("a"))
        self.assertEqual(b"1", self.client(srv, username="default", password="s3cret pass").get("a"))
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "WRONGPASS"):
            self.client(srv, password="wrong").get("a")

    def test_config_set_requirepass(self):
        srv = self.start_server()
        c = self.client(srv)
        c.set("a", "1")
        c.config_set("requirepass", "newpass")
        # New clients need the password.
        self.assertEqual(["NOAUTH Authentication required."], raw_exchange(srv, cmd("GET", "a"), 1))
        self.assertEqual(b"1", self.client(srv, password="newpass").get("a"))
        self.assertEqual({"requirepass": "newpass"}, self.client(srv, password="newpass").config_get("requirepass"))
        # As in Redis 7, the client connected while there was no password
        # stays authenticated: it goes on working and can undo the setting.
        self.assertEqual(b"1", c.get("a"))
        c.config_set("requirepass", "")
        self.assertEqual([b"1"], raw_exchange(srv, cmd("GET", "a"), 1))
        # A password change does not log out a client that did AUTH.
        c.config_set("requirepass", "first")
        d = self.client(srv, password="first")
        self.assertEqual(b"1", d.get("a"))
        d.config_set("requirepass", "second")
        self.assertEqual(b"1", d.get("a"))
        self.assertEqual(["WRONGPASS invalid username-password pair or user is disabled."],
                         raw_exchange(srv, cmd("AUTH", "first"), 1))
        c.config_set("requirepass", "")


class TestStrings(CommandCase):
    def test_set_get(self):
        self.assertEqual("OK", self.call("SET", "k", "v"))
        self.assertEqual(b"v", self.call("GET", "k"))
        self.assertIsNone(self.call("GET", "missing"))
        self.assertEqual("OK", self.call("SET", "k", "v2"))
        self.assertEqual(b"v2", self.r.get("k"))
        self.assertEqual("OK", self.call("SET", "e", ""))
        self.assertEqual(b"", self.call("GET", "e"))

    def test_set_nx_xx(self):
        self.assertIsNone(self.call("SET", "k", "v", "XX"))
        self.assertIsNone(self.r.get("k"))
        self.assertEqual("OK", self.call("SET", "k", "v", "NX"))
        self.assertIsNone(self.call("SET", "k", "w", "NX"))
        self.assertEqual(b"v", self.r.get("k"))
        self.assertEqual("OK", self.call("SET", "k", "w", "XX"))
        self.assertEqual(b"w", self.r.get("k"))
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "NX", "XX")
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "XX", "NX")

    def test_set_get_option(self):
        self.assertIsNone(self.call("SET", "k", "v1", "GET"))
        self.assertEqual(b"v1", self.call("SET", "k", "v2", "GET"))
        self.assertEqual(b"v2", self.r.get("k"))
        # NX GET (Redis 7): the old value comes back and nothing is set.
        self.assertEqual(b"v2", self.call("SET", "k", "v3", "NX", "GET"))
        self.assertEqual(b"v2", self.r.get("k"))
        self.assertIsNone(self.call("SET", "nokey", "x", "XX", "GET"))
        self.assertIsNone(self.r.get("nokey"))
        self.assertEqual(b"v2", self.r.set("k", "v4", get=True))

    def test_set_expire_options(self):
        self.assertEqual("OK", self.call("SET", "k", "v", "EX", "100"))
        self.assertTTL("k", 100)
        self.assertEqual("OK", self.call("SET", "k", "v", "PX", "50000"))
        self.assertPTTL("k", 50000)
        at = int(time.time()) + 200
        self.assertEqual("OK", self.call("SET", "k", "v", "EXAT", str(at)))
        self.assertTTL("k", 200)
        pat = int(time.time() * 1000) + 300000
        self.assertEqual("OK", self.call("SET", "k", "v", "PXAT", str(pat)))
        self.assertPTTL("k", 300000)
        # Plain SET drops the TTL; KEEPTTL keeps it.
        self.assertEqual("OK", self.call("SET", "k", "v", "EX", "100"))
        self.assertEqual("OK", self.call("SET", "k", "v2", "KEEPTTL"))
        self.assertTTL("k", 100)
        self.assertEqual(b"v2", self.r.get("k"))
        self.assertEqual("OK", self.call("SET", "k", "v3"))
        self.assertEqual(-1, self.r.ttl("k"))
        self.assertEqual("OK", self.call("SET", "new", "v", "KEEPTTL"))
        self.assertEqual(-1, self.r.ttl("new"))
        # Case-insensitive options.
        self.assertEqual("OK", self.call("set", "k", "v", "ex", "10"))
        self.assertTTL("k", 10)

    def test_set_syntax_and_expire_errors(self):
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "EX")
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "BOGUS")
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "EX", "10", "PX", "100")
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "KEEPTTL", "EX", "10")
        self.assertErr(ERR_SYNTAX, "SET", "k", "v", "EX", "10", "KEEPTTL")
        self.assertErr(ERR_INT, "SET", "k", "v", "EX", "abc")
        self.assertErr(ERR_INT, "SET", "k", "v", "PX", "1.5")
        for opt in ("EX", "PX", "EXAT", "PXAT"):
            self.assertErr("ERR invalid expire time in 'set' command", "SET", "k", "v", opt, "0")
            self.assertErr("ERR invalid expire time in 'set' command", "SET", "k", "v", opt, "-5")
        self.assertErr("ERR invalid expire time in 'set' command", "SET", "k", "v", "EX", "9223372036854775807")
        self.assertIsNone(self.r.get("k"))  # nothing was set by any of these

    def test_set_exat_in_the_past(self):
        self.assertEqual("OK", self.call("SET", "k", "v", "EXAT", "1"))
        self.assertIsNone(self.r.get("k"))
        self.assertEqual(0, self.r.exists("k"))

    def test_getdel(self):
        self.r.set("k", "v")
        self.assertEqual(b"v", self.call("GETDEL", "k"))
        self.assertIsNone(self.r.get("k"))
        self.assertIsNone(self.call("GETDEL", "k"))

    def test_getex(self):
        self.r.set("k", "v")
        self.assertEqual(b"v", self.call("GETEX", "k"))
        self.assertEqual(-1, self.r.ttl("k"))
        self.assertEqual(b"v", self.call("GETEX", "k", "EX", "100"))
        self.assertTTL("k", 100)
        self.assertEqual(b"v", self.call("GETEX", "k"))  # no option: TTL unchanged
        self.assertTTL("k", 100)
        self.assertEqual(b"v", self.call("GETEX", "k", "PX", "20000"))
        self.assertPTTL("k", 20000)
        self.assertEqual(b"v", self.call("GETEX", "k", "EXAT", str(int(time.time()) + 500)))
        self.assertTTL("k", 500)
        self.assertEqual(b"v", self.call("GETEX", "k", "PXAT", str(int(time.time() * 1000) + 60000)))
        self.assertPTTL("k", 60000)
        self.assertEqual(b"v", self.call("GETEX", "k", "PERSIST"))
        self.assertEqual(-1, self.r.ttl("k"))
        self.assertIsNone(self.call("GETEX", "missing", "EX", "10"))
        self.assertEqual(0, self.r.exists("missing"))
        self.assertErr("ERR invalid expire time in 'getex' command", "GETEX", "k", "EX", "0")
        self.assertErr("ERR invalid expire time in 'getex' command", "GETEX", "k", "PX", "-1")
        self.assertErr(ERR_SYNTAX, "GETEX", "k", "BOGUS")
        self.assertErr(ERR_SYNTAX, "GETEX", "k", "PERSIST", "EX", "10")
        self.assertErr(ERR_SYNTAX, "GETEX", "k", "EX")
        self.assertErr(ERR_INT, "GETEX", "k", "EX", "ten")
        # A time in the past deletes the key and still returns the value.
        self.assertEqual(b"v", self.call("GETEX", "k", "EXAT", "1"))
        self.assertIsNone(self.r.get("k"))
        # redis-py helper
        self.r.set("k2", "x")
        self.assertEqual(b"x", self.r.getex("k2", ex=50))
        self.assertTTL("k2", 50)

    def test_mget_mset(self):
        self.assertEqual("OK", self.call("MSET", "a", "1", "b", "2", "c", "3"))
        self.assertEqual([b"1", b"2", None, b"3"], self.call("MGET", "a", "b", "nope", "c"))
        self.assertErr("ERR wrong number of arguments for 'mset' command", "MSET", "a")
        self.assertErr("ERR wrong number of arguments for 'mset' command", "MSET", "a", "1", "b")
        self.assertEqual(b"1", self.r.get("a"))
        self.assertIsNone(self.r.get("b2"))
        self.assertErr("ERR wrong number of arguments for 'mget' command", "MGET")
        # MSET drops a TTL, like SET.
        self.r.set("a", "x", ex=100)
        self.call("MSET", "a", "y")
        self.assertEqual(-1, self.r.ttl("a"))

    def test_msetnx(self):
        self.assertEqual(1, self.call("MSETNX", "a", "1", "b", "2"))
        self.assertEqual(0, self.call("MSETNX", "b", "x", "c", "3"))
        self.assertEqual([b"1", b"2", None], self.r.mget("a", "b", "c"))
        self.assertErr("ERR wrong number of arguments for 'msetnx' command", "MSETNX", "a", "1", "b")

    def test_setnx_setex_psetex(self):
        self.assertEqual(1, self.call("SETNX", "k", "v"))
        self.assertEqual(0, self.call("SETNX", "k", "w"))
        self.assertEqual(b"v", self.r.get("k"))
        self.assertEqual("OK", self.call("SETEX", "k", "100", "x"))
        self.assertEqual(b"x", self.r.get("k"))
        self.assertTTL("k", 100)
        self.assertEqual("OK", self.call("PSETEX", "k", "30000", "y"))
        self.assertEqual(b"y", self.r.get("k"))
        self.assertPTTL("k", 30000)
        self.assertErr("ERR invalid expire time in 'setex' command", "SETEX", "k", "0", "v")
        self.assertErr("ERR invalid expire time in 'setex' command", "SETEX", "k", "-10", "v")
        self.assertErr("ERR invalid expire time in 'psetex' command", "PSETEX", "k", "0", "v")
        self.assertErr(ERR_INT, "SETEX", "k", "abc", "v")
        self.assertEqual(b"y", self.r.get("k"))

    def test_append_strlen(self):
        self.assertEqual(0, self.call("STRLEN", "k"))
        self.assertEqual(5, self.call("APPEND", "k", "hello"))
        self.assertEqual(11, self.call("APPEND", "k", " world"))
        self.assertEqual(b"hello world", self.r.get("k"))
        self.assertEqual(11, self.call("STRLEN", "k"))
        self.assertEqual(11, self.call("APPEND", "k", ""))
        # APPEND keeps the TTL.
        self.r.expire("k", 100)
        self.call("APPEND", "k", "!")
        self.assertTTL("k", 100)
        self.assertEqual(b"hello world!", self.r.get("k"))

    def test_incr_decr(self):
        self.assertEqual(1, self.call("INCR", "n"))
        self.assertEqual(11, self.call("INCRBY", "n", "10"))
        self.assertEqual(10, self.call("DECR", "n"))
        self.assertEqual(-5, self.call("DECRBY", "n", "15"))
        self.assertEqual(-10, self.call("INCRBY", "n", "-5"))
        self.assertEqual(b"-10", self.r.get("n"))
        self.assertEqual(-1, self.call("DECR", "fresh"))
        self.assertEqual(7, self.call("DECRBY", "fresh2", "-7"))
        # INCR keeps the TTL.
        self.r.set("t", "5", ex=100)
        self.assertEqual(6, self.call("INCR", "t"))
        self.assertTTL("t", 100)

    def test_incr_errors(self):
        for bad in ("abc", "1.5", " 1", "01", "", "1 ", "+1", "99999999999999999999"):
            self.r.set("s", bad)
            self.assertErr(ERR_INT, "INCR", "s")
            self.assertEqual(bad.encode(), self.r.get("s"))
        self.r.set("n", "1")
        self.assertErr(ERR_INT, "INCRBY", "n", "x")
        self.assertErr(ERR_INT, "DECRBY", "n", "1.0")
        self.r.set("big", str(2 ** 63 - 1))
        self.assertErr("ERR increment or decrement would overflow", "INCR", "big")
        self.assertErr("ERR increment or decrement would overflow", "INCRBY", "big", "1")
        self.r.set("small", str(-2 ** 63))
        self.assertErr("ERR increment or decrement would overflow", "DECR", "small")
        self.assertErr("ERR increment or decrement would overflow", "INCRBY", "small", "-1")
        self.assertEqual(str(2 ** 63 - 1).encode(), self.r.get("big"))
        self.assertEqual(str(-2 ** 63).encode(), self.r.get("small"))
        self.assertEqual(-1, self.call("INCRBY", "small", str(2 ** 63 - 1)))
        self.assertErr("ERR decrement would overflow", "DECRBY", "n", str(-2 ** 63))

    def test_binary_safe(self):
        key = b"k\x00\r\n\xff\xfe key"
        val = bytes(range(256)) * 40 + b"\r\n\x00"
        self.assertEqual("OK", self.call("SET", key, val))
        self.assertEqual(val, self.call("GET", key))
        self.assertEqual(val, self.r.get(key))
        self.assertEqual(len(val), self.r.strlen(key))
        self.assertEqual(1, self.r.exists(key))
        self.assertNotEqual(1, self.r.exists(b"k"))  # the NUL does not end the key
        self.assertIn(key, self.r.keys("*"))
        self.r.append(key, b"\x00\xff")
        self.assertEqual(val + b"\x00\xff", self.r.get(key))
        self.r.mset({b"\x00": b"\r\n", b"\n": b"\x00"})
        self.assertEqual([b"\r\n", b"\x00"], self.r.mget(b"\x00", b"\n"))
        big = bytes((i * 7) & 0xFF for i in range(1 << 20))
        self.r.set(b"big\x00", big)
        self.assertEqual(big, self.r.get(b"big\x00"))


class TestKeyspace(CommandCase):
    def test_del_unlink(self):
        self.r.mset({"a": 1, "b": 2, "c": 3})
        self.assertEqual(2, self.call("DEL", "a", "b", "nope"))
        self.assertEqual(0, self.call("DEL", "a"))
        self.assertEqual(1, self.call("UNLINK", "c", "c"))
        self.assertEqual(0, self.r.dbsize())

    def test_exists_counts_duplicates(self):
        self.r.set("a", 1)
        self.assertEqual(3, self.call("EXISTS", "a", "a", "a"))
        self.assertEqual(2, self.call("EXISTS", "a", "nope", "a"))
        self.assertEqual(0, self.call("EXISTS", "nope"))

    def test_type(self):
        self.r.set("a", 1)
        self.assertEqual("string", self.call("TYPE", "a"))
        self.assertEqual("none", self.call("TYPE", "nope"))

    def test_rename(self):
        self.r.set("a", "va", ex=100)
        self.r.set("b", "vb")
        self.assertEqual("OK", self.call("RENAME", "a", "b"))
        self.assertIsNone(self.r.get("a"))
        self.assertEqual(b"va", self.r.get("b"))
        self.assertTTL("b", 100)  # the TTL moves with the value
        self.assertEqual("OK", self.call("RENAME", "b", "b"))
        self.assertEqual(b"va", self.r.get("b"))
        self.assertErr("ERR no such key", "RENAME", "nope", "x")
        self.assertEqual(0, self.r.exists("x"))

    def test_keys_glob(self):
        names = ["hello", "hallo", "hxllo", "hllo", "heeeello", "h[ll]o", "x/y.z", "user:1", "user:22", "User:3",
                 ".dot"]
        self.r.mset({n: 1 for n in names})

        def keys(p):
            return sorted(k.decode() for k in self.call("KEYS", p))

        self.assertEqual(sorted(names), keys("*"))
        self.assertEqual(["hallo", "hello", "hxllo"], keys("h?llo"))
        self.assertEqual(["hallo", "heeeello", "hello", "hllo", "hxllo"], keys("h*llo"))
        self.assertEqual(["hallo", "hello"], keys("h[ae]llo"))
        self.assertEqual(["hallo", "hxllo"], keys("h[^e]llo"))
        self.assertEqual(["hallo"], keys("h[a-b]llo"))
        self.assertEqual(["user:1", "user:22"], keys("user:*"))
        self.assertEqual(["user:22"], keys("user:??"))
        self.assertEqual(["x/y.z"], keys("x/*"))
        self.assertEqual(["h[ll]o"], keys("h\\[ll\\]o"))
        self.assertEqual([], keys("nomatch*"))
        self.assertEqual([".dot"], keys("*dot"))  # '*' matches a leading '.'
        self.assertEqual(["User:3", "user:1", "user:22"], keys("[Uu]ser:*"))

    def test_scan_returns_every_key(self):
        want = {("key:%d" % i).encode() for i in range(500)}
        self.r.mset({k: b"v" for k in want})
        self.r.mset({("other:%d" % i).encode(): b"v" for i in range(50)})
        # COUNT and MATCH; iterate until the cursor is 0 again.
        seen, cursor, rounds = set(), b"0", 0
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", "key:*", "COUNT", "37")
            seen.update(batch)
            rounds += 1
            self.assertLess(rounds, 2000, "SCAN does not finish")
            if cursor == b"0":
                break
        self.assertEqual(want, seen)
        self.assertGreater(rounds, 1)
        # Default COUNT, no MATCH, via redis-py.
        every = set(self.r.scan_iter())
        self.assertEqual(550, len(every))
        self.assertEqual(want, {k for k in every if k.startswith(b"key:")})
        # TYPE string returns everything; another type nothing.
        seen, cursor = set(), 0
        for _ in range(2000):
            cursor, batch = self.r.scan(cursor, count=100, _type="string")
            seen.update(batch)
            if cursor == 0:
                break
        self.assertEqual(550, len(seen))
        self.assertEqual([], self.r.scan(0, count=1000, _type="hash")[1])

    def test_scan_with_concurrent_changes(self):
        # SCAN's guarantee: a key present for the whole iteration is
        # returned at least once, even while other keys come and go (and
        # the key directory grows or shrinks under the cursor).
        stable = {("stable:%d" % i).encode() for i in range(300)}
        self.r.mset({k: b"v" for k in stable})
        other = self.client()
        seen, cursor, rounds, added = set(), 0, 0, 0
        while True:
            cursor, batch = self.r.scan(cursor, count=25)
            seen.update(batch)
            rounds += 1
            # Churn: add a burst of keys, delete some of the earlier ones.
            with other.pipeline(transaction=False) as p:
                for i in range(200):
                    p.set("churn:%d" % (added + i), "x")
                if added:
                    p.delete(*["churn:%d" % i for i in range(added - 100, added)])
                p.execute()
            added += 200
            self.assertLess(rounds, 1000, "SCAN does not finish under churn")
            if cursor == 0:
                break
        self.assertEqual(set(), stable - seen, "keys missed by SCAN under churn")

    def test_scan_errors(self):
        self.assertErr("ERR invalid cursor", "SCAN", "abc")
        self.assertErr("ERR invalid cursor", "SCAN", "-1")
        self.assertErr(ERR_SYNTAX, "SCAN", "0", "COUNT", "0")
        self.assertErr(ERR_SYNTAX, "SCAN", "0", "MATCH")
        self.assertErr(ERR_SYNTAX, "SCAN", "0", "BOGUS", "1")
        self.assertErr(ERR_INT, "SCAN", "0", "COUNT", "x")
        self.assertEqual([b"0", []], self.call("SCAN", "0"))

    def test_ttl_pttl(self):
        self.assertEqual(-2, self.call("TTL", "nope"))
        self.assertEqual(-2, self.call("PTTL", "nope"))
        self.r.set("a", 1)
        self.assertEqual(-1, self.call("TTL", "a"))
        self.assertEqual(-1, self.call("PTTL", "a"))
        self.r.expire("a", 100)
        self.assertTTL("a", 100)
        self.assertPTTL("a", 100000)

    def test_expire_family(self):
        self.r.set("k", "v")
        self.assertEqual(0, self.call("EXPIRE", "nope", "100"))
        self.assertEqual(1, self.call("EXPIRE", "k", "100"))
        self.assertTTL("k", 100)
        self.assertEqual(1, self.call("PEXPIRE", "k", "50000"))
        self.assertPTTL("k", 50000)
        self.assertEqual(1, self.call("EXPIREAT", "k", str(int(time.time()) + 300)))
        self.assertTTL("k", 300)
        self.assertEqual(1, self.call("PEXPIREAT", "k", str(int(time.time() * 1000) + 70000)))
        self.assertPTTL("k", 70000)
        self.assertEqual(b"v", self.r.get("k"))
        self.assertErr(ERR_INT, "EXPIRE", "k", "abc")
        self.assertErr("ERR invalid expire time in 'expire' command", "EXPIRE", "k", "9223372036854775807")
        self.assertErr("ERR invalid expire time in 'pexpire' command", "PEXPIRE", "k", "9223372036854775807")

    def test_expire_in_the_past_deletes(self):
        for args in (("EXPIRE", "-1"), ("PEXPIRE", "0"), ("EXPIREAT", "1"), ("PEXPIREAT", "1000")):
            self.r.set("k", "v")
            self.assertEqual(1, self.call(args[0], "k", args[1]), args)
            self.assertEqual(0, self.r.exists("k"), args)
            self.assertIsNone(self.r.get("k"))
            self.assertEqual(-2, self.r.ttl("k"))

    def test_expire_nx_xx_gt_lt(self):
        self.r.set("k", "v")
        self.assertEqual(0, self.call("EXPIRE", "k", "100", "XX"))  # no TTL yet
        self.assertEqual(0, self.call("EXPIRE", "k", "100", "GT"))  # no TTL = infinite
        self.assertEqual(-1, self.r.ttl("k"))
        self.assertEqual(1, self.call("EXPIRE", "k", "100", "NX"))
        self.assertEqual(0, self.call("EXPIRE", "k", "200", "NX"))
        self.assertTTL("k", 100)
        self.assertEqual(1, self.call("EXPIRE", "k", "200", "XX"))
        self.assertTTL("k", 200)
        self.assertEqual(0, self.call("EXPIRE", "k", "150", "GT"))
        self.assertEqual(1, self.call("EXPIRE", "k", "300", "GT"))
        self.assertTTL("k", 300)
        self.assertEqual(0, self.call("EXPIRE", "k", "400", "LT"))
        self.assertEqual(1, self.call("EXPIRE", "k", "50", "LT"))
        self.assertTTL("k", 50)
        self.r.persist("k")
        self.assertEqual(1, self.call("EXPIRE", "k", "60", "LT"))  # infinite > 60
        self.assertTTL("k", 60)
        self.assertEqual(1, self.call("PEXPIRE", "k", "90000", "gt"))
        self.assertErr("ERR NX and XX, GT or LT options at the same time are not compatible",
                       "EXPIRE", "k", "10", "NX", "XX")
        self.assertErr("ERR NX and XX, GT or LT options at the same time are not compatible",
                       "EXPIRE", "k", "10", "NX", "GT")
        self.assertErr("ERR GT and LT options at the same time are not compatible",
                       "EXPIRE", "k", "10", "GT", "LT")
        self.assertErr("ERR Unsupported option BOGUS", "EXPIRE", "k", "10", "BOGUS")
        # A past time with a failing condition does not delete.
        self.assertEqual(0, self.call("EXPIRE", "k", "-1", "NX"))
        self.assertEqual(b"v", self.r.get("k"))
        # Negative absolute times compare as earlier than any expiry: GT
        # fails (key kept), LT succeeds (key deleted).
        self.assertEqual(0, self.call("EXPIREAT", "k", "-5", "GT"))
        self.assertEqual(0, self.call("PEXPIREAT", "k", "-5", "GT"))
        self.assertEqual(b"v", self.r.get("k"))
        self.assertEqual(1, self.call("EXPIREAT", "k", "-5", "LT"))
        self.assertIsNone(self.r.get("k"))

    def test_persist(self):
        self.assertEqual(0, self.call("PERSIST", "nope"))
        self.r.set("k", "v")
        self.assertEqual(0, self.call("PERSIST", "k"))
        self.r.expire("k", 100)
        self.assertEqual(1, self.call("PERSIST", "k"))
        self.assertEqual(-1, self.r.ttl("k"))
        self.assertEqual(b"v", self.r.get("k"))


class TestExpiry(CommandCase):
    def test_px_100_is_gone(self):
        t0 = time.monotonic()
        self.assertTrue(self.r.set("short", "v", px=100))
        got = self.r.get("short")
        if time.monotonic() - t0 < 0.08:  # not checkable on a very slow run
            self.assertEqual(b"v", got)
        time.sleep(0.3)
        gone = wait_until(lambda: self.r.get("short") is None, timeout=2.0)
        self.assertTrue(gone, "a key set with PX 100 is still there after 2.3 s")
        self.assertEqual(0, self.r.exists("short"))
        self.assertEqual(-2, self.r.ttl("short"))
        self.assertNotIn(b"short", self.r.keys("*"))

    def test_expired_keys_not_visible_before_sweep(self):
        # Lazy view: expired but unswept keys are invisible to every read.
        self.r.set("lazy", "v", px=50)
        self.r.set("keep", "v")
        time.sleep(0.15)
        self.assertIsNone(self.r.get("lazy"))
        self.assertEqual(0, self.r.exists("lazy"))
        self.assertEqual("none", self.call("TYPE", "lazy"))
        self.assertEqual(0, self.r.strlen("lazy"))
        self.assertEqual(1, self.r.incr("lazy"))  # starts from scratch
        self.assertEqual(-1, self.r.ttl("lazy"))

    def test_active_expiry(self):
        before = int(parse_info(self.info("stats"))["stats"]["expired_keys"])
        t0 = time.monotonic()
        with self.r.pipeline(transaction=False) as p:
            for i in range(60):
                p.set("ae:%d" % i, "v", px=300)
            p.set("ae:stay", "v")
            p.execute()
        ks = self.info("keyspace")
        if time.monotonic() - t0 < 0.25:  # not checkable on a very slow run
            self.assertIn("db0:keys=61,expires=60", ks)

        def swept():
            ks = self.info("keyspace")
            return "db0:keys=1,expires=0" in ks

        # No client reads the keys: only the server's active expiry can
        # remove them.
        self.assertTrue(wait_until(swept, timeout=5.0, interval=0.1),
                        "active expiry did not remove expired keys: " + self.info("keyspace"))
        after = int(parse_info(self.info("stats"))["stats"]["expired_keys"])
        self.assertGreaterEqual(after - before, 60)
        self.assertEqual(1, self.r.dbsize())


class TestActiveExpiryRate(KvdTestCase):
    def _sweep_time(self, c, n=1000):
        with c.pipeline(transaction=False) as p:
            for i in range(n):
                p.set("rate:%d" % i, "v", px=1)
            p.execute()
        t = time.monotonic()
        ok = wait_until(lambda: c.info("keyspace").get("db0") is None, timeout=20, interval=0.02)
        self.assertTrue(ok, "active expiry never removed the keys")
        return time.monotonic() - t

    def test_config_set_hz_takes_effect(self):
        # Each active-expiry cycle removes a bounded batch (200 keys), so
        # 1000 expired keys take about 5 cycles: ~5 s at --hz 1, well under
        # a second at hz 100. CONFIG SET hz must change the real rate.
        srv = self.start_server(["--hz", "1"])
        c = self.client(srv)
        self.assertGreater(self._sweep_time(c), 2.0)
        c.config_set("hz", "100")
        self.assertEqual(100, c.info("server")["hz"])
        time.sleep(1.1)  # the old 1 s timer fires once more and re-arms
        self.assertLess(self._sweep_time(c), 1.5)


class Model:
    """Redis string/keyspace semantics for the commands the random test
    uses. TTLs are long (1000 s+) so that nothing expires during a run;
    only whether a key has one is modelled (ttl: None or a marker)."""

    def __init__(self):
        self.d = {}    # key -> value (bytes)
        self.ttl = {}  # key -> True when it has an expiry

    def _int(self, k):
        v = self.d.get(k, b"0")
        if not re.fullmatch(rb"-?[1-9][0-9]*|0", v) or not -2 ** 63 <= int(v) < 2 ** 63:
            return None
        return int(v)

    def apply(self, op, a):
        d, ttl = self.d, self.ttl
        if op == "SET":
            d[a[0]] = a[1]
            ttl.pop(a[0], None)
            return "OK"
        if op == "SETEX":
            d[a[0]] = a[2]
            ttl[a[0]] = True
            return "OK"
        if op == "SETNX":
            if a[0] in d:
                return 0
            d[a[0]] = a[1]
            return 1
        if op == "GET":
            return d.get(a[0])
        if op == "GETDEL":
            ttl.pop(a[0], None)
            return d.pop(a[0], None)
        if op == "DEL":
            n = 0
            for k in dict.fromkeys(a):
                if k in d:
                    del d[k]
                    ttl.pop(k, None)
                    n += 1
            return n
        if op == "EXISTS":
            return sum(1 for k in a if k in d)
        if op == "APPEND":
            d[a[0]] = d.get(a[0], b"") + a[1]
            return len(d[a[0]])
        if op == "STRLEN":
            return len(d.get(a[0], b""))
        if op in ("INCR", "DECR", "INCRBY", "DECRBY"):
            by = {"INCR": 1, "DECR": -1}.get(op) or int(a[1]) * (1 if op == "INCRBY" else -1)
            cur = self._int(a[0])
            if cur is None:
                return "ERR value is not an integer or out of range"
            if not -2 ** 63 <= cur + by < 2 ** 63:
                return "ERR increment or decrement would overflow"
            d[a[0]] = b"%d" % (cur + by)
            return cur + by
        if op == "MSET":
            for k, v in zip(a[0::2], a[1::2]):
                d[k] = v
                ttl.pop(k, None)
            return "OK"
        if op == "MGET":
            return [d.get(k) for k in a]
        if op == "MSETNX":
            if any(k in d for k in a[0::2]):
                return 0
            for k, v in zip(a[0::2], a[1::2]):
                d[k] = v
            return 1
        if op == "EXPIRE":
            if a[0] not in d:
                return 0
            ttl[a[0]] = True
            return 1
        if op == "PERSIST":
            if a[0] in d and a[0] in ttl:
                del ttl[a[0]]
                return 1
            return 0
        if op == "TTL":
            if a[0] not in d:
                return -2
            return "has-ttl" if a[0] in ttl else -1
        if op == "RENAME":
            if a[0] not in d:
                return "ERR no such key"
            v, t = d.pop(a[0]), ttl.pop(a[0], None)
            ttl.pop(a[1], None)
            d[a[1]] = v
            if t:
                ttl[a[1]] = True
            return "OK"
        if op == "TYPE":
            return "string" if a[0] in d else "none"
        if op == "DBSIZE":
            return len(d)
        raise ValueError(op)


class TestRandomAgainstModel(KvdTestCase):
    """Random command sequences (fixed seeds) compared reply by reply with
    a model; then the whole keyspace compared after a clean restart and
    after kill -9."""

    def random_ops(self, rnd, n):
        keys = [b"k%d" % i for i in range(12)] + [b"\x00bin\xff", b"sp ace", b""]
        vals = [b"", b"0", b"1", b"-1", b"42", b"x", b"\r\n", b"9223372036854775807", b"-9223372036854775808",
                b"\x00\xff" * 50, b"v" * 3000, b"01", b"1.5"]
        for _ in range(n):
            k, k2, v = rnd.choice(keys), rnd.choice(keys), rnd.choice(vals)
            op = rnd.choice(["SET", "SET", "SETEX", "SETNX", "GET", "GET", "GETDEL", "DEL", "EXISTS", "APPEND",
                             "STRLEN", "INCR", "DECR", "INCRBY", "DECRBY", "MSET", "MGET", "MSETNX", "EXPIRE",
                             "PERSIST", "TTL", "RENAME", "TYPE", "DBSIZE"])
            if op in ("SET", "SETNX", "APPEND"):
                yield op, [k, v]
            elif op == "SETEX":
                yield op, [k, b"%d" % rnd.randrange(1000, 5000), v]
            elif op in ("GET", "GETDEL", "STRLEN", "INCR", "DECR", "PERSIST", "TTL", "TYPE"):
                yield op, [k]
            elif op in ("DEL", "EXISTS", "MGET"):
                yield op, [rnd.choice(keys) for _ in range(rnd.randrange(1, 4))]
            elif op in ("INCRBY", "DECRBY"):
                yield op, [k, b"%d" % rnd.choice([0, 1, -1, 7, -1000, 2 ** 62, -(2 ** 62)])]
            elif op in ("MSET", "MSETNX"):
                a = []
                for _ in range(rnd.randrange(1, 4)):
                    a += [rnd.choice(keys), rnd.choice(vals)]

                if op == "MSETNX" and len(set(a[0::2])) != len(a[0::2]):
                    a = a[:2]  # duplicate keys in MSETNX: keep the model simple
                yield op, a
            elif op == "EXPIRE":
                yield op, [k, b"%d" % rnd.randrange(1000, 5000)]
            elif op == "RENAME":
                yield op, [k, k2]
            else:
                yield op, []

    def test_empty_key_twice_in_one_group(self):
        srv = self.start_server()
        self.assertEqual(["OK"], raw_exchange(srv, cmd("MSET", "", "", "", ""), 1))
        self.assertEqual(["OK", "OK"], raw_exchange(srv, cmd("SET", "", "") + cmd("SET", "", ""), 2))
        self.assertEqual(["OK", 1, 0], raw_exchange(srv, cmd("SET", "", "x") + cmd("DEL", "") + cmd("DEL", ""), 3))
        self.assertEqual(["OK", b""], raw_exchange(srv, cmd("SET", "", "") + cmd("GET", ""), 2))

    def check_state(self, c, model, when):
        self.assertEqual(len(model.d), c.dbsize(), when)
        self.assertEqual(set(model.d), set(c.keys("*")), when)
        for k, v in model.d.items():
            self.assertEqual(v, c.get(k), (when, k))
            ttl = c.ttl(k)
            self.assertEqual(k in model.ttl, ttl > 0, (when, k, ttl))

    def test_random_commands(self):
        import random
        srv = self.start_server()
        model = Model()
        with srv.sock(timeout=30) as s:
            rd = RespReader(s)
            for seed in (1, 2, 3):
                rnd = random.Random(seed)
                ops = list(self.random_ops(rnd, 1500))
                # Pipelined in batches of 50: replies in order, each
                # request seeing the ones before it.
                for i in range(0, len(ops), 50):
                    batch = ops[i:i + 50]
                    s.sendall(b"".join(cmd(op, *a) for op, a in batch))
                    for op, a in batch:
                        want = model.apply(op, a)
                        got = rd.read()
                        if want == "has-ttl":
                            self.assertGreater(got, 0, (seed, op, a))
                        else:
                            self.assertEqual(want, got, (seed, op, a))
        c = srv.client()
        self.check_state(c, model, "before restart")
        c.close()
        srv.restart()
        c = srv.client()
        self.check_state(c, model, "after restart")
        c.close()
        srv.kill9()
        srv.start()
        c = srv.client()
        self.check_state(c, model, "after kill -9")
        c.close()


if __name__ == "__main__":
    unittest.main()
