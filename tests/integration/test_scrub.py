"""
The background scrub in a running kvd: SCRUB finds a byte flipped on disk
inside a sealed segment that no client has read, INFO and the log name the
file and the offset (and the log the kvfsck command), a pass runs after
start, CONFIG GET/SET and the command line know scrub-interval and
scrub-rate, and a pass reads no faster than scrub-rate.
"""
import os
import struct
import subprocess
import time
import unittest

import redis

from kvdtest import KvdTestCase, kvd_bin, wait_until

SEG_HEADER = 32
REC_HEADER = 44


def seg_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".seg"))


REC_PUT = 1


def records(path):
    """(offset, length) of each put of a segment file, walking the length
    fields (the file is known to be clean); other records (tombstones,
    batches, group-commit marks, the trailer) are stepped over."""
    with open(path, "rb") as f:
        data = f.read()
    out, off = [], SEG_HEADER
    while off + REC_HEADER <= len(data):
        (length,) = struct.unpack_from("<I", data, off + 8)
        if length < REC_HEADER or off + length > len(data):
            break
        if data[off + 12] == REC_PUT:
            out.append((off, length))
        off += length
    return out


def flip(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))


def info(c):
    return c.info("persistence")


def wait_pass(c, passes, timeout):
    """Waits (bounded) until scrub_passes reaches passes with no pass
    running; returns the last INFO."""
    last = {}

    def done():
        last.update(info(c))
        return last["scrub_passes"] >= passes and last["scrub_in_progress"] == 0

    ok = wait_until(done, timeout=timeout, interval=0.05)
    if not ok:
        raise AssertionError("scrub pass %d not done in %.0f s: %r" % (passes, timeout, last))
    return dict(last)


class TestScrub(KvdTestCase):
    def fill(self, c, n, size):
        # Small pipelines: a segment is sealed between group commits.
        p = c.pipeline(transaction=False)
        for i in range(n):
            p.set(b"key:%d" % i, (b"%05d-" % i) * (size // 6) + b"x" * (size % 6))
            if i % 20 == 19:
                p.execute()
        p.execute()

    def test_scrub_finds_a_flipped_byte_in_a_sealed_segment_and_names_it(self):
        srv = self.start_server(["--segment-size", "16kb", "--scrub-interval", "0", "--scrub-rate", "1gb"])
        c = self.client(srv)
        i = info(c)
        for k in ("scrub_in_progress", "scrub_bytes_checked", "scrub_last_completed", "scrub_passes",
                  "scrub_errors", "scrub_last_error"):
            self.assertIn(k, i)
        self.assertEqual(i["scrub_passes"], 0)  # interval 0: no pass after start
        self.fill(c, 600, 200)
        segs = seg_files(srv.dir)
        self.assertGreaterEqual(len(segs), 4)

        # A clean pass first: nothing found.
        self.assertEqual(c.execute_command("SCRUB"), b"Background scrub started")
        i = wait_pass(c, 1, 30)
        self.assertEqual(i["scrub_errors"], 0)
        self.assertEqual(i["scrub_last_error"], "")
        self.assertGreater(i["scrub_bytes_checked"], 3 * 16384)
        self.assertGreater(i["scrub_last_completed"], time.time() - 120)

        victim = segs[1]  # sealed: not the newest
        path = os.path.join(srv.dir, victim)
        recs = records(path)
        self.assertGreaterEqual(len(recs), 3)
        off, length = recs[len(recs) // 2]
        self.assertGreater(length, REC_HEADER + 100)
        at = off + REC_HEADER + (length - REC_HEADER) // 2  # in the key or value
        flip(path, at)

        self.assertEqual(c.execute_command("SCRUB"), b"Background scrub started")
        i = wait_pass(c, 2, 30)
        self.assertGreaterEqual(i["scrub_errors"], 1)
        self.assertIn(victim, i["scrub_last_error"])
        self.assertIn("offset %d" % off, i["scrub_last_error"])
        log = srv.read_log()
        line = [l for l in log.splitlines() if "scrub: damage in segment file" in l]
        self.assertEqual(len(line), 1, log[-3000:])
        self.assertIn("%s at offset %d " % (path, off), line[0])
        self.assertIn("kvfsck %s" % srv.dir, line[0])

        # Logged once: a third pass finds the same damage and stays quiet.
        c.execute_command("SCRUB")
        i = wait_pass(c, 3, 30)
        self.assertEqual(i["scrub_errors"], 1)
        self.assertEqual(srv.read_log().count("scrub: damage in segment file"), 1)

    def test_scrub_is_refused_while_one_runs_and_config_changes_its_rate(self):
        srv = self.start_server(["--segment-size", "16kb", "--scrub-interval", "0", "--scrub-rate", "64kb"])
        c = self.client(srv)
        self.fill(c, 600, 200)
        self.assertEqual(c.config_get("scrub-interval"), {"scrub-interval": "0"})
        self.assertEqual(c.config_get("scrub-rate"), {"scrub-rate": "65536"})
        self.assertEqual(c.execute_command("SCRUB"), b"Background scrub started")
        with self.assertRaises(redis.ResponseError) as e:
            c.execute_command("SCRUB")
        self.assertIn("already in progress", str(e.exception))
        self.assertEqual(info(c)["scrub_in_progress"], 1)
        # Faster: the pass in progress finishes at the new rate.
        c.config_set("scrub-rate", "1gb")
        self.assertEqual(c.config_get("scrub-rate"), {"scrub-rate": str(1 << 30)})
        wait_pass(c, 1, 30)
        with self.assertRaises(redis.ResponseError):
            c.config_set("scrub-rate", "1k")  # under the 64kb floor
        with self.assertRaises(redis.ResponseError):
            c.config_set("scrub-interval", "-1")
        c.config_set("scrub-interval", "3600")
        self.assertEqual(c.config_get("scrub-interval"), {"scrub-interval": "3600"})

    def test_a_pass_runs_after_start(self):
        srv = self.start_server(["--segment-size", "16kb"])
        c = self.client(srv)
        self.fill(c, 300, 200)
        srv.restart(["--segment-size", "16kb"])  # the default schedule: a pass after start
        c = self.client(srv)
        i = wait_pass(c, 1, 30)
        self.assertEqual(i["scrub_errors"], 0)
        self.assertGreater(i["scrub_bytes_checked"], 0)
        self.assertIn("scrub: pass done", srv.read_log())

    def test_the_scrub_thread_is_named_and_runs_at_background_priority(self):
        srv = self.start_server(["--scrub-interval", "0"])

        def scrub_nices():
            task = "/proc/%d/task" % srv.proc.pid
            out = []
            for tid in os.listdir(task):
                try:
                    with open(os.path.join(task, tid, "comm")) as f:
                        name = f.read().strip()
                    with open(os.path.join(task, tid, "stat")) as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                except FileNotFoundError:
                    continue  # a thread that just ended
                if name == "kvd-scrub":
                    out.append(int(fields[16]))  # field 19: nice
            return out

        # The thread lives for the whole run, asleep between passes; it
        # lowers its own priority first thing (nice 10, as compaction).
        self.assertTrue(wait_until(lambda: scrub_nices() == [10], timeout=10), scrub_nices())

    def test_the_rate_limit_is_honoured(self):
        rate = 1 << 20
        srv = self.start_server(["--segment-size", "256kb", "--scrub-interval", "0", "--scrub-rate", "1mb"])
        c = self.client(srv)
        self.fill(c, 1100, 4000)  # about 4.3 MiB of records
        self.assertTrue(wait_until(lambda: info(c)["hint_files_pending"] == 0, timeout=30))
        segs = seg_files(srv.dir)[:-1]
        sealed = sum(os.path.getsize(os.path.join(srv.dir, n)) for n in segs)
        sealed += sum(os.path.getsize(os.path.join(srv.dir, n[:-4] + ".hint")) for n in segs
                      if os.path.exists(os.path.join(srv.dir, n[:-4] + ".hint")))
        self.assertGreater(sealed, 3.5 * rate)
        t0 = time.monotonic()
        self.assertEqual(c.execute_command("SCRUB"), b"Background scrub started")
        i = wait_pass(c, 1, 60)
        took = time.monotonic() - t0
        self.assertEqual(i["scrub_errors"], 0)
        self.assertGreaterEqual(i["scrub_bytes_checked"], sealed)
        # A lower bound only: the limit must hold; how much slower it is
        # on a loaded machine is not this test's business.
        self.assertGreaterEqual(took, 0.95 * sealed / rate, "read %d bytes in %.2f s" % (sealed, took))
        self.assertGreaterEqual(took, 3.0)


class TestScrubHelp(unittest.TestCase):
    def test_help_lists_the_scrub_settings(self):
        out = subprocess.run([kvd_bin(), "--help"], capture_output=True, text=True, timeout=10).stdout
        self.assertIn("--scrub-interval SECONDS  (default: 86400)", out)
        self.assertIn("--scrub-rate BYTES  (default: 16mb)", out)


if __name__ == "__main__":
    unittest.main()
