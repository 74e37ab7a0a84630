"""The delivery agent against hostile SMTP servers (issue #3): replies
without a final line, overlong lines, NUL bytes and bare LF, a flood of
"250-" lines, a server that stalls. Each time the message is deferred (or
bounced for a 5xx) with a sensible reason, the delivery process that met
the server is still alive afterwards, and a normal delivery works.

Raw asyncio servers on 127.0.0.10-15 (one behaviour per address, all on
the port P = smtp_port), an aiosmtpd receiver on 127.0.0.16."""
import asyncio
import os
import re

import pytest

import postino_harness as h

SENDER = "s@sender.test"
GOOD_IP = "127.0.0.16"


def _greet_ehlo(greeting):
    return {"greet": greeting, "EHLO": b"250-mx.hostile.test\r\n250 8BITMIME\r\n"}


# behaviour per server: what to send on connect and per command verb; a
# value of None means: never answer (stall); "close" closes the connection.
SCENARIOS = {
    "nofinal": ("127.0.0.10", {"greet": b"220-mx.hostile.test first\r\n220-second\r\n",
                               "after_greet": "close"}),
    "long600": ("127.0.0.11", dict(_greet_ehlo(b"220 " + b"g" * 596 + b"\r\n"),
                                   RCPT=b"451 4.7.1 " + b"y" * 700 + b"\r\n")),
    "long3000": ("127.0.0.12", {"greet": b"220 " + b"x" * 3000 + b"\r\n"}),
    "nulbarelf": ("127.0.0.13", {"greet": b"220 mx\x00evil greeting\n",
                                 "EHLO": b"250-mx\x00.hostile.test\n250 8BITMIME\n",
                                 "MAIL": b"250 2.1.0 ok\x00\n",
                                 "RCPT": b"550 5.1.1 no\x00such user\n"}),
    "flood": ("127.0.0.14", {"greet": b"220 mx.hostile.test\r\n",
                             "EHLO": b"250-flood flood flood\r\n" * 50000}),
    "stall": ("127.0.0.15", {"greet": b"220 mx.hostile.test\r\n", "EHLO": None}),
}

pytestmark = pytest.mark.dns(
    [("a", "%s.hostile.test" % name, ip) for name, (ip, _) in SCENARIOS.items()] +
    [("a", "good.test", GOOD_IP)])


class HostileServer(h.AsyncServers):
    """Raw SMTP servers, scripted per listening address."""

    def __init__(self, port):
        super().__init__(port, SCENARIOS)
        self.conns = {}

    async def session(self, name, script, reader, writer):
        self.conns[name] = self.conns.get(name, 0) + 1
        try:
            writer.write(script["greet"])
            await writer.drain()
            if script.get("after_greet") == "close":
                return
            while True:
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line:
                    return
                verb = line.split(b" ")[0].split(b":")[0].strip().upper().decode(errors="replace")
                if verb == "QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    return
                if verb in script and script[verb] is None:
                    await asyncio.sleep(60)          # stall: never answer
                    return
                writer.write(script.get(verb, b"250 2.0.0 ok\r\n"))
                await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.CancelledError):
            return
        finally:
            writer.close()


@pytest.fixture
def hostile(workdir):
    ips = [ip for ip, _ in SCENARIOS.values()] + [GOOD_IP]
    port = h.free_port_all(ips)
    good = h.Sink([GOOD_IP], port=port).start()
    srv = HostileServer(port).start()
    yield srv, good, port
    srv.stop()
    good.stop()


def _line(p, rcpt, status, timeout=30):
    return p.wait_log(r"postino/smtp\[\d+\]: [0-9A-F]+: to=<%s>, .*status=%s"
                      % (re.escape(rcpt), status), timeout=timeout)[0]


def _pid(line):
    return int(re.search(r"postino/smtp\[(\d+)\]", line).group(1))


def _alive(pid):
    return os.path.exists("/proc/%d" % pid)


def _good_delivery(p, good, rcpt):
    qid = p.send(SENDER, rcpt)
    good.wait_to(rcpt)
    line = _line(p, rcpt, "sent")
    p.wait_removed(qid)
    return _pid(line)


# name -> (expected status, dsn, regex the reason must match)
EXPECT = {
    "nofinal": ("deferred", "4.4.2", r"lost connection with nofinal\.hostile\.test\[127\.0\.0\.10\] "
                                     r"while receiving the initial server greeting"),
    "long600": ("deferred", "4.7.1", r"host long600\.hostile\.test\[127\.0\.0\.11\] said: 451 4\.7\.1 "
                                     r"y{700} \(in reply to RCPT TO command\)"),
    "long3000": ("deferred", "4.5.0", r"conversation with long3000\.hostile\.test\[127\.0\.0\.12\] "
                                      r"failed: reply line too long while receiving the initial"),
    "nulbarelf": ("bounced", "5.1.1", r"host nulbarelf\.hostile\.test\[127\.0\.0\.13\] said: "
                                      r"550 5\.1\.1 no such user \(in reply to RCPT TO command\)"),
    "flood": ("deferred", "4.5.0", r"conversation with flood\.hostile\.test\[127\.0\.0\.14\] failed: "
                                   r"too many lines in reply while performing the EHLO handshake"),
    "stall": ("deferred", "4.4.2", r"conversation with stall\.hostile\.test\[127\.0\.0\.15\] timed out "
                                   r"while performing the EHLO handshake"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_hostile_server(postino_factory, hostile, name):
    srv, good, port = hostile
    p = postino_factory(main={"smtp_port": str(port), "smtp_helo_timeout": "2s",
                              "smtp_tls_security_level": "none"})
    before = p.pids(("delivery",)).get("delivery", [])
    first = _good_delivery(p, good, "before-%s@good.test" % name)
    status, dsn, reason = EXPECT[name]
    rcpt = "victim@%s.hostile.test" % name
    p.send(SENDER, rcpt)
    line = _line(p, rcpt, status)
    assert "dsn=%s," % dsn in line, line
    assert re.search(reason, line), line
    assert "\x00" not in line
    assert srv.conns.get(name), "the hostile server was never contacted"
    # The process that met the hostile server (and every earlier one) lives on.
    assert _alive(_pid(line)), "delivery process %d died" % _pid(line)
    for pid in set(before) | {first}:
        assert _alive(pid), "delivery process %d died" % pid
    _good_delivery(p, good, "after-%s@good.test" % name)
    bad = p.log_lines(r"panic|fatal|terminated|signal \d|exit status")
    assert not bad, "\n".join(bad)
