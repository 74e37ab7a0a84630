"""A reload is routine: under load no client connection is reset or
refused, every acknowledged message is delivered, per-client limits keep
their counters across it, and each reload logs one line (issue 7, item 8).

Per-client limits are switched on for loopback clients
(smtpd_client_event_limit_exceptions empty), so every session goes
through anvil while the daemons are replaced."""
import collections
import signal
import re
import smtplib
import socket
import threading
import time

import postino_harness as h

SENDER = "s@sender.test"
CLIENTS = 8
RELOADS = 8
RELOAD_GAP = 0.5
RELOAD_LINE = r"master\[\d+\]: reload -- version"
# The lines every message makes on its way through (smtpd, qmgr, smtp).
MAIL_EVENT = (r"\]: (connect from|disconnect from) |\]: [0-9A-F]{17}: "
              r"(client=|message-id=|from=<.*\(queue active\)|to=<|removed)")


def _limits_on(sink, **extra):
    main = {"relayhost": "[127.0.0.1]:%d" % sink.port,
            "smtpd_client_event_limit_exceptions": "",
            "anvil_rate_time_unit": "3600s"}
    main.update({k: str(v) for k, v in extra.items()})
    return main


def _one_message(port, rcpt):
    """One connection, one message, QUIT. Returns the 250 text of DATA;
    raises on anything else (a reset, a 4xx/5xx, a lost connection)."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    try:
        code, msg = s.ehlo("load.test")
        if code != 250:
            raise smtplib.SMTPResponseException(code, msg)
        text, _ = h.Postino.make_message(SENDER, [rcpt])
        s.sendmail(SENDER, [rcpt], text.encode())
        code, msg = s.quit()
        if code != 221:
            raise smtplib.SMTPResponseException(code, msg)
    except BaseException:
        s.close()
        raise


class _Load:
    """CLIENTS threads, each sending one message per connection until told
    to stop; every outcome is recorded."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = []       # recipients whose message got 250
        self.errors = []      # (recipient, repr(exception))
        self.threads = [threading.Thread(target=self._run, args=(k,)) for k in range(CLIENTS)]

    def _run(self, k):
        n = 0
        while not self.stop.is_set():
            n += 1
            rcpt = "load-%d-%d@example.test" % (k, n)
            try:
                _one_message(self.port, rcpt)
            except (OSError, smtplib.SMTPException) as e:
                with self.lock:
                    self.errors.append((rcpt, repr(e)))
                continue
            with self.lock:
                self.acked.append(rcpt)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)


def test_reload_under_load_resets_nobody(postino_factory, sink):
    p = postino_factory(main=_limits_on(sink))
    with _Load(p.port) as load:
        h.wait_until(lambda: len(load.acked) >= 20, timeout=30, what="the load running")
        for _ in range(RELOADS):
            p.cli("reload", check=True)
            time.sleep(RELOAD_GAP)
        # Let the last daemons take over while the clients keep sending.
        before = len(load.acked)
        h.wait_until(lambda: len(load.acked) >= before + 20, timeout=30,
                     what="mail accepted after the last reload")
    assert not load.errors, "%d of %d connections failed across reloads, e.g. %s" % (
        len(load.errors), len(load.errors) + len(load.acked), load.errors[:5])
    # Every acknowledged message reaches the sink, once: the delivery agents
    # a reload retires finish their jobs, and the new queue manager does not
    # send what they are still sending.
    want = set(load.acked)
    h.wait_until(lambda: want <= {r for m in sink.received() for r in m.rcpts},
                 timeout=60, what="all %d acknowledged messages at the sink" % len(want))
    p.wait_queue_empty(timeout=30)
    seen = collections.Counter(r for m in sink.received() for r in m.rcpts)
    twice = sorted(r for r, n in seen.items() if n > 1)
    assert not twice, "%d messages delivered more than once, e.g. %s" % (len(twice), twice[:5])
    # One line per reload, and no daemon complains about it.
    assert len(p.log_lines(RELOAD_LINE)) == RELOADS, p.log_lines(RELOAD_LINE)
    assert not p.log_lines(r"anvil service .*(closed|not enforced)"), \
        p.log_lines(r"anvil service")[:5]
    lines = p.log().splitlines()
    first = next(k for k, ln in enumerate(lines) if re.search(RELOAD_LINE, ln))
    noise = [ln for ln in lines[first:] if not re.search(RELOAD_LINE + "|" + MAIL_EVENT, ln)]
    assert not noise, "a reload should log one line, not:\n" + "\n".join(noise[:10])


def _greeting(port):
    """Connect and read the greeting: (socket, first reply line)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    f = s.makefile("rb")
    line = f.readline()
    f.close()
    return s, line.decode(errors="replace").strip()


def _session(port):
    """An SMTP session, or None while the count limit still refuses us."""
    try:
        return smtplib.SMTP("127.0.0.1", port, timeout=30)
    except smtplib.SMTPConnectError:
        return None


def _reloaded(p, old_smtpds):
    """Reload and wait until fresh smtpd processes are running."""
    p.cli("reload", check=True)
    h.wait_until(lambda: {pid for pid, n in p.child_pids().items() if n == "smtpd"} - old_smtpds,
                 timeout=20, what="new smtpd processes after reload")


def _smtpds(p):
    return {pid for pid, n in p.child_pids().items() if n == "smtpd"}


def test_connection_rate_limit_holds_across_reload(postino_factory, sink):
    p = postino_factory(main=_limits_on(sink, smtpd_client_connection_rate_limit=3))
    # Use up the rate (start-up's readiness probe already took some of it).
    for _ in range(5):
        s, line = _greeting(p.port)
        s.close()
        if not line.startswith("220"):
            break
    assert line.startswith("421") and "too many connections" in line, line
    _reloaded(p, _smtpds(p))
    s, line = _greeting(p.port)
    s.close()
    assert line.startswith("421") and "too many connections" in line, \
        "the connection rate was forgotten by the reload: %r" % line
    assert not p.log_lines(r"anvil service"), p.log_lines(r"anvil service")


def test_open_session_survives_reload_and_still_counts(postino_factory, sink):
    p = postino_factory(main=_limits_on(sink, smtpd_client_connection_count_limit=1))
    conn = h.wait_until(lambda: _session(p.port), timeout=20,
                        what="a session once start-up's probe is counted out")
    conn.ehlo("held.test")
    old = _smtpds(p)
    _reloaded(p, old)
    # The session held open still counts: a second one is over the limit.
    s, line = _greeting(p.port)
    s.close()
    assert line.startswith("421") and "too many connections" in line, \
        "the open session was forgotten by the reload: %r" % line
    # The retiring smtpd still serves the session it had accepted ...
    qid = p.send(SENDER, "held@example.test", conn=conn)
    conn.quit()
    sink.wait_to("held@example.test")
    p.wait_removed(qid)
    # ... and leaves once it is done.
    h.wait_until(lambda: not (_smtpds(p) & old), timeout=20, what="the retired smtpd gone")
    assert len(p.log_lines(RELOAD_LINE)) == 1
    assert not p.log_lines(r"anvil service"), p.log_lines(r"anvil service")


def test_smtpd_reconnects_to_a_restarted_anvil_quietly(postino_factory, sink):
    """anvil stays across a reload, but it can still be restarted (a
    master.cf change to its row, a crash): smtpd, whose idle connection
    was closed, connects again with its next request, limits work from
    then on, and nobody warns that they are not enforced."""
    p = postino_factory(main=_limits_on(sink, smtpd_client_connection_rate_limit=1),
                        smtpd_procs=1)
    # The one smtpd has its anvil connection (start-up's probe used it).
    h.wait_until(lambda: p.log_lines(r"smtpd\[\d+\]: (lost connection after CONNECT|disconnect) "),
                 timeout=20, what="the probe's session done")
    old = [pid for pid, n in p.child_pids().items() if n == "anvil"]
    assert len(old) == 1
    p.kill("anvil", signal.SIGTERM)
    h.wait_until(lambda: [pid for pid, n in p.child_pids().items() if n == "anvil"
                          and pid not in old], timeout=20, what="a new anvil")
    s, first = _greeting(p.port)
    s.close()
    s, second = _greeting(p.port)
    s.close()
    assert first.startswith("220"), first
    assert second.startswith("421") and "too many connections" in second, \
        "the limit was not enforced right after anvil came back: %r" % second
    assert not p.log_lines(r"anvil service"), p.log_lines(r"anvil service")


def test_reload_restarts_anvil_when_its_row_changes(postino_factory, sink):
    """A changed master.cf row is the one reason to restart anvil on a
    reload: the new one runs with it, and the smtpd that had sessions on
    the old one neither warns nor drops them."""
    p = postino_factory(main=_limits_on(sink, smtpd_client_connection_rate_limit=100),
                        smtpd_procs=1)
    held = h.wait_until(lambda: _session(p.port), timeout=20, what="a session")
    held.ehlo("held.test")
    old = {pid for pid, n in p.child_pids().items() if n == "anvil"}
    p.master_extra.append("anvil unix - - n - 1 anvil -o anvil_rate_time_unit=1800s")
    p.write_config()
    p.cli("reload", check=True)
    h.wait_until(lambda: {pid for pid, n in p.child_pids().items() if n == "anvil"} - old,
                 timeout=20, what="a new anvil for the new master.cf row")
    assert not {pid for pid, n in p.child_pids().items() if n == "anvil"} & old
    qid = p.send(SENDER, "held-anvil@example.test", conn=held)
    held.quit()
    s, line = _greeting(p.port)
    s.close()
    assert line.startswith("220"), line
    sink.wait_to("held-anvil@example.test")
    p.wait_removed(qid)
    p.stop()
    assert p.log_lines(r"anvil\[\d+\]: statistics: max connection rate \d+/1800s"), \
        "the new anvil does not run with its new row"
    assert not p.log_lines(r"anvil service"), p.log_lines(r"anvil service")
    assert not p.log_lines(r": (warning|error): "), p.log_lines(r": (warning|error): ")
