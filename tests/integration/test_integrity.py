"""
Integrity of a running kvd's data directory, with the real binaries:

- the directory lock cannot be sidestepped: with kvd running and LOCK
  deleted, a second kvd, kvcompact and kvfsck --repair on the same
  directory all refuse, and create no LOCK file.

Binaries: $KVD_BIN, $KVFSCK_BIN, $KVCOMPACT_BIN (CTest sets them), else the
build tree's. Every kvd listens on 127.0.0.1 on a free port and is stopped
by tearDown.
"""
import os
import subprocess
import unittest

from kvdtest import SRC, KvdServer, KvdTestCase, kvd_bin, _env


def tool_bin(env, name):
    b = os.environ.get(env) or os.path.join(SRC, "build", "fsck", name)
    if not os.path.exists(b):
        raise unittest.SkipTest("%s not found at %s (set %s)" % (name, b, env))
    return b


class TestDirectoryLock(KvdTestCase):

    def test_deleting_lock_does_not_let_a_second_owner_in(self):
        srv = self.start_server()
        r = self.client(srv)
        r.set("k", "v")
        lock = os.path.join(srv.dir, "LOCK")
        self.assertTrue(os.path.exists(lock))
        os.unlink(lock)

        # A second kvd on the same directory (another port) refuses.
        second = KvdServer(datadir=srv.dir)
        self._servers.append(second)
        second.start(wait=False)
        rc = second.wait_exit(timeout=20)
        self.assertNotEqual(0, rc)
        out = second.read_log() + second.read_stderr()
        self.assertIn("data directory is in use", out)

        # A repairing kvfsck refuses (exit 8) and changes nothing.
        p = subprocess.run([tool_bin("KVFSCK_BIN", "kvfsck"), "--repair", "--yes", srv.dir],
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=_env(), timeout=60, text=True)
        self.assertEqual(8, p.returncode, p.stdout + p.stderr)
        self.assertIn("is in use", p.stderr)

        # kvcompact refuses too.
        p = subprocess.run([tool_bin("KVCOMPACT_BIN", "kvcompact"), srv.dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env(), timeout=60, text=True)
        self.assertEqual(1, p.returncode, p.stdout + p.stderr)
        self.assertIn("in use by another process", p.stderr)

        # None of them created a LOCK file; the first kvd serves on.
        self.assertFalse(os.path.exists(lock))
        self.assertEqual(b"v", r.get("k"))
        r.set("k2", "v2")
        self.assertEqual(0, srv.stop())

        # Once it has stopped, the directory opens again (LOCK recreated).
        srv.start()
        r = self.client(srv)
        self.assertEqual(b"v2", r.get("k2"))
        self.assertTrue(os.path.exists(lock))


if __name__ == "__main__":
    unittest.main()
