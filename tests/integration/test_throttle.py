"""Adaptive throttling (issue #9): a simulated provider that answers Gmail's
"421 4.7.28 ... unusual rate" once a client sends faster than it allows,
and postino with and without the shaping rule for it.

The provider is a raw asyncio SMTP server on 127.0.0.61 (MX of
gmail.test) with a token bucket: RATE messages a second, BURST at once.
A RCPT beyond it gets the 421 (multi-line, as Gmail sends it) and the
connection is closed. The same run of messages is sent twice, by a fresh
postino each time: without a rule postino retries at full speed and keeps
running into the limit; with `rate=N/s ... dsn=4.7.28` it slows the site
down after the first 421s. The test counts the 421s at the receiver and
wants at least ten times fewer with the rule, then sees the site come back
(log line, `postino site list`) once the rule's duration is over."""
import asyncio
import os
import re
import threading
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"
MX_IP = "127.0.0.61"
# The provider: 10 messages a second, 10 at once.
RATE, BURST = 10.0, 10
# The run: this many messages, all queued at once.
MESSAGES = 60
# The rule: half the provider's rate, for long enough to cover the run.
RULE_RATE, RULE_SECS = 5, 20
REPLY_42128 = (b"421-4.7.28 Our system has detected an unusual rate of unsolicited mail\r\n"
               b"421-4.7.28 originating from your IP address. To protect our users from\r\n"
               b"421 4.7.28 spam, mail sent from your IP address has been temporarily rate limited. - gsmtp\r\n")

pytestmark = pytest.mark.dns([("mx", "gmail.test", "mx.gmail.test", 10),
                              ("a", "mx.gmail.test", MX_IP)])


class RateLimitedMX(h.AsyncServers):
    """An ESMTP receiver with a token bucket per server (not per client):
    a RCPT that finds no token gets 421 4.7.28 and the connection closes.
    Counts messages accepted (250 after DATA) and 421s given."""

    def __init__(self, port):
        super().__init__(port, {"gmail": (MX_IP, None)})
        self.lock = threading.Lock()
        self.tokens = float(BURST)
        self.stamp = time.monotonic()
        self.accepted = 0
        self.refused = 0

    def _take(self):
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(BURST), self.tokens + (now - self.stamp) * RATE)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return True
            self.refused += 1
            return False

    def counts(self):
        with self.lock:
            return self.accepted, self.refused

    async def session(self, key, script, reader, writer):
        try:
            await self._converse(reader, writer)
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _converse(self, reader, writer):
        writer.write(b"220 mx.gmail.test ESMTP\r\n")
        while True:
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 60)
            if not line:
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
            if verb == b"EHLO":
                writer.write(b"250-mx.gmail.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            elif verb == b"RCPT":
                if not self._take():
                    writer.write(REPLY_42128)
                    await writer.drain()
                    return
                writer.write(b"250 2.1.5 OK\r\n")
            elif verb == b"DATA":
                writer.write(b"354 Go ahead\r\n")
                await writer.drain()
                while True:
                    ln = await asyncio.wait_for(reader.readline(), 60)
                    if not ln:
                        return
                    if ln in (b".\r\n", b".\n"):
                        break
                with self.lock:
                    self.accepted += 1
                writer.write(b"250 2.0.0 OK\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 closing connection\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"250 2.0.0 OK\r\n")


def _run(postino_factory, rules):
    """One run of MESSAGES messages to gmail.test through a fresh provider
    and a fresh postino whose shaping_rules file holds `rules`. Returns
    (the provider's counts, the postino instance)."""
    port = h.free_port_all([MX_IP])
    mx = RateLimitedMX(port).start()
    try:
        p = postino_factory(main={"smtp_port": str(port)}, start=False)
        with open(os.path.join(p.conf, "shaping_rules"), "w") as f:
            f.write(rules)
        p.start()
        s = p.smtp()
        try:
            for i in range(MESSAGES):
                p.send(SENDER, "u%d@gmail.test" % i, conn=s)
        finally:
            s.quit()
        h.wait_until(lambda: mx.counts()[0] >= MESSAGES, timeout=120,
                     what="%d messages at the provider" % MESSAGES)
        p.wait_queue_empty(timeout=30)
        return mx.counts(), p
    finally:
        mx.stop()


def test_gmail_42128_rule_means_ten_times_fewer_421s(postino_factory):
    (sent0, refused0), _ = _run(postino_factory, "")
    rule = "rate=%d/s %ds dsn=4.7.28\n" % (RULE_RATE, RULE_SECS)
    (sent1, refused1), p = _run(postino_factory, rule)
    print("421s at the provider: %d without the rule, %d with it" % (refused0, refused1))
    assert sent0 == sent1 == MESSAGES
    # the provider did push back in both runs, and the rule acted on it
    assert refused1 >= 1, "the provider never refused: the test proves nothing"
    assert refused0 >= 10 * refused1, (refused0, refused1)
    line = p.wait_log(r"site=\S+ throttled: rate %d/h for %ds after \"421.4\.7\.28 "
                      % (RULE_RATE * 3600, RULE_SECS))[0]
    site = re.search(r"site=(\S+) throttled", line).group(1)
    # one line per state change, not one per 421
    assert len(p.log_lines(r"site=%s throttled" % re.escape(site))) == 1
    # back to normal once the duration is over, and said so
    p.wait_log(r"site=%s back to normal after throttled" % re.escape(site),
               timeout=RULE_SECS + 15)
    out = p.cli("site", "list", check=True).stdout
    assert re.search(r"%s\b.*normal" % re.escape(site), out), out


# -- suspend_source: a provider that blocks one of the pool's two addresses

BLK_IP = "127.0.0.62"
BAD_SRC, GOOD_SRC = "127.0.0.11", "127.0.0.12"


class BlockingMX(h.AsyncServers):
    """Answers RCPT from BAD_SRC with a 421 naming the client as blocked
    (and closes); everyone else gets through. Records the client address
    of every accepted message and counts the 421s."""

    def __init__(self, port):
        super().__init__(port, {"blk": (BLK_IP, None)})
        self.lock = threading.Lock()
        self.peers = []
        self.refused = 0

    def state(self):
        with self.lock:
            return list(self.peers), self.refused

    async def session(self, key, script, reader, writer):
        peer = writer.get_extra_info("peername")[0]
        try:
            writer.write(b"220 mx.blk.test ESMTP\r\n")
            while True:
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
                if verb == b"RCPT" and peer == BAD_SRC:
                    with self.lock:
                        self.refused += 1
                    writer.write(b"421 4.7.1 Client host [%s] blocked using local list\r\n"
                                 % peer.encode())
                    await writer.drain()
                    return
                if verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    while (await asyncio.wait_for(reader.readline(), 60)) not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.peers.append(peer)
                    writer.write(b"250 2.0.0 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 OK\r\n")
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


def _table(p, name, rows):
    path = os.path.join(p.conf, name)
    with open(path, "w") as f:
        for k, v in rows.items():
            f.write("%s %s\n" % (k, v))
    p.cli("map", "build", path, check=True)
    return "hash:" + path


@pytest.mark.dns([("mx", "blk.test", "mx.blk.test", 10), ("a", "mx.blk.test", BLK_IP)])
def test_suspend_source_takes_one_address_out_for_the_site(postino_factory):
    port = h.free_port_all([BLK_IP])
    mx = BlockingMX(port).start()
    try:
        p = postino_factory(main={"smtp_port": str(port)}, start=False)
        with open(os.path.join(p.conf, "shaping_rules"), "w") as f:
            f.write("suspend_source 1h code=421 text=client host .* blocked\n")
        p.set(source_address_maps=_table(p, "source_addresses",
                                         {BAD_SRC: "helo=bad.postino.test",
                                          GOOD_SRC: "helo=good.postino.test"}),
              source_pool_maps=_table(p, "source_pools", {"pair": "%s %s" % (BAD_SRC, GOOD_SRC)}),
              sender_dependent_source_pool_maps=_table(p, "source_pool_senders",
                                                       {"@a.example": "pair"}))
        p.start()
        # the first messages run into the block (round-robin over the pair)
        for i in range(6):
            p.send("news@a.example", "f%d@blk.test" % i)
        p.wait_log(r"site=\S+ source=%s suspended for 1h after \"421 4\.7\.1 Client host"
                   % re.escape(BAD_SRC), timeout=30)
        h.wait_until(lambda: len(mx.state()[0]) >= 6, timeout=60, what="6 messages at the MX")
        _, refused = mx.state()
        # from now on only the other address sends to this site
        for i in range(10):
            p.send("news@a.example", "s%d@blk.test" % i)
        h.wait_until(lambda: len(mx.state()[0]) >= 16, timeout=60, what="16 messages at the MX")
        peers, refused_after = mx.state()
        assert refused_after == refused, "the blocked address was used again"
        assert set(peers[6:]) == {GOOD_SRC}, peers
        assert len(p.log_lines(r"source=%s suspended" % re.escape(BAD_SRC))) == 1
    finally:
        mx.stop()


# -- suspend: Yahoo's [TSS04] stops all mail to the site for a while

YAHOO_IP = "127.0.0.63"
TSS04 = (b"421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected "
         b"volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes\r\n")


class PushbackMX(BlockingMX):
    """Answers the first RCPT it sees with `first` (and closes), accepts the
    rest; counts the refusals and records accepted messages."""

    def __init__(self, port, first):
        h.AsyncServers.__init__(self, port, {"mx": (YAHOO_IP, None)})
        self.lock = threading.Lock()
        self.peers = []
        self.refused = 0
        self.rcpts = 0
        self.first = first

    async def session(self, key, script, reader, writer):
        try:
            writer.write(b"220 mx.yahoo.test ESMTP\r\n")
            while True:
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
                if verb == b"RCPT":
                    with self.lock:
                        self.rcpts += 1
                        refuse = self.rcpts == 1
                        self.refused += refuse
                    if refuse:
                        writer.write(self.first)
                        await writer.drain()
                        return
                if verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await writer.drain()
                    while (await asyncio.wait_for(reader.readline(), 60)) not in (b".\r\n", b""):
                        pass
                    with self.lock:
                        self.peers.append("msg")
                    writer.write(b"250 2.0.0 OK\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 OK\r\n")
        except (OSError, asyncio.TimeoutError):
            pass
        finally:
            writer.close()


@pytest.mark.dns([("mx", "yahoo.test", "mx.yahoo.test", 10), ("a", "mx.yahoo.test", YAHOO_IP)])
def test_suspend_defers_the_site_then_resumes(postino_factory):
    port = h.free_port_all([YAHOO_IP])
    mx = PushbackMX(port, TSS04).start()
    try:
        p = postino_factory(main={"smtp_port": str(port)}, start=False)
        with open(os.path.join(p.conf, "shaping_rules"), "w") as f:
            f.write("suspend 10s text=\\[TSS04\\]\n")
        p.start()
        p.send(SENDER, "first@yahoo.test")
        line = p.wait_log(r'site=\S+ suspended for 10s after "421 4\.7\.0 \[TSS04\] ')[0]
        site = re.search(r"site=(\S+) suspended", line).group(1)
        # mail for the site while it is suspended waits in qmgr, unsent
        p.send(SENDER, "second@yahoo.test")
        p.wait_log(r"to=<second@yahoo\.test>.*status=deferred \(delivery temporarily "
                   r"suspended: site %s: 421 4\.7\.0 \[TSS04\]" % re.escape(site))
        assert mx.state()[0] == [], "a message went to the site while it was suspended"
        p.wait_log(r"site=%s back to normal after suspended" % re.escape(site), timeout=30)
        h.wait_until(lambda: len(mx.state()[0]) >= 2, timeout=30, what="both messages")
        assert mx.state()[1] == 1
    finally:
        mx.stop()


def test_broken_rules_refused_by_check_start_and_reload(postino_factory):
    """`postino check` names the file, the line and what is wrong; start
    refuses such a file, and reload keeps the running rules (qmgr would
    otherwise go on without any)."""
    p = postino_factory(start=False)
    path = os.path.join(p.conf, "shaping_rules")
    with open(path) as f:
        shipped = f.read()
    with open(path, "w") as f:
        f.write("# comment\n\nrate=300/x 30m code=421\n")
    r = p.cli("check")
    assert r.returncode != 0
    assert '%s, line 3: bad rate "300/x"' % path in r.stderr, r.stderr
    r = p.cli("start")
    assert r.returncode != 0 and "%s, line 3:" % path in r.stderr, r.stderr
    with open(path, "w") as f:
        f.write(shipped)
    p.cli("check", check=True)
    p.start()
    with open(path, "w") as f:
        f.write("suspend 1h site=gmail\n")
    r = p.cli("reload")
    assert r.returncode != 0, r
    assert "%s, line 1: a rule needs code=, dsn= or text=" % path in r.stderr, r.stderr
    assert "not reloading" in r.stderr
    with open(path, "w") as f:
        f.write("suspend 1h site=gmail text=(\n")
    r = p.cli("check")
    assert r.returncode != 0 and "%s, line 1: bad regular expression" % path in r.stderr


# -- one push-back to many deliveries in flight: one state change, one line

BURST_IP = "127.0.0.64"
IN_FLIGHT = 20


class BarrierMX(h.AsyncServers):
    """Holds every connection until IN_FLIGHT of them wait (or 30 s pass),
    then gives them all the same push-back at once: at RCPT (`at="rcpt"`,
    Gmail's 421 4.7.28) or as the greeting (`at="greeting"`, a 421 and
    close). `released` is how many were held together."""

    def __init__(self, port, at):
        super().__init__(port, {"burst": (BURST_IP, None)})
        self.at = at
        self.waiting = 0
        self.released = 0
        self.gate = None

    async def _hold(self):
        if self.gate is None:
            self.gate = asyncio.Event()
        self.waiting += 1
        if self.waiting >= IN_FLIGHT and not self.gate.is_set():
            self.released = self.waiting
            self.gate.set()
        try:
            await asyncio.wait_for(self.gate.wait(), 30)
        except asyncio.TimeoutError:
            if not self.gate.is_set():
                self.released = self.waiting
                self.gate.set()

    async def session(self, key, script, reader, writer):
        try:
            if self.at == "greeting":
                await self._hold()
                writer.write(b"421 4.7.0 mx.burst.test Try again later, closing connection\r\n")
                await writer.drain()
                return
            writer.write(b"220 mx.burst.test ESMTP\r\n")
            while True:
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper()
                if verb == b"EHLO":
                    writer.write(b"250-mx.burst.test\r\n250 PIPELINING\r\n")
                elif verb == b"RCPT":
                    await self._hold()
                    writer.write(REPLY_42128)
                    await writer.drain()
                    return
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"250 2.0.0 OK\r\n")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


@pytest.mark.dns([("mx", "burst.test", "mx.burst.test", 10), ("a", "mx.burst.test", BURST_IP)])
@pytest.mark.parametrize("at, rule, said", [
    ("rcpt", "suspend 10m dsn=4.7.28", r"suspended for 600s"),
    ("rcpt", "rate=300/h 10m dsn=4.7.28", r"throttled: rate 300/h"),
    ("rcpt", "connections=2 10m dsn=4.7.28", r"throttled: concurrency 2"),
    ("rcpt", "suspend_source 10m dsn=4.7.28", r"suspended for 600s"),
    ("greeting", "suspend 10m code=421 text=try again later", r"suspended for 600s"),
])
def test_one_pushback_to_many_in_flight_is_one_line(postino_factory, at, rule, said):
    """IN_FLIGHT deliveries to one site get the same push-back at once (issue
    #12: twenty connection failures logged twenty identical lines). The
    rule changes the site's state once: one line, whatever the action;
    the replies that follow find the state in force and add nothing."""
    port = h.free_port_all([BURST_IP])
    mx = BarrierMX(port, at).start()
    try:
        p = postino_factory(main={"smtp_port": str(port),
                                  "initial_destination_concurrency": str(IN_FLIGHT),
                                  "default_destination_concurrency_limit": str(IN_FLIGHT)},
                            start=False)
        with open(os.path.join(p.conf, "shaping_rules"), "w") as f:
            f.write(rule + "\n")
        p.start()
        s = p.smtp()
        try:
            for i in range(IN_FLIGHT):
                p.send(SENDER, "u%d@burst.test" % i, conn=s)
        finally:
            s.quit()
        for i in range(IN_FLIGHT):
            p.wait_log(r"to=<u%d@burst\.test>, .*status=deferred" % i, timeout=60)
        time.sleep(2)                     # anything late would be logged by now
        print("held together at the MX: %d" % mx.released)
        assert mx.released == IN_FLIGHT, "only %d deliveries were in flight" % mx.released
        lines = p.log_lines(r"site=\S+ (source=\S+ )?(suspended|throttled)")
        assert len(lines) == 1, "\n".join(lines)
        assert re.search(said, lines[0]), lines[0]
        dests = p.log_lines(r"destination \S+ suspended")
        assert len(dests) <= 1, "\n".join(dests)
    finally:
        mx.stop()
