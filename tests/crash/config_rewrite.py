"""
CONFIG REWRITE under kill -9, power loss and I/O errors, on the REAL kvd
binary (docs/operations.md, "The config file").

kvd runs under the iotrace shim (iotrace.c) watching the directory of its
config file only (its data directory and log are elsewhere), so the trace
holds exactly the rewrite's steps: open the old file, create the
temporary file, write it, fsync it, rename it over the file, open and
fsync the directory. One traced rewrite gives the old and the new text
and the steps, which must come in that order (the temporary file is
synced before the rename, the directory after it).

- kill -9: for every step, a fresh run with KV_IOTRACE_KILL_AT set to
  that step's event, so kvd dies right after the step took effect. The
  config file must then be the old text whole (before the rename) or the
  new one whole (from the rename on), kvd must start on it with the
  matching setting, and a new CONFIG REWRITE must work (a temporary file
  left behind is allowed, as Redis leaves it too).
- Power loss: the trace replayed into iotrace_lib's file-system model;
  before every step, and after the last, every crash state (unsynced
  data dropped, kept or torn; directory operations since the last
  directory fsync dropped, kept, or applied up to a point) must hold the
  old or the new file whole, and after the last step (CONFIG REWRITE has
  answered OK) only the new one. A negative control replays the same
  trace without the temporary file's fsync and must find a broken file.
- I/O errors (KV_IOTRACE_FAIL): a failed create, write, short write,
  fsync or rename answers Redis's "ERR Rewriting config file: <error>"
  and leaves the old file and nothing else; a failed directory fsync
  answers the error with the new file in place (documented).

Every kvd listens on 127.0.0.1 on a free port and is stopped (or killed)
by the test.

    /usr/bin/python3 -m unittest -v config_rewrite        (from tests/crash)
"""
import os
import random
import re
import shutil
import tempfile
import unittest

import redis

from iotrace_lib import FsModel, TracedKvd, kvd_bin, log, materialise, parse_trace, shim_env, state_digest, trace_size
from kvdtest import KvdServer, free_port

OLD = "# kept: a comment of the operator's\nmaxclients 100\n\n# the scrub\nscrub-rate 1mb\n"


class ConfKvd(TracedKvd):
    """kvd CONFIG-FILE --bind ... --port ...: the file first, as kvd wants."""

    def __init__(self, conf, extra=(), **kw):
        super().__init__(extra, **kw)
        self.conf = conf

    def argv(self, port=None):
        return [kvd_bin(), self.conf] + super().argv(port)[1:]


def tmpname(name):
    """A temporary file's name with its random suffix made constant."""
    return re.sub(r"^kvd\.conf\.[A-Za-z0-9]{6}$", "kvd.conf.XXXXXX", name)


def changes(c):
    """What every run changes before its CONFIG REWRITE."""
    c.config_set("maxclients", "200")
    c.config_set("requirepass", "new pass")
    c.config_set("hz", "25")


class TestConfigRewriteCrash(unittest.TestCase):
    def setUp(self):
        self.work = tempfile.mkdtemp(prefix="kvd-confcrash-")
        self.confdir = os.path.join(self.work, "conf")
        self.conf = os.path.join(self.confdir, "kvd.conf")
        self.port = free_port()  # the same in every run, so every run writes the same new text
        self.servers = []
        self.runs = 0

    def tearDown(self):
        for s in self.servers:
            s.cleanup()
        bad = [s for s in self.servers if s.sanitizer_reports()]
        shutil.rmtree(self.work, ignore_errors=True)
        if bad:
            self.fail("sanitizer report in kvd output:\n" + bad[0].read_log()[-4000:])

    def reset(self):
        """The config directory back to the old file alone."""
        shutil.rmtree(self.confdir, ignore_errors=True)
        os.mkdir(self.confdir)
        with open(self.conf, "w") as f:
            f.write(OLD)

    def start(self, env=None, shim=True):
        """kvd on the config file, data and log in the work directory."""
        self.runs += 1
        trace = os.path.join(self.work, "trace.%d" % self.runs)
        env_extra = dict(shim_env(self.confdir, trace=trace), **(env or {})) if shim else {}
        s = ConfKvd(self.conf, env_extra=env_extra, datadir=os.path.join(self.work, "data"), workdir=self.work)
        self.servers.append(s)
        s.start(port=self.port)
        s.trace = trace
        return s

    def read(self):
        with open(self.conf) as f:
            return f.read()

    def traced_rewrite(self):
        """One rewrite under the shim: (old text, new text, the rewrite's
        events, the old file's inode number)."""
        self.reset()
        ino = os.stat(self.conf).st_ino
        s = self.start()
        c = s.client(password=None)
        changes(c)
        c = s.client(password="new pass")
        pos = trace_size(s.trace)
        self.assertTrue(c.config_rewrite())
        self.assertEqual(s.stop(), 0)
        new = self.read()
        events = [e for e in parse_trace(s.trace) if e.start >= pos]
        self.assertNotEqual(new, OLD)
        self.assertTrue(new.startswith(OLD.split("\n")[0] + "\nmaxclients 200\n"), new)
        return new, events, ino

    def steps(self, events):
        """The rewrite's steps, checked to come in the durable order."""
        kinds = []
        for e in events:
            if e.op == "open" and e.f[1] == "1":
                kinds.append("create")
            elif e.op == "open":
                kinds.append("open-dir" if e.f[3] == "1" else "open-old")
            elif e.op in ("fsync", "fdatasync"):
                kinds.append("dirsync" if e.f[1] == "1" else "filesync")
            else:
                kinds.append(e.op)
        squeezed = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1] or k != "write"]
        self.assertEqual(squeezed, ["open-old", "create", "write", "filesync", "rename", "open-dir", "dirsync"],
                         "the rewrite's steps: %r" % events)
        return kinds

    def test_kill_9_after_every_step_leaves_the_old_or_the_new_file(self):
        new, events, _ = self.traced_rewrite()
        kinds = self.steps(events)
        renamed_at = kinds.index("rename")
        for i, e in enumerate(events):
            self.reset()
            s = self.start({"KV_IOTRACE_KILL_AT": str(e.seq)})
            changes(s.client())
            c = s.client(password="new pass")
            with self.assertRaises(redis.exceptions.ConnectionError):
                c.config_rewrite()
            s.wait_exit()
            self.assertEqual(s.returncode, -9, "kvd was not killed at %r" % e)
            last = parse_trace(s.trace)[-1]
            self.assertEqual((last.seq, last.op, tmpname(last.f[-1])), (e.seq, e.op, tmpname(e.f[-1])),
                             "killed elsewhere")
            text = self.read()
            want = new if i >= renamed_at else OLD
            self.assertEqual(text, want, "after a kill -9 right after step %d (%s, %r)" % (i, kinds[i], e))
            extra = sorted(set(os.listdir(self.confdir)) - {"kvd.conf"})
            self.assertLessEqual(len(extra), 1, extra)
            self.assertTrue(all(x.startswith("kvd.conf.") for x in extra), extra)
            # kvd starts on what the kill left, with the matching values,
            # and rewrites it again.
            s2 = self.start(shim=False)
            c2 = s2.client(password="new pass" if i >= renamed_at else None)
            self.assertEqual(c2.config_get("maxclients"), {"maxclients": "200" if i >= renamed_at else "100"})
            changes(c2)
            c2 = s2.client(password="new pass")
            self.assertTrue(c2.config_rewrite())
            # Over the new file, Redis's split of its final newline adds
            # one empty last line (kvd_config_rewrite.c).
            self.assertEqual(self.read(), new + "\n" if i >= renamed_at else new)
            self.assertEqual(s2.stop(), 0)
            log("kill after step %d (%s): %s file whole, %d leftover temporary file(s)" %
                (i, kinds[i], "new" if i >= renamed_at else "old", len(extra)))

    def crash_states(self, events, ino, new, allow_bad=False, seeds=4):
        """Every power-cut state before each event and after the last.
        Returns (states checked, distinct states, bad states)."""
        model = FsModel()
        model.preload({"kvd.conf": OLD.encode()}, {"kvd.conf": ino})
        checked, seen, bad = 0, set(), []
        rng = random.Random(1)
        for i in range(len(events) + 1):
            snap = model.snapshot(i, events[i] if i < len(events) else None)
            for mode in ("drop", "keep", "torn"):
                for dirmode in ("drop", "keep", "prefix"):
                    for _ in range(seeds if "torn" in (mode,) or dirmode == "prefix" else 1):
                        files, desc = materialise(snap, mode, dirmode, rng)
                        checked += 1
                        seen.add(state_digest(files))
                        got = files.get("kvd.conf")
                        ok = got in (OLD.encode(), new.encode()) and (i < len(events) or got == new.encode())
                        if not ok:
                            bad.append((i, desc, got))
                            if not allow_bad:
                                self.fail("power cut before event %d of %d (%s): kvd.conf is %r" %
                                          (i, len(events), desc, got if got is None else got[:80]))
            if i < len(events):
                model.apply(events[i])
        return checked, len(seen), bad

    def test_power_cut_before_every_step_leaves_the_old_or_the_new_file(self):
        new, events, ino = self.traced_rewrite()
        self.steps(events)
        checked, distinct, _ = self.crash_states(events, ino, new)
        log("power cut: %d crash states (%d distinct) over %d events, each the old or the new file whole, "
            "the new one once CONFIG REWRITE answered" % (checked, distinct, len(events)))
        # Negative control: without the temporary file's fsync a power cut
        # after the rename can leave an empty or partial file, and the
        # check above must see it.
        unsynced = [e for e in events if not (e.op in ("fsync", "fdatasync") and e.f[1] == "0")]
        _, _, bad = self.crash_states(unsynced, ino, new, allow_bad=True)
        self.assertTrue(bad, "the check misses a rewrite that does not fsync its temporary file")
        log("negative control (no fsync of the temporary file): %d bad states found, e.g. %s" %
            (len(bad), bad[0][1]))

    def test_failed_steps_answer_the_error_and_keep_the_old_file(self):
        new, _, _ = self.traced_rewrite()
        for spec, why in [("create:1:ENOSPC", "No space left on device"), ("write:1:EIO", "Input/output error"),
                          ("write:1:ENOSPC:10", "No space left on device"), ("fsync:1:EIO", "Input/output error"),
                          ("rename:1:EROFS", "Read-only file system")]:
            self.reset()
            s = self.start({"KV_IOTRACE_FAIL": spec})
            logged = len(s.read_log())  # the log file is shared by the runs
            changes(s.client())
            c = s.client(password="new pass")
            with self.assertRaises(redis.exceptions.ResponseError) as err:
                c.config_rewrite()
            self.assertEqual(str(err.exception), "Rewriting config file: " + why, spec)
            self.assertEqual(self.read(), OLD, spec)
            self.assertEqual(os.listdir(self.confdir), ["kvd.conf"], spec)
            self.assertIn("CONFIG REWRITE failed: " + why, s.read_log()[logged:])
            self.assertEqual(s.stop(), 0)
        # The directory's fsync fails after the rename: the error is
        # answered, and the file is already the new one.
        self.reset()
        s = self.start({"KV_IOTRACE_FAIL": "dirsync:1:EIO"})
        changes(s.client())
        with self.assertRaises(redis.exceptions.ResponseError) as err:
            s.client(password="new pass").config_rewrite()
        self.assertEqual(str(err.exception), "Rewriting config file: Input/output error")
        self.assertEqual(self.read(), new)
        self.assertEqual(os.listdir(self.confdir), ["kvd.conf"])
        self.assertEqual(s.stop(), 0)


if __name__ == "__main__":
    unittest.main()
