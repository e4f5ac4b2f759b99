"""
MULTI/EXEC/DISCARD/WATCH/UNWATCH against a real kvd: queued replies,
aborts, queue-time and run-time errors, optimistic locking between
clients, and concurrent increments that must end exact.
"""
import threading
import time
import unittest

import redis

from kvdtest import RespError, RespReader, SharedKvdTestCase, cmd

EXECABORT = "EXECABORT Transaction discarded because of previous errors."


class TxCase(SharedKvdTestCase):
    def conn(self):
        """A raw connection: send(*args) -> reply."""
        s = self.srv.sock()
        self.addCleanup(s.close)
        rd = RespReader(s)

        def send(*args):
            s.sendall(cmd(*args))
            return rd.read()

        return send


class TestMultiExec(TxCase):
    def test_queued_replies_and_exec(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual("QUEUED", c("INCR", "a"))
        self.assertEqual("QUEUED", c("GET", "a"))
        self.assertEqual("QUEUED", c("SET", "b", "x", "GET"))
        self.assertEqual("QUEUED", c("MGET", "a", "b", "nope"))
        self.assertEqual("QUEUED", c("DEL", "a"))
        self.assertEqual("QUEUED", c("EXISTS", "a", "b"))
        self.assertEqual("QUEUED", c("PING"))
        # Nothing ran yet: another client does not see the writes.
        self.assertIsNone(self.r.get("a"))
        self.assertIsNone(self.r.get("b"))
        reply = c("EXEC")
        self.assertEqual(["OK", 2, b"2", None, [b"2", b"x", None], 1, 1, "PONG"], reply)
        self.assertIsNone(self.r.get("a"))
        self.assertEqual(b"x", self.r.get("b"))
        # The connection is out of MULTI again.
        self.assertEqual(b"x", c("GET", "b"))

    def test_reads_inside_exec_see_earlier_writes(self):
        self.r.set("old", "1")
        c = self.conn()
        c("MULTI")
        for args in (("SET", "new", "5"), ("GET", "new"), ("EXISTS", "new", "old"), ("INCR", "new"),
                     ("MGET", "new", "old"), ("STRLEN", "new"), ("EXPIRE", "new", "100"), ("TTL", "new"),
                     ("PERSIST", "new"), ("TTL", "new"), ("TYPE", "new"), ("APPEND", "new", "x"),
                     ("RENAME", "new", "moved"), ("GET", "moved"), ("EXISTS", "new"), ("GETDEL", "moved"),
                     ("GET", "moved"), ("FLUSHALL",), ("GET", "old")):
            self.assertEqual("QUEUED", c(*args), args)
        self.assertEqual(["OK", b"5", 2, 6, [b"6", b"1"], 1, 1, 100, 1, -1, "string", 2, "OK", b"6x", 0,
                          b"6x", None, "OK", None], c("EXEC"))
        self.assertEqual(0, self.r.dbsize())

    @unittest.skip("kvd bug (reported): inside EXEC, DBSIZE, KEYS, SCAN and INFO keyspace read the "
                   "store, not the transaction, so they miss the transaction's own earlier writes; "
                   "fixing it needs a transaction-aware scan and key count in the engine")
    def test_keyspace_reads_inside_exec_see_earlier_writes(self):
        self.r.set("old", "1")
        c = self.conn()
        c("MULTI")
        c("SET", "new", "1")
        c("DBSIZE")
        c("KEYS", "*")
        c("FLUSHALL")
        c("DBSIZE")
        c("KEYS", "*")
        reply = c("EXEC")
        self.assertEqual(2, reply[1])
        self.assertEqual({b"old", b"new"}, set(reply[2]))
        self.assertEqual([0, []], reply[4:6])

    @unittest.skip("kvd deviation (reported): connection commands (SELECT, CLIENT, CONFIG, COMMAND) "
                   "inside MULTI are refused with 'ERR Command not allowed inside a transaction' and "
                   "abort the EXEC; Redis queues and runs them")
    def test_select_inside_multi(self):
        c = self.conn()
        c("MULTI")
        self.assertEqual("QUEUED", c("SELECT", "0"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual(["OK", "OK"], c("EXEC"))

    def test_empty_exec(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual([], c("EXEC"))

    def _torn_pairs(self, read_pair, rounds=100):
        """Writes ta = tb = i in one MULTI per round while another client
        reads both keys with read_pair(client); returns the pairs read
        that differ."""
        stop = threading.Event()
        torn = []

        def reader():
            rc = self.srv.client()
            try:
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    a, b = read_pair(rc)
                    if a != b:
                        torn.append((a, b))
            finally:
                rc.close()

        t = threading.Thread(target=reader)
        t.start()
        try:
            p = self.r.pipeline(transaction=True)
            for i in range(rounds):
                p.set("ta", i)
                p.set("tb", i)
                p.execute()
        finally:
            stop.set()
            t.join(10)
        self.assertFalse(t.is_alive())
        return torn

    def test_exec_is_atomic_for_other_transactions(self):
        def read_pair(rc):
            p = rc.pipeline(transaction=True)
            p.get("ta").get("tb")
            return p.execute()

        self.assertEqual([], self._torn_pairs(read_pair)[:5])

    def test_mget_is_atomic(self):
        self.assertEqual([], self._torn_pairs(lambda rc: rc.mget("ta", "tb"))[:5])

    def test_redis_py_transaction_pipeline(self):
        with self.r.pipeline(transaction=True) as p:
            p.set("k", "1").incrby("k", 5).get("k").expire("k", 100).ttl("k")
            self.assertEqual([True, 6, b"6", True, 100], p.execute())

    def test_discard(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual("OK", c("DISCARD"))
        self.assertIsNone(self.r.get("a"))
        self.assertEqual("ERR EXEC without MULTI", c("EXEC"))
        self.assertEqual("ERR DISCARD without MULTI", c("DISCARD"))
        # A new MULTI after DISCARD starts empty.
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "b", "2"))
        self.assertEqual(["OK"], c("EXEC"))
        self.assertEqual(b"2", self.r.get("b"))

    def test_exec_without_multi(self):
        c = self.conn()
        self.assertEqual("ERR EXEC without MULTI", c("EXEC"))
        self.assertEqual("PONG", c("PING"))

    def test_nested_multi(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual("ERR MULTI calls can not be nested", c("MULTI"))
        # As in Redis, the nested MULTI does not abort the transaction.
        self.assertEqual(["OK"], c("EXEC"))
        self.assertEqual(b"1", self.r.get("a"))

    def test_watch_inside_multi(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("ERR WATCH inside MULTI is not allowed", c("WATCH", "a"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual(["OK"], c("EXEC"))

    def test_execabort_after_unknown_command(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual("ERR unknown command 'NoSuch', with args beginning with: 'x' ", c("NoSuch", "x"))
        self.assertEqual("QUEUED", c("SET", "b", "1"))
        self.assertEqual(EXECABORT, c("EXEC"))
        self.assertIsNone(self.r.get("a"))
        self.assertIsNone(self.r.get("b"))
        self.assertEqual("ERR EXEC without MULTI", c("EXEC"))

    def test_execabort_after_wrong_arity(self):
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "1"))
        self.assertEqual("ERR wrong number of arguments for 'get' command", c("GET"))
        self.assertEqual(EXECABORT, c("EXEC"))
        self.assertIsNone(self.r.get("a"))
        # redis-py raises the first queue-time error of an aborted EXEC.
        with self.assertRaisesRegex(redis.exceptions.ResponseError, "wrong number of arguments for 'get'"):
            with self.r.pipeline(transaction=True) as p:
                p.set("a", "1")
                p.execute_command("GET")
                p.execute()
        self.assertIsNone(self.r.get("a"))

    def test_runtime_error_does_not_stop_others(self):
        self.r.set("s", "not a number")
        c = self.conn()
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "a", "5"))
        self.assertEqual("QUEUED", c("INCR", "s"))
        self.assertEqual("QUEUED", c("INCR", "a"))
        self.assertEqual("QUEUED", c("RENAME", "nope", "x"))
        self.assertEqual("QUEUED", c("SET", "b", "after"))
        reply = c("EXEC")
        self.assertEqual(5, len(reply))
        self.assertEqual("OK", reply[0])
        self.assertIsInstance(reply[1], RespError)
        self.assertEqual("ERR value is not an integer or out of range", reply[1])
        self.assertEqual(6, reply[2])
        self.assertEqual("ERR no such key", reply[3])
        self.assertEqual("OK", reply[4])
        self.assertEqual(b"6", self.r.get("a"))
        self.assertEqual(b"after", self.r.get("b"))
        self.assertEqual(b"not a number", self.r.get("s"))


class TestWatch(TxCase):
    def test_watched_key_modified_by_other_client(self):
        self.r.set("w", "1")
        c = self.conn()
        self.assertEqual("OK", c("WATCH", "w"))
        self.assertEqual(b"1", c("GET", "w"))
        self.r.set("w", "2")  # another client
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "w", "from-tx"))
        self.assertEqual("QUEUED", c("SET", "other", "x"))
        self.assertIsNone(c("EXEC"))
        self.assertEqual(b"2", self.r.get("w"))
        self.assertIsNone(self.r.get("other"))
        # The watch ended with EXEC: the next transaction runs.
        self.assertEqual("OK", c("MULTI"))
        self.assertEqual("QUEUED", c("SET", "w", "3"))
        self.assertEqual(["OK"], c("EXEC"))

    def test_watched_key_created_deleted_or_expired(self):
        c = self.conn()
        # Absent when watched, created meanwhile.
        self.assertEqual("OK", c("WATCH", "new"))
        self.r.set("new", "x")
        c("MULTI")
        c("SET", "new", "tx")
        self.assertIsNone(c("EXEC"))
        self.assertEqual(b"x", self.r.get("new"))
        # Present when watched, deleted meanwhile.
        self.assertEqual("OK", c("WATCH", "new"))
        self.r.delete("new")
        c("MULTI")
        c("SET", "new", "tx")
        self.assertIsNone(c("EXEC"))
        self.assertIsNone(self.r.get("new"))
        # Same value written again still counts as a modification.
        self.r.set("same", "v")
        self.assertEqual("OK", c("WATCH", "same"))
        self.r.set("same", "v")
        c("MULTI")
        c("SET", "same", "tx")
        self.assertIsNone(c("EXEC"))
        self.assertEqual(b"v", self.r.get("same"))

    def test_watch_unmodified_key_execs(self):
        self.r.set("w", "1")
        c = self.conn()
        self.assertEqual("OK", c("WATCH", "w", "absent"))
        self.r.set("unrelated", "x")
        c("MULTI")
        c("INCR", "w")
        self.assertEqual([2], c("EXEC"))
        self.assertEqual(b"2", self.r.get("w"))

    def test_own_write_to_watched_key_aborts(self):
        # Redis: a change by the watching client itself also aborts.
        self.r.set("w", "1")
        c = self.conn()
        c("WATCH", "w")
        c("SET", "w", "2")
        c("MULTI")
        c("SET", "w", "3")
        self.assertIsNone(c("EXEC"))
        self.assertEqual(b"2", self.r.get("w"))

    def test_unwatch(self):
        self.r.set("w", "1")
        c = self.conn()
        self.assertEqual("OK", c("WATCH", "w"))
        self.assertEqual("OK", c("UNWATCH"))
        self.r.set("w", "2")
        c("MULTI")
        c("SET", "w", "tx")
        self.assertEqual(["OK"], c("EXEC"))
        self.assertEqual(b"tx", self.r.get("w"))
        self.assertEqual("OK", c("UNWATCH"))  # without WATCH: fine

    def test_discard_unwatches(self):
        self.r.set("w", "1")
        c = self.conn()
        c("WATCH", "w")
        c("MULTI")
        self.assertEqual("OK", c("DISCARD"))
        self.r.set("w", "2")
        c("MULTI")
        c("SET", "w", "tx")
        self.assertEqual(["OK"], c("EXEC"))

    def test_redis_py_watch_error(self):
        self.r.set("w", "1")
        with self.r.pipeline() as p:
            p.watch("w")
            self.assertEqual(b"1", p.get("w"))
            self.client().set("w", "changed")
            p.multi()
            p.set("w", "tx")
            with self.assertRaises(redis.exceptions.WatchError):
                p.execute()
        self.assertEqual(b"changed", self.r.get("w"))


class TestConcurrency(TxCase):
    def _run_threads(self, target, n, timeout):
        errors = []

        def wrap(i):
            try:
                target(i)
            except BaseException as e:  # reported by the main thread
                errors.append(repr(e))

        threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        self.assertFalse(any(t.is_alive() for t in threads), "worker threads did not finish in %d s" % timeout)
        self.assertEqual([], errors)

    def test_optimistic_lock_increments_are_exact(self):
        clients, per_client = 5, 30
        self.r.set("counter", 0)
        retries = [0] * clients

        def worker(i):
            c = self.srv.client()
            try:
                deadline = time.monotonic() + 60
                done = 0
                while done < per_client:
                    self.assertLess(time.monotonic(), deadline, "too slow")
                    with c.pipeline() as p:
                        try:
                            p.watch("counter")
                            v = int(p.get("counter"))
                            p.multi()
                            p.set("counter", v + 1)
                            p.execute()
                            done += 1
                        except redis.exceptions.WatchError:
                            retries[i] += 1
                            self.assertLess(retries[i], 20000, "endless retries")
            finally:
                c.close()

        self._run_threads(worker, clients, 90)
        self.assertEqual(clients * per_client, int(self.r.get("counter")))

    def test_concurrent_incr_is_exact(self):
        clients, per_client = 8, 100

        def worker(i):
            c = self.srv.client()
            try:
                # Half the clients pipeline, half send one at a time.
                if i % 2:
                    p = c.pipeline(transaction=False)
                    for _ in range(per_client):
                        p.incr("hits")
                    p.execute()
                else:
                    for _ in range(per_client):
                        c.incr("hits")
            finally:
                c.close()

        self._run_threads(worker, clients, 90)
        self.assertEqual(clients * per_client, int(self.r.get("hits")))

    def test_concurrent_multi_incr_pairs_stay_equal(self):
        clients, per_client = 4, 40

        def worker(i):
            c = self.srv.client()
            try:
                for _ in range(per_client):
                    with c.pipeline(transaction=True) as p:
                        p.incr("pa").incr("pb")
                        a, b = p.execute()
                        if a != b:
                            raise AssertionError("MULTI not isolated: %r %r" % (a, b))
            finally:
                c.close()

        self._run_threads(worker, clients, 90)
        self.assertEqual([b"160", b"160"], self.r.mget("pa", "pb"))


if __name__ == "__main__":
    unittest.main()
