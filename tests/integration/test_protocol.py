"""
The wire protocol over raw sockets: hostile and malformed input gets
Redis's exact protocol error and a closed connection (and never disturbs
another client), inline commands, pipelining, maxclients.
"""
import socket
import time
import unittest

from kvdtest import KvdTestCase, RespError, RespReader, SharedKvdTestCase, cmd, raw_exchange, wait_until


class ProtocolCase(SharedKvdTestCase):
    def setUp(self):
        super().setUp()
        # A bystander connected before each hostile exchange; it must keep
        # working after it.
        self.bystander = self.client()
        self.bystander.set("bystander", "alive")

    def tearDown(self):
        try:
            self.assertBystanderWorks()
        finally:
            super().tearDown()

    def assertBystanderWorks(self):
        self.assertEqual(b"alive", self.bystander.get("bystander"))
        self.assertTrue(self.bystander.set("bystander2", "ok"))
        self.assertEqual(b"ok", self.bystander.get("bystander2"))

    def assertProtocolError(self, data, expected, chunks=None):
        """Sends data (or the chunks one after another), expects exactly
        one error reply `expected` and the connection closed."""
        with self.srv.sock() as s:
            for part in (chunks or [data]):
                s.sendall(part)
                time.sleep(0.02)
            rd = RespReader(s)
            reply = rd.read()
            self.assertIsInstance(reply, RespError, "%r answered %r" % (data or chunks, reply))
            self.assertEqual(expected, str(reply))
            self.assertTrue(rd.at_eof(5), "connection not closed after a protocol error")
            self.assertEqual(b"", rd.buf, "bytes after the protocol error")
        self.assertBystanderWorks()


class TestHostileInput(ProtocolCase):
    def test_oversized_bulk_length(self):
        self.assertProtocolError(b"*1\r\n$999999999999\r\n", "ERR Protocol error: invalid bulk length")

    def test_bulk_length_over_proto_max_bulk_len(self):
        # Default proto-max-bulk-len is 512 MiB.
        self.assertProtocolError(b"*1\r\n$536870913\r\n", "ERR Protocol error: invalid bulk length")

    def test_negative_and_bad_bulk_length(self):
        self.assertProtocolError(b"*1\r\n$-1\r\n", "ERR Protocol error: invalid bulk length")
        self.assertProtocolError(b"*1\r\n$abc\r\n", "ERR Protocol error: invalid bulk length")
        self.assertProtocolError(b"*1\r\n$\r\n", "ERR Protocol error: invalid bulk length")

    def test_invalid_multibulk_length(self):
        self.assertProtocolError(b"*abc\r\n", "ERR Protocol error: invalid multibulk length")
        self.assertProtocolError(b"*99999999999\r\n", "ERR Protocol error: invalid multibulk length")
        self.assertProtocolError(b"*1x\r\n", "ERR Protocol error: invalid multibulk length")

    def test_expected_dollar(self):
        self.assertProtocolError(b"*1\r\nxfoo\r\n", "ERR Protocol error: expected '$', got 'x'")
        self.assertProtocolError(b"*2\r\n$3\r\nGET\r\n:1\r\n", "ERR Protocol error: expected '$', got ':'")

    def test_unbalanced_quotes_inline(self):
        self.assertProtocolError(b'SET k "a b\r\n', "ERR Protocol error: unbalanced quotes in request")
        self.assertProtocolError(b"SET k 'a b\r\n", "ERR Protocol error: unbalanced quotes in request")
        self.assertProtocolError(b'SET k "a"b\r\n', "ERR Protocol error: unbalanced quotes in request")
        self.assertIsNone(self.r.get("k"))

    def test_too_big_inline_request(self):
        # More than 64 KiB without a newline.
        self.assertProtocolError(b"a" * (70 * 1024), "ERR Protocol error: too big inline request")

    def test_too_big_count_line(self):
        self.assertProtocolError(b"*" + b"1" * (70 * 1024), "ERR Protocol error: too big mbulk count string")
        self.assertProtocolError(b"*1\r\n$" + b"1" * (70 * 1024), "ERR Protocol error: too big bulk count string")

    def test_error_after_good_commands_in_same_packet(self):
        # Replies to the good commands first, then the error, then close.
        with self.srv.sock() as s:
            s.sendall(cmd("SET", "p", "1") + cmd("GET", "p") + b"*1\r\n$-5\r\n" + cmd("SET", "p", "2"))
            rd = RespReader(s)
            self.assertEqual("OK", rd.read())
            self.assertEqual(b"1", rd.read())
            self.assertEqual("ERR Protocol error: invalid bulk length", rd.read())
            self.assertTrue(rd.at_eof(5))
        self.assertEqual(b"1", self.r.get("p"))  # the command after the error never ran

    def test_garbage_bytes(self):
        # Printable garbage is an (unknown) inline command: an error reply
        # and the connection stays open.
        with self.srv.sock() as s:
            rd = RespReader(s)
            s.sendall(b"\xff\xfe\x80garbage !! ##\r\n")
            reply = rd.read()
            self.assertIsInstance(reply, RespError)
            self.assertTrue(reply.startswith("ERR unknown command '"), reply)
            s.sendall(b"PING\r\n")
            self.assertEqual("PONG", rd.read())
        # Random binary, including NUL bytes: any reply or none, but the
        # server survives and the connection is eventually usable or closed.
        import random
        rnd = random.Random(1234)
        for i in range(30):
            blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 300)))
            if i % 3 == 0:
                blob = b"*" + blob
            elif i % 3 == 1:
                blob = b"*2\r\n$" + blob
            with self.srv.sock(timeout=2) as s:
                s.sendall(blob)
                s.shutdown(socket.SHUT_WR)
                try:
                    while s.recv(65536):
                        pass
                except (socket.timeout, ConnectionResetError):
                    pass
        self.assertBystanderWorks()
        self.assertTrue(self.srv.running())

    def test_nul_before_newline_waits_then_closes_on_eof(self):
        # Redis: a NUL before the line end hides it; the request waits for
        # more bytes. Closing the connection must clean up.
        with self.srv.sock() as s:
            s.sendall(b"\x00\x01PING\r\n")
            s.settimeout(0.3)
            with self.assertRaises(socket.timeout):
                s.recv(100)
        self.assertBystanderWorks()

    def test_disconnect_mid_request(self):
        for partial in (b"*2\r\n$3\r\nGET\r\n$5\r\nab",  # half a bulk string
                        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n" + b"x" * 50000,
                        b"*3\r\n$3\r\nSET",
                        b"*",
                        b"SET k v"):  # inline without newline
            s = self.srv.sock()
            s.sendall(partial)
            time.sleep(0.05)
            s.close()
            self.assertBystanderWorks()
        # Same with a reset instead of a clean close.
        s = self.srv.sock()
        s.sendall(b"*2\r\n$3\r\nGET\r\n$5\r\nab")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        self.assertBystanderWorks()
        self.assertIsNone(self.r.get("k"))

    def test_disconnect_with_writes_in_flight(self):
        # Many pipelined writes, then close without reading the replies.
        # The replies hitting the closed socket make the client's kernel
        # answer with a reset, which may discard requests the server has
        # not read yet (as with Redis); what the server did run must be a
        # prefix of what was sent (one connection's writes keep their
        # order), and the server must survive the vanished client.
        n = 500
        s = self.srv.sock()
        s.sendall(b"".join(cmd("SET", "gone:%03d" % i, "v") for i in range(n)))
        s.close()

        def settled():
            a = self.r.dbsize()
            time.sleep(0.2)
            return a == self.r.dbsize()

        self.assertTrue(wait_until(settled, timeout=10))
        present = sorted(int(k[5:]) for k in self.r.keys("gone:*"))
        self.assertEqual(list(range(len(present))), present, "writes of one connection applied out of order")
        self.assertBystanderWorks()

    def test_request_split_into_single_bytes(self):
        data = cmd("SET", "split", "a\r\nb") + cmd("GET", "split")
        with self.srv.sock() as s:
            for i in range(len(data)):
                s.sendall(data[i:i + 1])
            rd = RespReader(s)
            self.assertEqual("OK", rd.read())
            self.assertEqual(b"a\r\nb", rd.read())


class TestInlineAndPipelining(ProtocolCase):
    def test_inline_commands(self):
        reply = self.raw(b'SET k "a b"\r\n', b"GET k\r\n", b"  PING  \r\n", b"ECHO 'x y'\n",
                         b'SET bin "\\x00\\xffq\\n"\r\n', b"EXISTS k bin nope\r\n")
        self.assertEqual(["OK", b"a b", "PONG", b"x y", "OK", 2], reply)
        self.assertEqual(b"\x00\xffq\n", self.r.get("bin"))
        # Blank lines are skipped without a reply.
        self.assertEqual(["PONG"], self.raw(b"\r\n\r\n\nPING\r\n", n=1))
        # Inline unknown command.
        self.assertEqual(["ERR unknown command 'nosuch', with args beginning with: 'a' "],
                         self.raw(b"nosuch a\r\n"))

    def test_pipelining_replies_in_order(self):
        n = 2000
        reqs = []
        for i in range(n):
            if i % 4 == 0:
                reqs.append(cmd("SET", "pk%d" % (i % 50), "v%d" % i))
            elif i % 4 == 1:
                reqs.append(cmd("GET", "pk%d" % ((i - 1) % 50)))
            elif i % 4 == 2:
                reqs.append(cmd("INCR", "pctr"))
            else:
                reqs.append(cmd("ECHO", "e%d" % i))
        with self.srv.sock(timeout=30) as s:
            s.sendall(b"".join(reqs))  # everything in one send
            rd = RespReader(s)
            ctr = 0
            for i in range(n):
                got = rd.read()
                if i % 4 == 0:
                    self.assertEqual("OK", got, i)
                elif i % 4 == 1:
                    # Sees the SET just before it (a read waits for the
                    # connection's earlier writes).
                    self.assertEqual(b"v%d" % (i - 1), got, i)
                elif i % 4 == 2:
                    ctr += 1
                    self.assertEqual(ctr, got, i)
                else:
                    self.assertEqual(b"e%d" % i, got, i)
        self.assertEqual(b"%d" % (n // 4), self.r.get("pctr"))

    def test_pipelined_inline(self):
        data = b"".join(b"INCR ictr\r\n" for _ in range(300)) + b"GET ictr\r\n"
        reply = raw_exchange(self.srv, data, 301, timeout=30)
        self.assertEqual(list(range(1, 301)) + [b"300"], reply)

    def test_empty_requests_get_no_reply(self):
        # Redis: "*0", a negative count and blank inline lines are skipped.
        self.assertEqual(["PONG", b"x"], self.raw(b"*0\r\n*-1\r\n\r\nPING\r\n*-7\r\n", cmd("ECHO", "x"), n=2))

    def test_mixed_inline_and_multibulk(self):
        reply = self.raw(b"SET m 1\r\n", cmd("INCR", "m"), b"GET m\r\n", cmd("GET", "m"))
        self.assertEqual(["OK", 2, b"2", b"2"], reply)

    def test_redis_py_pipeline(self):
        with self.r.pipeline(transaction=False) as p:
            for i in range(500):
                p.set("rp%d" % i, i)
                p.get("rp%d" % i)
            out = p.execute()
        self.assertEqual([True] * 500, out[0::2])
        self.assertEqual([b"%d" % i for i in range(500)], out[1::2])

    def test_quit_after_pipelined_writes(self):
        # QUIT waits for the writes before it: every reply, then the close.
        with self.srv.sock() as s:
            s.sendall(b"".join(cmd("SET", "qw:%d" % i, "v") for i in range(200)) + cmd("QUIT") + cmd("SET", "late", "1"))
            rd = RespReader(s)
            self.assertEqual(["OK"] * 201, [rd.read() for _ in range(201)])
            self.assertTrue(rd.at_eof(5))
        self.assertEqual(200, len(self.r.keys("qw:*")))
        self.assertIsNone(self.r.get("late"))

    def test_half_close_gets_replies(self):
        # A client that sends and shuts down its writing side (nc, scripts)
        # still receives every reply before the server closes.
        with self.srv.sock() as s:
            s.sendall(cmd("SET", "hc", "1") + cmd("INCR", "hc") + b"GET hc\r\n")
            s.shutdown(socket.SHUT_WR)
            rd = RespReader(s)
            self.assertEqual(["OK", 2, b"2"], [rd.read() for _ in range(3)])
            self.assertTrue(rd.at_eof(5))


class TestLimits(KvdTestCase):
    def _connect_admitted(self, srv):
        """A raw connection that got past maxclients; retries (bounded)
        while the server has not yet noticed earlier connections closing."""
        deadline = time.monotonic() + 5
        while True:
            s = srv.sock()
            s.sendall(b"PING\r\n")
            reply = RespReader(s).read()
            if reply == "PONG":
                return s
            s.close()
            self.assertEqual("ERR max number of clients reached", reply)
            self.assertLess(time.monotonic(), deadline, "no connection admitted")
            time.sleep(0.05)

    def test_maxclients(self):
        srv = self.start_server(["--maxclients", "2"])
        a = self._connect_admitted(srv)
        b = self._connect_admitted(srv)
        try:
            for _ in range(3):
                with srv.sock() as c:
                    rd = RespReader(c)
                    self.assertEqual("ERR max number of clients reached", rd.read())
                    self.assertTrue(rd.at_eof(5))
            # The two admitted clients still work.
            a.sendall(cmd("SET", "x", "1"))
            self.assertEqual("OK", RespReader(a).read())
            b.sendall(cmd("GET", "x"))
            self.assertEqual(b"1", RespReader(b).read())
            # One leaves: a new one gets in.
            b.close()
            c = self._connect_admitted(srv)
            c.sendall(cmd("INFO", "stats"))
            stats = RespReader(c).read().decode()
            self.assertRegex(stats, r"rejected_connections:([3-9]|\d\d+)\r\n")
            c.close()
        finally:
            a.close()
            b.close()

    def test_maxclients_config_set(self):
        srv = self.start_server()
        keep = srv.sock()
        try:
            keep.sendall(cmd("CONFIG", "SET", "maxclients", "1"))
            self.assertEqual("OK", RespReader(keep).read())

            def rejected():
                # The readiness probe's connection may not be reaped yet.
                with srv.sock() as c:
                    c.sendall(b"PING\r\n")
                    return RespReader(c).read() == "ERR max number of clients reached"

            self.assertTrue(wait_until(rejected, timeout=5, interval=0.05))
            keep.sendall(cmd("CONFIG", "SET", "maxclients", "100"))
            self.assertEqual("OK", RespReader(keep).read())
            self.assertEqual(["PONG"], raw_exchange(srv, b"PING\r\n", 1))
        finally:
            keep.close()

    def test_proto_max_bulk_len(self):
        srv = self.start_server(["--proto-max-bulk-len", "1mb"])
        with srv.sock() as s:
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n" % (1024 * 1024 + 1))
            rd = RespReader(s)
            self.assertEqual("ERR Protocol error: invalid bulk length", rd.read())
            self.assertTrue(rd.at_eof(5))
        c = srv.client()
        self.assertTrue(c.set("k", b"x" * (1024 * 1024)))
        self.assertEqual(1024 * 1024, c.strlen("k"))
        c.close()

    def test_client_query_buffer_limit(self):
        srv = self.start_server(["--client-query-buffer-limit", "1mb"])
        bystander = self.client(srv)
        bystander.set("b", "1")
        with srv.sock(timeout=10) as s:
            # An unfinished 3 MB bulk string: more than 1 MB buffered.
            s.sendall(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3000000\r\n")
            chunk = b"x" * 65536
            sent = 0
            try:
                while sent < 2 * 1024 * 1024:
                    s.sendall(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # closed by the server while sending: fine
            self.assertTrue(RespReader(s).at_eof(10), "client over the query buffer limit not closed")
        self.assertTrue(wait_until(lambda: "max query buffer" in srv.read_log(), timeout=5), srv.read_log()[-2000:])
        self.assertEqual(b"1", bystander.get("b"))
        self.assertIsNone(bystander.get("k"))
        # A whole request under the limit is fine.
        self.assertTrue(bystander.set("k", b"y" * (512 * 1024)))

    def test_too_many_arguments(self):
        srv = self.start_server()
        with srv.sock() as s:
            s.sendall(b"*1048577\r\n")
            rd = RespReader(s)
            self.assertEqual("ERR Protocol error: invalid multibulk length", rd.read())
            self.assertTrue(rd.at_eof(5))
        # Many arguments within the limit work.
        c = self.client(srv)
        pairs = {"many:%d" % i: i for i in range(20000)}
        self.assertTrue(c.mset(pairs))
        self.assertEqual(20000, c.dbsize())
        got = c.mget(list(pairs))
        self.assertEqual([b"%d" % i for i in range(20000)], got)
        self.assertEqual(20000, c.exists(*pairs))
        self.assertEqual(20000, c.delete(*pairs))

    def test_many_connections(self):
        srv = self.start_server()
        socks = []
        try:
            for i in range(200):
                socks.append(srv.sock())
            for i, s in enumerate(socks):
                s.sendall(cmd("SET", "c%d" % i, i))
            for s in socks:
                self.assertEqual("OK", RespReader(s).read())
            c = srv.client()
            self.assertGreaterEqual(c.info("clients")["connected_clients"], 201)
            self.assertEqual(200, c.dbsize())
            c.close()
        finally:
            for s in socks:
                s.close()
        c = srv.client()
        self.assertTrue(wait_until(lambda: c.info("clients")["connected_clients"] == 1, timeout=5),
                        c.info("clients"))
        c.close()


if __name__ == "__main__":
    unittest.main()
