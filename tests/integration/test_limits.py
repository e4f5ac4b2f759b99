"""
Resource limits of a real kvd: output-buffer limits and read backpressure
(a client that pipelines GETs of a 100 KB value and never reads), the
client-output-buffer-limit setting, and the open-file limit (kvd started
under a low `ulimit -n`, or with its limit lowered while it runs).

Every socket has a timeout, every loop a bound, every server is stopped.
"""
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest

from kvdtest import KvdServer, KvdTestCase, RespError, RespReader, cmd, wait_until

PRLIMIT = shutil.which("prlimit")
VALUE_LEN = 100 * 1024
GET_BIG = cmd("GET", "bigkey")
MAX_CLIENTS_ERR = "ERR max number of clients reached"
OBUF_LINE = re.compile(r"Client id=\d+ addr=127\.0\.0\.1:\d+ name=\S* age=\d+ omem=(\d+) limit=(hard|soft) "
                       r"sub=\d+ psub=\d+ scheduled to be closed ASAP for overcoming of output buffer limits\.")
ACCEPT_LINE = "Accepting client connection: accept:"
TICKS = os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def cpu_ticks(pid):
    """utime + stime of the process, in clock ticks (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def cpu_ticks_over(pid, seconds=1.0):
    before = cpu_ticks(pid)
    time.sleep(seconds)
    return cpu_ticks(pid) - before


def can_raise_hard_nofile():
    """True if a process of ours may raise its hard RLIMIT_NOFILE (then kvd
    is never short of descriptors under prlimit)."""
    probe = "import resource as r; r.setrlimit(r.RLIMIT_NOFILE, (64, 64)); r.setrlimit(r.RLIMIT_NOFILE, (128, 128))"
    return subprocess.run([sys.executable, "-c", probe], stderr=subprocess.DEVNULL, timeout=10).returncode == 0


def pipeline_unread(srv, n, timeout=2.0):
    """Opens a raw connection and sends n pipelined `GET bigkey` without
    reading any reply; stops when the server stops taking them (bounded by
    timeout) or closes the connection (a client over its output-buffer
    limit may be closed before it sent everything). Returns the socket and
    the bytes sent."""
    s = srv.sock(timeout=timeout)
    data = GET_BIG * n
    sent = 0
    try:
        while sent < len(data):
            sent += s.send(data[sent:sent + 65536])
    except (socket.timeout, BlockingIOError, ConnectionResetError, BrokenPipeError):
        pass
    return s, sent


def read_replies(s, n, timeout=30.0):
    rd = RespReader(s)
    s.settimeout(timeout)
    return [rd.read() for _ in range(n)]


def info(r, section):
    return r.info(section)


class TestOutputBuffer(KvdTestCase):
    def start(self, *extra):
        # One I/O thread: the pipelining client and the pinging one share it.
        srv = self.start_server(["--io-threads", "1"] + list(extra))
        r = self.client(srv)
        r.set("bigkey", b"v" * VALUE_LEN)
        return srv, r

    def assert_pings_prompt(self, r, count=40, each=0.5, total=20.0):
        start = time.monotonic()
        worst = 0.0
        for _ in range(count):
            t = time.monotonic()
            self.assertTrue(r.ping())
            worst = max(worst, time.monotonic() - t)
            time.sleep(0.02)
        self.assertLess(worst, each, "a PING took %.3f s" % worst)
        self.assertLess(time.monotonic() - start, total)
        return worst

    def test_unread_pipeline_keeps_rss_bounded_and_pings_prompt(self):
        srv, r = self.start()
        pid = srv.proc.pid
        before = rss_kb(pid)
        # 5000 GETs ask for 500 MB of replies. Before backpressure kvd
        # buffered them all (RSS 13.6 MB -> 377 MB); now it stops reading
        # at 1 MiB of unsent replies.
        s, sent = pipeline_unread(srv, 5000)
        try:
            self.assertEqual(len(GET_BIG) * 5000, sent)
            self.assert_pings_prompt(r)
            self.assertTrue(wait_until(lambda: int(info(r, "clients")["client_recent_max_output_buffer"]) > 0, 5))
            grown = rss_kb(pid) - before
            self.assertLess(grown, 64 * 1024, "RSS grew by %d KB" % grown)
            clients = info(r, "clients")
            biggest = int(clients["client_recent_max_output_buffer"])
            self.assertGreaterEqual(biggest, VALUE_LEN)
            self.assertLess(biggest, 2 * 1024 * 1024)  # 1 MiB pause mark + one reply
            self.assertGreaterEqual(int(clients["connected_clients"]), 2)  # it is still connected
            # The default limits (hard 1gb, soft 256mb) never close it.
            self.assertEqual(0, int(info(r, "stats")["client_output_buffer_limit_disconnections"]))
        finally:
            s.close()

    def test_paused_client_gets_every_reply_once_it_reads(self):
        srv, r = self.start()
        s, sent = pipeline_unread(srv, 500)
        try:
            self.assertEqual(len(GET_BIG) * 500, sent)
            time.sleep(0.5)  # kvd pauses the connection meanwhile
            replies = read_replies(s, 500)
            self.assertEqual(500, len(replies))
            self.assertTrue(all(v == b"v" * VALUE_LEN for v in replies))
            s.sendall(b"PING\r\n")
            self.assertEqual(["PONG"], read_replies(s, 1))
        finally:
            s.close()

    def test_half_closed_pipeline_gets_every_reply_then_eof(self):
        # The GETs wait behind the SET's write, so kvd reads the EOF
        # while they are still buffered; they then pause the connection.
        # They must all run, not be dropped with the close.
        srv, r = self.start()
        s = srv.sock(timeout=10)
        try:
            s.sendall(cmd("SET", "w", "1") + GET_BIG * 300 + cmd("ECHO", "last"))
            s.shutdown(socket.SHUT_WR)
            time.sleep(0.5)
            replies = read_replies(s, 302)
            self.assertEqual("OK", replies[0])
            self.assertTrue(all(v == b"v" * VALUE_LEN for v in replies[1:301]))
            self.assertEqual(b"last", replies[301])
            self.assertTrue(RespReader(s).at_eof(5))
        finally:
            s.close()

    def test_hard_limit_set_low_disconnects_the_client(self):
        srv, r = self.start()
        pid = srv.proc.pid
        self.assertEqual(b"OK", r.execute_command("CONFIG", "SET", "client-output-buffer-limit", "normal 512kb 0 0"))
        before = rss_kb(pid)
        s, _ = pipeline_unread(srv, 5000)
        try:
            self.assertTrue(wait_until(
                lambda: int(info(r, "stats")["client_output_buffer_limit_disconnections"]) == 1, 10))
            self.assert_pings_prompt(r, count=10)
            # The connection is closed: what was sent ends in EOF or a reset.
            self.assertTrue(RespReader(s).at_eof(10))
        finally:
            s.close()
        self.assertLess(rss_kb(pid) - before, 64 * 1024)
        lines = OBUF_LINE.findall(srv.read_log())
        self.assertEqual(1, len(lines), srv.read_log()[-2000:])
        self.assertEqual("hard", lines[0][1])
        self.assertGreaterEqual(int(lines[0][0]), 512 * 1024)
        self.assertTrue(wait_until(lambda: int(info(r, "clients")["connected_clients"]) == 1, 5))
        # The counter is a stat: CONFIG RESETSTAT zeroes it.
        r.config_resetstat()
        self.assertEqual(0, int(info(r, "stats")["client_output_buffer_limit_disconnections"]))

    def test_soft_limit_disconnects_only_after_its_seconds(self):
        srv, r = self.start("--client-output-buffer-limit", "normal 0 256kb 1")
        self.assertEqual(b"normal 0 262144 1 slave 268435456 67108864 60 pubsub 33554432 8388608 60",
                         r.execute_command("CONFIG", "GET", "client-output-buffer-limit")[1])
        start = time.monotonic()
        s, _ = pipeline_unread(srv, 5000, timeout=0.5)
        try:
            self.assertTrue(wait_until(
                lambda: int(info(r, "stats")["client_output_buffer_limit_disconnections"]) == 1, 10))
            elapsed = time.monotonic() - start
            # Over the soft limit for more than 1 s, checked once a second.
            self.assertGreaterEqual(elapsed, 1.0)
            self.assertLess(elapsed, 5.0)
            self.assertTrue(RespReader(s).at_eof(10))
        finally:
            s.close()
        lines = OBUF_LINE.findall(srv.read_log())
        self.assertEqual(["soft"], [kind for _, kind in lines])

    def test_config_set_takes_redis_syntax_and_bad_values_change_nothing(self):
        srv, r = self.start()

        def get():
            return r.execute_command("CONFIG", "GET", "client-output-buffer-limit")[1]

        default = b"normal 1073741824 268435456 60 slave 268435456 67108864 60 pubsub 33554432 8388608 60"
        self.assertEqual(default, get())
        prefix = "CONFIG SET failed (possibly related to argument 'client-output-buffer-limit') - "
        for value, why in (("normal 1mb 1mb", "Wrong number of arguments in buffer limit configuration."),
                           ("master 0 0 0", "Invalid client class specified in buffer limit configuration."),
                           ("normal 1mb x 0", "Error in hard, soft or soft_seconds setting in buffer limit "
                                              "configuration."),
                           ("pubsub 1 1 1 normal 1 1 -1", "Error in hard, soft or soft_seconds setting in "
                                                          "buffer limit configuration.")):
            with self.assertRaises(Exception) as e:
                r.execute_command("CONFIG", "SET", "client-output-buffer-limit", value)
            self.assertEqual(prefix + why, str(e.exception))
            self.assertEqual(default, get())
        self.assertEqual(b"OK", r.execute_command("CONFIG", "SET", "client-output-buffer-limit",
                                                 "normal 2mb 1mb 10 replica 0 0 0 pubsub 64mb 16mb 120"))
        self.assertEqual(b"normal 2097152 1048576 10 slave 0 0 0 pubsub 67108864 16777216 120", get())


@unittest.skipUnless(PRLIMIT, "prlimit (util-linux) not installed")
class TestOpenFileLimit(KvdTestCase):
    def start_limited(self, nofile, extra=()):
        """kvd run through `prlimit --nofile=N:N` (prlimit execs it: same pid)."""

        class Limited(KvdServer):
            def argv(self, port=None):
                return [PRLIMIT, "--nofile=%d:%d" % (nofile, nofile), "--"] + KvdServer.argv(self, port)

        srv = Limited(list(extra))
        self._servers.append(srv)
        srv.start()
        return srv

    def open_many(self, srv, n):
        """n connections at once, each sends PING; returns the replies
        (str, or the exception's name when there was none)."""
        socks = []
        try:
            for _ in range(n):
                socks.append(srv.sock(timeout=5))
            for s in socks:
                s.sendall(b"PING\r\n")
            # One deadline for all: a client left waiting costs at most
            # what remains of it, so a regression fails in seconds.
            deadline = time.monotonic() + 10
            replies = []
            for s in socks:
                s.settimeout(max(0.05, deadline - time.monotonic()))
                try:
                    replies.append(RespReader(s).read())
                except (OSError, EOFError) as e:
                    replies.append(type(e).__name__)
            return socks, replies
        except BaseException:
            for s in socks:
                s.close()
            raise

    def check_replies(self, socks, replies):
        served = [s for s, rep in zip(socks, replies) if rep == "PONG"]
        refused = [s for s, rep in zip(socks, replies) if rep == MAX_CLIENTS_ERR]
        others = [rep for rep in replies if rep not in ("PONG", MAX_CLIENTS_ERR)]
        self.assertEqual([], others, "replies other than PONG or the max-clients error")
        self.assertIsInstance(replies[-1], RespError)  # the last ones are refused, not served
        for s in refused:  # and then closed
            self.assertTrue(RespReader(s).at_eof(5))
        return len(served), len(refused)

    def assert_idle_and_serving(self, srv):
        pid = srv.proc.pid
        time.sleep(0.3)
        used = cpu_ticks_over(pid, 1.0)
        self.assertLess(used, 0.2 * TICKS, "kvd used %d CPU ticks in an idle second" % used)
        c = self.client(srv)
        self.assertTrue(c.ping())
        self.assertTrue(c.set("after", "1"))
        return c

    def test_low_ulimit_lowers_maxclients_and_refuses_the_rest(self):
        if can_raise_hard_nofile():
            self.skipTest("this process may raise its hard open-file limit (CAP_SYS_RESOURCE): kvd would too")
        srv = self.start_limited(64, ["--io-threads", "1"])
        log = srv.read_log()
        # 64 descriptors - 32 reserved - 2 for the I/O thread = 30 clients.
        self.assertIn("You requested maxclients of 10000 requiring at least 10034 max file descriptors.", log)
        self.assertIn("Server can't set maximum open files to 10034 because of OS error: ", log)
        self.assertIn("Current maximum open files is 64. maxclients has been reduced to 30 to compensate for "
                      "low ulimit. If you need higher maxclients increase 'ulimit -n'.", log)
        socks, replies = self.open_many(srv, 200)
        try:
            served, refused = self.check_replies(socks, replies)
            self.assertGreaterEqual(served, 28)  # the readiness probe may still hold one
            self.assertLessEqual(served, 30)
            self.assertEqual(200, served + refused)
            self.assertLessEqual(srv.read_log().count(ACCEPT_LINE), 3)
        finally:
            for s in socks:
                s.close()
        c = self.assert_idle_and_serving(srv)
        self.assertEqual("30", str(c.info("clients")["maxclients"]))
        self.assertGreaterEqual(c.info("stats")["rejected_connections"], refused)
        # CONFIG SET maxclients cannot pass what the limit holds.
        with self.assertRaises(Exception) as e:
            c.config_set("maxclients", "31")
        self.assertEqual("CONFIG SET failed (possibly related to argument 'maxclients') - The operating system is "
                         "not able to handle the specified number of clients, try with 30", str(e.exception))
        self.assertTrue(c.config_set("maxclients", "20"))

    def test_soft_limit_is_raised_to_the_hard_one_or_the_start_refused(self):
        class Raised(KvdServer):
            def argv(self, port=None):
                return [PRLIMIT, "--nofile=100:1000", "--"] + KvdServer.argv(self, port)

        raised = Raised(["--io-threads", "1", "--maxclients", "500"])
        self._servers.append(raised)
        raised.start()
        self.assertIn("Increased maximum number of open files to 1000 (it was originally set to 100).",
                      raised.read_log())
        self.assertNotIn("maxclients has been reduced", raised.read_log())
        with open("/proc/%d/limits" % raised.proc.pid) as f:
            self.assertRegex(f.read(), r"Max open files\s+1000\s+1000\s")
        self.assertEqual(500, self.client(raised).info("clients")["maxclients"])
        if can_raise_hard_nofile():
            return  # kvd would raise the hard limit and start
        # Too few descriptors for even one client (34 reserved + the one
        # segment of that directory): the start is refused, exit 1, before
        # the data directory is even opened (its LOCK is held meanwhile).
        p = subprocess.run([PRLIMIT, "--nofile=30:30", "--", KvdServer.argv(raised, 0)[0], "--port", "0",
                            "--io-threads", "1", "--dir", raised.dir], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        self.assertEqual(1, p.returncode)
        self.assertIn(b"Your current 'ulimit -n' of 30 is not enough for the server to start. Please increase "
                      b"your open file limit to at least 36. Exiting.", p.stdout)

    def test_descriptor_exhaustion_refuses_clients_without_spinning(self):
        srv = self.start_server(["--io-threads", "1", "--maxclients", "1000"])
        pid = srv.proc.pid
        # Lower the limit under kvd's feet: maxclients no longer protects
        # it, accept() fails with EMFILE.
        subprocess.run([PRLIMIT, "--pid", str(pid), "--nofile=48:48"], check=True, timeout=10)
        start = time.monotonic()
        socks, replies = self.open_many(srv, 200)
        try:
            served, refused = self.check_replies(socks, replies)
            self.assertGreater(served, 10)
            self.assertGreater(refused, 100)
            # Held at the limit: no busy loop on the listening socket.
            used = cpu_ticks_over(pid, 1.0)
            self.assertLess(used, 0.2 * TICKS, "kvd used %d CPU ticks in a second at the limit" % used)
            # One log line a second at most.
            lines = srv.read_log().count(ACCEPT_LINE)
            self.assertGreaterEqual(lines, 1)
            self.assertLessEqual(lines, time.monotonic() - start + 2)
            self.assertIn("Too many open files", srv.read_log())
        finally:
            for s in socks:
                s.close()
        c = self.assert_idle_and_serving(srv)
        self.assertGreaterEqual(c.info("stats")["rejected_connections"], refused)


class TestConfigUnderLoad(KvdTestCase):
    """CONFIG SET changes settings that other threads read as they run:
    the cron (hz, compaction thresholds), the listener (maxclients), INFO,
    the log (loglevel). Run beside all of them, it must change nothing
    but the settings; under the ThreadSanitizer build a data race between
    the writer of a setting and a reader ends kvd, and this test with it."""

    def test_config_set_beside_info_and_new_clients(self):
        srv = self.start_server(["--io-threads", "2"])
        settings = [("hz", ["5", "50", "10"]), ("maxclients", ["5000", "9000", "10000"]),
                    ("loglevel", ["verbose", "notice"]), ("compact-min-dead", ["1mb", "64mb"]),
                    ("compact-dead-ratio", ["30", "50"]), ("scrub-rate", ["1mb", "64kb"])]
        stop = threading.Event()
        errors = []

        def setter():
            c = self.client(srv)
            i = 0
            while not stop.is_set():
                name, values = settings[i % len(settings)]
                c.config_set(name, values[(i // len(settings)) % len(values)])
                i += 1

        def reader():
            c = self.client(srv)
            while not stop.is_set():
                c.info()
                c.set("k", "v")

        def connector():
            while not stop.is_set():
                c = self.client(srv)
                c.ping()
                c.close()

        def run(fn):
            try:
                fn()
            except Exception as e:  # reported below, in the test's thread
                errors.append(repr(e))

        threads = [threading.Thread(target=run, args=(f,)) for f in (setter, reader, connector)]
        for t in threads:
            t.start()
        time.sleep(2.0)
        stop.set()
        for t in threads:
            t.join(30)
        self.assertEqual([], errors)
        c = self.client(srv)
        c.config_set("hz", "10")
        c.config_set("maxclients", "10000")
        self.assertEqual({"hz": "10"}, c.config_get("hz"))
        self.assertEqual({"maxclients": "10000"}, c.config_get("maxclients"))
        self.assertEqual(b"v", c.get("k"))
        self.assertEqual(10, int(c.info("server")["hz"]))


if __name__ == "__main__":
    unittest.main()
