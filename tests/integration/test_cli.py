"""The postino command against a running system: status exit codes, queue
list (with the deferral reason), show, flush, delete; and against a queue
manager that answers wrongly: the command says the reply was malformed,
uses nothing of it and fails."""
import os
import socket
import threading

import postino_harness as h

SENDER = "s@sender.test"


def test_status_exit_codes(postino_factory):
    p = postino_factory(start=False)
    assert p.cli("status").returncode != 0, "status must fail before start"
    p.start()
    assert p.cli("status").returncode == 0
    r = p.cli("stop")
    assert r.returncode == 0, r.stderr
    h.wait_until(lambda: not p.pids(), timeout=20, what="all daemons gone after stop")
    assert p.cli("status").returncode != 0, "status must fail after stop"
    p.started = False


def test_queue_list_flush_delete(postino_factory, sink):
    # Long back-off so that only `queue flush` can cause the next attempt.
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "minimal_backoff_time": "1h", "maximal_backoff_time": "1h"})
    sink.on_rcpt("grey@example.test", ["451 4.7.1 greylisted by the test sink"])
    sink.on_rcpt("doomed@example.test", forever="451 4.3.0 doomed stays deferred")
    q1 = p.send(SENDER, "grey@example.test")
    q2 = p.send(SENDER, "doomed@example.test")
    for q in (q1, q2):
        p.wait_log(r"%s: to=<.*status=deferred" % q)
    ids, out = p.queue_list()
    assert q1 in ids and q2 in ids, out
    entry = out[out.index(q1):].split("\n\n")[0]      # mailq-style entry of q1
    assert "greylisted by the test sink" in entry, out
    assert "grey@example.test" in out

    show = p.cli("queue", "show", q1, check=True).stdout
    assert "grey@example.test" in show and SENDER in show, show

    r = p.cli("queue", "delete", q2, check=True)
    h.wait_until(lambda: q2 not in p.queue_list()[0], timeout=10, what="%s deleted" % q2)
    assert q2 not in p.queue_files()

    p.cli("queue", "flush", check=True)
    sink.wait_to("grey@example.test", timeout=20)
    p.wait_removed(q1)
    ids, out = p.queue_list()
    assert not ids, out
    assert not sink.to("doomed@example.test")


class _FakeControl:
    """public/control answering every request with one scripted reply."""

    def __init__(self, spool, reply):
        os.makedirs(os.path.join(spool, "public"), exist_ok=True)
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(os.path.join(spool, "public", "control"))
        self.lsock.listen(4)
        self.reply = reply
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.lsock.accept()
            except OSError:
                return
            with conn:
                got = b""
                while b"\n\n" not in got:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    got += chunk
                conn.sendall(self.reply)

    def close(self):
        self.lsock.shutdown(socket.SHUT_RDWR)
        self.lsock.close()


def test_malformed_control_reply(postino_factory):
    p = postino_factory(start=False)
    cases = [
        (("queue", "stats"), b"incoming=1\ntotal=1\n\n", "no status"),
        (("queue", "flush"), b"status=ok\nno equals sign\n\n", "line without"),
        (("queue", "list"), b"state=active\nsize=10\n\n", "without a queue_id"),
    ]
    for args, reply, why in cases:
        fake = _FakeControl(p.spool, reply)
        try:
            r = p.cli(*args)
        finally:
            fake.close()
            os.unlink(os.path.join(p.spool, "public", "control"))
        assert r.returncode == 1, (args, r.returncode, r.stdout, r.stderr)
        assert "postino: malformed reply from the queue manager: " in r.stderr, (args, r.stderr)
        assert why in r.stderr, (args, r.stderr)
        assert "total" not in r.stdout and "Queue ID" not in r.stdout, (args, r.stdout)
