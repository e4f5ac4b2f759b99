"""
Real clients against a real kvd: redis-cli (arguments, piped commands,
-x, --pipe, --scan, -a), redis-py (decoding, client name, a connection pool
shared by threads, scan_iter, every SET variant), and short redis-benchmark
runs.
"""
import os
import re
import shutil
import subprocess
import threading
import unittest

import redis

from kvdtest import SharedKvdTestCase

REDIS_CLI = shutil.which("redis-cli")
REDIS_BENCHMARK = shutil.which("redis-benchmark")


def run(argv, input=None, timeout=60):
    return subprocess.run(argv, input=input, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)


@unittest.skipUnless(REDIS_CLI, "redis-cli (redis-tools) not installed")
class TestRedisCli(SharedKvdTestCase):
    def cli(self, *args, input=None):
        p = run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(self.srv.port)] + list(args), input=input)
        self.assertEqual(0, p.returncode, p.stderr)
        return p.stdout.decode()

    def test_set_get(self):
        self.assertEqual("OK\n", self.cli("SET", "a", "b"))
        self.assertEqual("b\n", self.cli("GET", "a"))
        self.assertEqual(b"b", self.r.get("a"))
        self.assertEqual("\n", self.cli("GET", "missing"))  # nil prints empty when not a tty
        self.assertEqual("3\n", self.cli("INCRBY", "n", "3"))
        self.assertEqual("PONG\n", self.cli("PING"))

    def test_errors(self):
        out = self.cli("NOSUCH", "x")
        self.assertIn("ERR unknown command 'NOSUCH', with args beginning with: 'x'", out)
        out = self.cli("GET")
        self.assertIn("ERR wrong number of arguments for 'get' command", out)

    def test_piped_commands(self):
        script = b"SET p1 hello\nAPPEND p1 \" world\"\nGET p1\nINCR c\nINCR c\nMGET p1 c nope\nDBSIZE\n"
        out = self.cli(input=script)
        self.assertEqual(["OK", "11", "hello world", "1", "2", "hello world", "2", "", "2"], out.splitlines())
        self.assertEqual(b"hello world", self.r.get("p1"))

    def test_dash_x_reads_value_from_stdin(self):
        data = b"line1\nline2\x00binary\xff"
        self.assertEqual("OK\n", self.cli("-x", "SET", "fromstdin", input=data))
        self.assertEqual(data, self.r.get("fromstdin"))

    def test_pipe_mode(self):
        # redis-cli --pipe: mass insertion in the raw protocol.
        proto = b"".join(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n" % (len(b"m%d" % i), b"m%d" % i)
                         for i in range(1000))
        out = self.cli("--pipe", input=proto)
        self.assertIn("errors: 0, replies: 1000", out)
        self.assertEqual(1000, self.r.dbsize())

    def test_scan_and_keys(self):
        self.r.mset({"user:%d" % i: i for i in range(30)})
        keys = set(self.cli("--scan", "--pattern", "user:*").split())
        self.assertEqual({"user:%d" % i for i in range(30)}, keys)
        self.assertEqual(30, len(self.cli("KEYS", "user:*").split()))

    def test_info_and_dbsize(self):
        self.r.set("a", 1)
        out = self.cli("INFO", "keyspace")
        self.assertIn("db0:keys=1,expires=0", out)
        self.assertEqual("1\n", self.cli("DBSIZE"))

    def test_multi_exec_via_pipe(self):
        out = self.cli(input=b"MULTI\nSET t 1\nINCR t\nEXEC\n")
        self.assertEqual(["OK", "QUEUED", "QUEUED", "OK", "2"], out.splitlines())

    def test_auth_flag(self):
        self.r.config_set("requirepass", "clipass")
        try:
            p = run([REDIS_CLI, "-p", str(self.srv.port), "GET", "a"])
            self.assertIn("NOAUTH", p.stdout.decode() + p.stderr.decode())
            p = run([REDIS_CLI, "-p", str(self.srv.port), "--no-auth-warning", "-a", "clipass", "SET", "a", "1"])
            self.assertEqual(b"OK\n", p.stdout)
            p = run([REDIS_CLI, "-p", str(self.srv.port), "--no-auth-warning", "--user", "default", "--pass",
                     "clipass", "GET", "a"])
            self.assertEqual(b"1\n", p.stdout)
        finally:
            self.r.config_set("requirepass", "")


class TestRedisPy(SharedKvdTestCase):
    def test_decode_responses_and_types(self):
        c = self.client(decode_responses=True)
        self.assertTrue(c.set("ü", "välue"))
        self.assertEqual("välue", c.get("ü"))
        self.assertEqual(["välue", None], c.mget("ü", "nope"))
        self.assertEqual(1, c.exists("ü"))
        self.assertEqual("string", c.type("ü"))
        self.assertTrue(c.expire("ü", 100))
        self.assertEqual(100, c.ttl("ü"))
        self.assertEqual(["ü"], c.keys("*"))
        self.assertEqual(1, c.dbsize())
        self.assertIsInstance(c.info(), dict)
        self.assertTrue(c.ping())
        self.assertEqual("hi", c.echo("hi"))

    def test_client_name_and_id(self):
        c = self.client(client_name="pyclient")
        name = c.client_getname()
        self.assertEqual("pyclient", name.decode() if isinstance(name, bytes) else name)
        self.assertIsInstance(c.client_id(), int)

    def test_connection_pool_threads(self):
        pool = redis.ConnectionPool(host="127.0.0.1", port=self.srv.port, max_connections=8, socket_timeout=10)
        c = redis.Redis(connection_pool=pool)
        errors = []

        def work(t):
            try:
                for i in range(50):
                    c.set("pool:%d:%d" % (t, i), i)
                    if c.get("pool:%d:%d" % (t, i)) != b"%d" % i:
                        errors.append((t, i))
            except Exception as e:
                errors.append(repr(e))

        ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in ts))
        pool.disconnect()
        self.assertEqual([], errors)
        self.assertEqual(400, self.r.dbsize())

    def test_scan_iter_and_delete(self):
        self.r.mset({"s:%d" % i: i for i in range(250)})
        keys = list(self.r.scan_iter(match="s:*", count=20))
        self.assertEqual(250, len(set(keys)))
        self.assertEqual(250, self.r.delete(*keys))
        self.assertEqual(0, self.r.dbsize())

    def test_set_variants(self):
        r = self.r
        self.assertTrue(r.set("a", 1, nx=True))
        self.assertIsNone(r.set("a", 2, nx=True))
        self.assertTrue(r.set("a", 3, xx=True, px=60000))
        self.assertTrue(r.set("a", 4, keepttl=True))
        self.assertGreater(r.pttl("a"), 50000)
        self.assertEqual(b"4", r.set("a", 5, get=True))
        self.assertTrue(r.setex("b", 100, "x"))
        self.assertTrue(r.psetex("c", 100000, "y"))
        self.assertTrue(r.msetnx({"d": 1, "e": 2}))
        self.assertFalse(r.msetnx({"e": 3, "f": 4}))
        self.assertEqual(b"x", r.getdel("b"))
        self.assertEqual(7, r.incrby("g", 7))
        self.assertEqual(5, r.decrby("g", 2))
        self.assertTrue(r.rename("g", "h"))
        self.assertTrue(r.expireat("h", 4102444800))  # 2100-01-01
        self.assertTrue(r.persist("h"))
        self.assertTrue(r.pexpire("h", 100000))
        self.assertTrue(r.pexpireat("h", 4102444800000))
        self.assertEqual(1, r.unlink("h"))

    def test_large_values(self):
        big = os.urandom(3 * 1024 * 1024)
        self.assertTrue(self.r.set("big", big))
        self.assertEqual(big, self.r.get("big"))
        self.assertEqual(len(big), self.r.strlen("big"))


@unittest.skipUnless(REDIS_BENCHMARK, "redis-benchmark (redis-tools) not installed")
class TestRedisBenchmark(SharedKvdTestCase):
    def test_set_get_benchmark(self):
        p = run([REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(self.srv.port), "-t", "set,get", "-n", "2000",
                 "-c", "10", "-q"], timeout=120)
        out = (p.stdout + p.stderr).decode(errors="replace")
        self.assertEqual(0, p.returncode, out)
        # -q prints progress with \r; the final lines hold the results.
        text = out.replace("\r", "\n")
        self.assertRegex(text, r"SET: [\d.]+ requests per second")
        self.assertRegex(text, r"GET: [\d.]+ requests per second")
        self.assertNotIn("ERR", text)
        self.assertNotIn("rror", text)
        # It wrote its keys.
        self.assertEqual(3, self.r.strlen("key:__rand_int__"))  # -d default: 3 bytes
        info = self.r.info("stats")
        self.assertGreaterEqual(info["total_commands_processed"], 4000)

    def test_pipelined_benchmark(self):
        p = run([REDIS_BENCHMARK, "-h", "127.0.0.1", "-p", str(self.srv.port), "-t", "set,get,incr,mset", "-n",
                 "2000", "-c", "4", "-P", "16", "-q"], timeout=120)
        out = (p.stdout + p.stderr).decode(errors="replace").replace("\r", "\n")
        self.assertEqual(0, p.returncode, out)
        for name in ("SET", "GET", "INCR", "MSET \\(10 keys\\)"):
            self.assertRegex(out, name + r": [\d.]+ requests per second")
        self.assertNotIn("ERR", out)
        self.assertEqual(b"2000", self.r.get("counter:__rand_int__"))


if __name__ == "__main__":
    unittest.main()
