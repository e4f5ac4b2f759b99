"""
kvdtest — helpers for the kvd integration tests: start a real kvd on a free
loopback port in a temporary data directory, talk to it (redis-py, raw
sockets), stop it, and check its log for sanitizer reports.

Run every test with Debian's interpreter (/usr/bin/python3), where
python3-redis is installed. The kvd binary is taken from $KVD_BIN (CTest
sets it), else from build/test/kv/kvd relative to the source tree.

Run one file or one test by hand from this directory:
    /usr/bin/python3 -m unittest -v test_protocol
    /usr/bin/python3 -m unittest -v test_commands.TestStrings.test_set_get
or all of them through CTest: ctest --test-dir build/test -R integration

Every wait here is bounded in time; every server started is stopped
(SIGTERM, then SIGKILL) by KvdTestCase.tearDown even when a test failed.
"""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import redis

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

# Sanitizer report markers: any of these in kvd's log or stderr means the
# server hit a memory or undefined-behaviour bug.
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer")


def kvd_bin():
    b = os.environ.get("KVD_BIN") or os.path.join(SRC, "build", "test", "kv", "kvd")
    if not os.path.exists(b):
        raise unittest.SkipTest("kvd binary not found at %s (set KVD_BIN)" % b)
    return b


def free_port():
    """A port that was free a moment ago (bind 127.0.0.1:0, read it, close)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, timeout=5.0, interval=0.02):
    """Polls pred() until it is true or timeout seconds pass; returns the
    last value of pred()."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def _env():
    env = dict(os.environ)
    # The server runs under ASan/UBSan: make sure reports are produced and
    # make UBSan reports fatal so they are noticed.
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


class KvdServer:
    """One kvd process on 127.0.0.1 with its own data directory.

    dir: the data directory (default: a fresh temporary one, removed by
    cleanup()). extra: more command-line flags. The log goes to
    <workdir>/kvd.log, stderr to <workdir>/kvd.stderr.
    """

    START_TIMEOUT = 10.0
    STOP_TIMEOUT = 10.0

    def __init__(self, extra=(), datadir=None, workdir=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="kvdtest-")
        self.own_workdir = workdir is None
        self.dir = datadir or os.path.join(self.workdir, "data")
        self.extra = list(extra)
        self.port = None
        self.proc = None
        self.logfile = os.path.join(self.workdir, "kvd.log")
        self.errfile = os.path.join(self.workdir, "kvd.stderr")
        self._err = None
        self.returncode = None

    # ---- life cycle ----

    def argv(self, port=None):
        return [kvd_bin(), "--bind", "127.0.0.1", "--port", str(port if port is not None else self.port),
                "--dir", self.dir, "--logfile", self.logfile] + self.extra

    def start(self, wait=True, port=None):
        """Starts kvd on a free port (or on `port`); waits (bounded) until
        PING answers. Retries with another port if the chosen one was taken
        meanwhile."""
        assert self.proc is None, "already running"
        for _ in range(3):
            self.port = port or free_port()
            self._err = open(self.errfile, "ab")
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL, stdout=self._err,
                                         stderr=subprocess.STDOUT, env=_env())
            if not wait:
                return self
            if self._wait_ready():
                return self
            rc = self.proc.poll()
            if rc is not None and "in use" in self.read_log() + self.read_stderr():
                self._reap()
                continue  # port raced away: try another one
            self.kill9()
            raise AssertionError("kvd did not become ready in %.0f s (exit %r)\nlog:\n%s\nstderr:\n%s" %
                                 (self.START_TIMEOUT, rc, self.read_log()[-3000:], self.read_stderr()[-3000:]))
        raise AssertionError("kvd could not find a free port")

    def _wait_ready(self):
        deadline = time.monotonic() + self.START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as s:
                    s.sendall(b"PING\r\n")
                    s.settimeout(2.0)
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _reap(self):
        self.returncode = self.proc.returncode
        self.proc = None
        if self._err:
            self._err.close()
            self._err = None

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=None):
        """Waits (bounded) for the process to exit; returns its exit code."""
        timeout = self.STOP_TIMEOUT if timeout is None else timeout
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self._reap()
            raise AssertionError("kvd did not exit within %.0f s; killed" % timeout)
        self._reap()
        return self.returncode

    def stop(self, timeout=None):
        """SIGTERM and a bounded wait; returns the exit code. If kvd does
        not exit in time it is killed and an AssertionError raised."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill9(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        finally:
            self._reap()

    def restart(self, extra=None):
        """Stops cleanly (SIGTERM) if running, then starts again on the same
        data directory (on a new port)."""
        if self.proc is not None:
            rc = self.stop()
            assert rc == 0, "kvd exited with %r on SIGTERM" % rc
        if extra is not None:
            self.extra = list(extra)
        return self.start()

    def cleanup(self):
        """Kills the server if still running; removes the temp directory."""
        try:
            if self.proc is not None:
                if self.proc.poll() is None:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=self.STOP_TIMEOUT)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait(timeout=5)
                self._reap()
        finally:
            if self.own_workdir:
                shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- clients ----

    def client(self, **kw):
        kw.setdefault("socket_timeout", 10)
        kw.setdefault("socket_connect_timeout", 5)
        return redis.Redis(host="127.0.0.1", port=self.port, **kw)

    def sock(self, timeout=5.0):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        s.settimeout(timeout)
        return s

    # ---- output ----

    def read_log(self):
        try:
            with open(self.logfile, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def read_stderr(self):
        try:
            with open(self.errfile, "r", errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def sanitizer_reports(self):
        text = self.read_log() + "\n" + self.read_stderr()
        return [m for m in SANITIZER_MARKERS if m in text]


# ---- raw protocol helpers ----

def cmd(*args):
    """Encodes a RESP multibulk request; arguments may be str or bytes."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class RespReader:
    """Reads RESP2 replies from a socket, for raw-socket tests. Errors are
    returned as RespError instances (not raised), nil as None."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError("connection closed by server")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _bytes(self, n):
        while len(self.buf) < n + 2:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n + 2:]
        return d

    def read(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            return RespError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._bytes(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ValueError("bad reply line %r" % line)

    def at_eof(self, timeout=5.0):
        """True if the server closes the connection within timeout (any
        bytes still unread are discarded)."""
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return False


class RespError(str):
    pass


class KvdTestCase(unittest.TestCase):
    """Base class: self.start_server(...) starts a kvd that tearDown always
    stops; tearDown then checks the server's output for sanitizer reports.
    Set SERVER_EXTRA (flags) and AUTO_START = True for one server per test
    in self.srv with a client in self.r."""

    AUTO_START = False
    SERVER_EXTRA = ()

    def setUp(self):
        self._servers = []
        self._clients = []
        if self.AUTO_START:
            self.srv = self.start_server(self.SERVER_EXTRA)
            self.r = self.client()

    def start_server(self, extra=(), **kw):
        s = KvdServer(extra, **kw)
        self._servers.append(s)
        s.start()
        return s

    def client(self, srv=None, **kw):
        c = (srv or self.srv).client(**kw)
        self._clients.append(c)
        return c

    def tearDown(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        problems = []
        for s in self._servers:
            rc = None
            try:
                if s.running():
                    rc = s.stop()
                    if rc != 0:
                        problems.append("kvd exited with %r after SIGTERM" % rc)
            except AssertionError as e:
                problems.append(str(e))
            reports = s.sanitizer_reports()
            if reports:
                problems.append("sanitizer report in kvd output (%s):\n%s\n%s" %
                                (", ".join(reports), s.read_log()[-6000:], s.read_stderr()[-6000:]))
            s.cleanup()
        if problems:
            self.fail("\n".join(problems))


class SharedKvdTestCase(unittest.TestCase):
    """Base class: one kvd for the whole class (started in setUpClass,
    stopped and checked for sanitizer reports in tearDownClass); every test
    starts from an empty store (FLUSHALL) with a fresh client self.r."""

    SERVER_EXTRA = ()

    @classmethod
    def setUpClass(cls):
        cls.srv = KvdServer(cls.SERVER_EXTRA)
        try:
            cls.srv.start()
        except BaseException:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        srv = cls.srv
        try:
            rc = srv.stop() if srv.running() else srv.returncode
            reports = srv.sanitizer_reports()
            if reports:
                raise AssertionError("sanitizer report in kvd output (%s):\n%s\n%s" %
                                     (", ".join(reports), srv.read_log()[-6000:], srv.read_stderr()[-6000:]))
            if rc != 0:
                raise AssertionError("kvd exited with %r after SIGTERM\n%s" % (rc, srv.read_log()[-3000:]))
        finally:
            srv.cleanup()

    def setUp(self):
        self.assertTrue(self.srv.running(), "the shared kvd is not running (crashed?):\n" + self.srv.read_log()[-3000:])
        self._clients = []
        self.r = self.client()
        self.r.flushall()

    def client(self, **kw):
        c = self.srv.client(**kw)
        self._clients.append(c)
        return c

    def tearDown(self):
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass

    def raw(self, *requests, n=None, timeout=5.0):
        """Sends the given raw request bytes on a fresh socket (one send)
        and reads n replies (default: one per request)."""
        return raw_exchange(self.srv, b"".join(requests), len(requests) if n is None else n, timeout)


def raw_exchange(srv, data, n, timeout=5.0):
    with srv.sock(timeout) as s:
        s.sendall(data)
        rd = RespReader(s)
        return [rd.read() for _ in range(n)]
