"""
Hint files in a running kvd: every sealed segment gets one in the
background, the next start loads those segments from them (INFO says how
many) with exactly the same keys, values and TTLs, a corrupted hint file
is rejected and the segment scanned instead (and the hint written again),
and `--hint-files no` neither reads nor writes them.
"""
import os
import unittest

from kvdtest import KvdTestCase, wait_until

SEG_SIZE = "16kb"


def hint_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".hint"))


def seg_files(d):
    return sorted(n for n in os.listdir(d) if n.endswith(".seg"))


def info(c):
    return c.info("persistence")


def snapshot(c):
    """Every key with its value and TTL state (-1 none, else > 0)."""
    out = {}
    for k in c.scan_iter(count=500):
        ttl = c.pttl(k)
        out[k] = (c.get(k), -1 if ttl == -1 else ttl > 0)
    return out


class TestHints(KvdTestCase):
    def fill(self, c):
        # Small pipelines: a segment is sealed between group commits, and
        # one big pipeline would be one group.
        p = c.pipeline(transaction=False)
        for i in range(1500):
            if i % 40 == 39:
                p.execute()
            p.set(b"key:%d" % (i % 600), b"v%d-" % i + b"x" * (i % 90))
            if i % 10 == 3:
                p.delete(b"key:%d" % ((i * 7) % 600))
            if i % 50 == 7:
                p.set(b"ttl:%d" % i, b"t", ex=100000)
            if i % 97 == 1:
                p.mset({b"m:%d" % i: b"a", b"key:%d" % (i % 600): b"b"})
        p.execute()

    def wait_hinted(self, c):
        self.assertTrue(wait_until(lambda: info(c)["hint_files_pending"] == 0, timeout=20),
                        "hint files still pending: %r" % info(c))

    def test_hints_written_then_used_at_start_and_a_bad_one_falls_back_to_a_scan(self):
        srv = self.start_server(["--segment-size", SEG_SIZE])
        c = self.client(srv)
        self.fill(c)
        self.wait_hinted(c)
        i = info(c)
        sealed = i["segments"] - 1
        self.assertGreaterEqual(sealed, 5)
        self.assertEqual(i["hint_files"], sealed)
        self.assertEqual(len(hint_files(srv.dir)), sealed)
        want = snapshot(c)
        self.assertGreater(len(want), 500)

        # A clean restart loads every sealed segment from its hint.
        srv.restart()
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_used"], i["recovery_segments"] - 1)
        self.assertEqual(i["recovery_hints_rejected"], 0)
        self.assertEqual(i["recovery_hints_written"], 0)
        self.assertEqual(snapshot(c), want)
        self.assertIn("loaded from hint files", srv.read_log())

        # Flip one byte in the middle of one hint file: rejected, that
        # segment scanned, the same data, and the hint written again.
        self.assertEqual(srv.stop(), 0)
        h = os.path.join(srv.dir, hint_files(srv.dir)[2])
        with open(h, "rb") as f:
            orig = f.read()
        bad = bytearray(orig)
        bad[len(bad) // 2] ^= 0x10
        with open(h, "wb") as f:
            f.write(bad)
        srv.start()
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_rejected"], 1)
        self.assertEqual(i["recovery_hints_used"], i["recovery_segments"] - 2)
        self.assertEqual(i["recovery_hints_written"], 1)
        self.assertEqual(snapshot(c), want)
        with open(h, "rb") as f:
            self.assertEqual(f.read(), orig)

        # A hint of another segment put in its place: stale or wrong id,
        # never used.
        self.assertEqual(srv.stop(), 0)
        names = hint_files(srv.dir)
        with open(os.path.join(srv.dir, names[0]), "rb") as f:
            other = f.read()
        with open(os.path.join(srv.dir, names[1]), "wb") as f:
            f.write(other)
        srv.start()
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_rejected"], 1)
        self.assertEqual(snapshot(c), want)

    def test_hint_files_no_neither_reads_nor_writes_them(self):
        srv = self.start_server(["--segment-size", SEG_SIZE, "--hint-files", "no"])
        c = self.client(srv)
        self.fill(c)
        i = info(c)
        self.assertGreaterEqual(i["segments"], 5)
        self.assertEqual(i["hint_files"], 0)
        self.assertEqual(i["hint_files_pending"], 0)
        want = snapshot(c)
        srv.restart()
        c = self.client(srv)
        self.assertEqual(hint_files(srv.dir), [])
        self.assertEqual(info(c)["recovery_hints_used"], 0)
        self.assertEqual(snapshot(c), want)
        # Turned on: the next start scans, writes them, and the one after
        # uses them.
        srv.restart(["--segment-size", SEG_SIZE])
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_written"], i["recovery_segments"] - 1)
        self.assertEqual(len(hint_files(srv.dir)), i["recovery_segments"] - 1)
        srv.restart()
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_used"], i["recovery_segments"] - 1)
        self.assertEqual(snapshot(c), want)

    def test_compaction_leaves_one_current_hint_per_sealed_segment(self):
        srv = self.start_server(["--segment-size", SEG_SIZE, "--compact-dead-ratio", "0"])
        c = self.client(srv)
        self.fill(c)
        self.fill(c)  # twice: most of the log is dead
        self.wait_hinted(c)
        want = snapshot(c)
        self.assertTrue(c.execute_command("COMPACT"))
        self.assertTrue(wait_until(lambda: info(c)["compaction_in_progress"] == 0 and info(c)["compactions"] >= 1,
                                   timeout=30))
        self.wait_hinted(c)
        i = info(c)
        segs = seg_files(srv.dir)
        self.assertEqual(len(segs), i["segments"])
        # Exactly the sealed segments have a hint: none left of the inputs.
        self.assertEqual(hint_files(srv.dir), [s[:-4] + ".hint" for s in segs[:-1]])
        srv.restart()
        c = self.client(srv)
        i = info(c)
        self.assertEqual(i["recovery_hints_used"], i["recovery_segments"] - 1)
        self.assertEqual(i["recovery_hints_rejected"], 0)
        self.assertEqual(snapshot(c), want)


if __name__ == "__main__":
    unittest.main()
