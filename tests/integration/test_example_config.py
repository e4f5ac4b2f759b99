"""The example config file kvd.conf at the top of the source tree: it is
what `kvd --print-example-config` prints (so it cannot disagree with the
settings table that also makes --help), and kvd started with it runs with
its defaults. Servers listen on 127.0.0.1 on free ports and are stopped by
tearDown."""
import os
import subprocess
import unittest

from kvdtest import KvdServer, KvdTestCase, kvd_bin

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(SRC, "kvd.conf")


class TestExampleConfig(KvdTestCase):
    def test_committed_file_is_what_kvd_prints(self):
        out = subprocess.run([kvd_bin(), "--print-example-config"], capture_output=True, timeout=30,
                             stdin=subprocess.DEVNULL)
        self.assertEqual(out.returncode, 0, out.stderr)
        with open(EXAMPLE, "rb") as f:
            committed = f.read()
        self.assertEqual(committed.decode(), out.stdout.decode(),
                         "kvd.conf is stale: regenerate it with `kvd --print-example-config > kvd.conf`")

    def test_kvd_started_with_it_has_the_defaults(self):
        plain = self.start_server()
        conf = KvdServer()
        conf.argv = lambda port=None: [kvd_bin(), EXAMPLE] + KvdServer.argv(conf, port)[1:]
        self._servers.append(conf)
        conf.start()
        a = self.client(plain).config_get("*")
        b = self.client(conf).config_get("*")
        for k in ("port", "dir", "logfile"):  # given as flags, one per server
            a.pop(k), b.pop(k)
        self.assertEqual(a, b)
        self.assertEqual(self.client(conf).info("server")["config_file"], EXAMPLE)


if __name__ == "__main__":
    unittest.main()
