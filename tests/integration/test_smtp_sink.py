"""Postfix's smtp-sink as the receiving server (the acceptance of the core
issue names it next to aiosmtpd): a burst of messages relayed to it over
reused, pipelined connections all arrive, each once, intact."""
import glob
import os
import shutil
import socket
import subprocess
import time

import pytest

import postino_harness as h

SMTP_SINK = "/usr/sbin/smtp-sink"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_sink():
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.fail("smtp-sink is missing (make deps installs postfix)")
    d = h.make_tmpdir("smtp-sink-")
    shutil.chown(d, "postino")
    port = free_port()
    # -u: drop to postino; -d: one file per transaction; 50 sessions at once.
    proc = subprocess.Popen([SMTP_SINK, "-u", "postino", "-d", os.path.join(d, "%H%M%S."),
                             "127.0.0.1:%d" % port, "50"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    h.wait_until(lambda: _open(port), timeout=10, what="smtp-sink listening")
    yield port, d
    proc.kill()
    proc.wait()
    shutil.rmtree(d, ignore_errors=True)


def _open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_burst_to_smtp_sink(postino_factory, smtp_sink):
    port, dump = smtp_sink
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % port})
    n = 60
    qids = []
    s = p.smtp()
    for i in range(n):
        qids.append(p.send("s@sender.test", "r%d@example.test" % i, conn=s,
                           body="message %d of the burst\r\n" % i))
    s.quit()
    for q in qids:
        p.wait_removed(q, timeout=30)
    files = glob.glob(os.path.join(dump, "*"))
    assert len(files) == n, len(files)
    seen = set()
    for f in files:
        with open(f, "rb") as fh:
            data = fh.read()
        for i in range(n):
            if b"message %d of the burst" % i in data:
                seen.add(i)
    assert seen == set(range(n))
    assert len(p.log_lines(r"status=sent")) == n
