"""Connection reuse by the delivery agent: many messages to one destination
travel over few SMTP connections (RSET between them), and
smtp_connection_reuse_count_limit = 1 forces one connection per message.
Connections are counted at the receiving aiosmtpd sink (one Session object
per TCP connection)."""
import asyncio

import postino_harness as h

SENDER = "s@sender.test"
N = 20


def _send_burst(p, tag):
    """N messages to the same destination, over one client session."""
    s = p.smtp()
    try:
        for i in range(N):
            p.send(SENDER, "r%d-%s@example.test" % (i, tag), subject="%s %d" % (tag, i), conn=s)
    finally:
        s.quit()


def _reuse_postino(postino_factory, sink, **extra):
    # Few parallel connections, so that reuse (not parallelism) decides how
    # many connections 20 messages need.
    main = {"relayhost": "[127.0.0.1]:%d" % sink.port,
            "default_destination_concurrency_limit": "2",
            "smtp_connection_cache_time_limit": "5s"}
    main.update(extra)
    return postino_factory(main=main)


def _burst_to_sink(sink, tag):
    pred = lambda m: any(r.endswith("-%s@example.test" % tag) for r in m.rcpts)
    msgs = sink.wait_for(pred, count=N, timeout=60)
    return msgs, sink.connections(pred)


def test_messages_share_connections(postino_factory, sink):
    p = _reuse_postino(postino_factory, sink)
    _send_burst(p, "reuse")
    msgs, conns = _burst_to_sink(sink, "reuse")
    assert len(msgs) == N
    print("reuse: %d connections for %d messages" % (len(conns), N))
    assert len(conns) < N, "every message used its own connection: no reuse (%d)" % len(conns)
    # With at most 2 parallel connections, reuse should carry most of them.
    assert len(conns) <= N // 2, "only weak reuse: %d connections for %d messages" % (len(conns), N)
    p.wait_queue_empty(timeout=30)


def test_reuse_count_limit_one(postino_factory, sink):
    p = _reuse_postino(postino_factory, sink, smtp_connection_reuse_count_limit="1")
    _send_burst(p, "single")
    msgs, conns = _burst_to_sink(sink, "single")
    assert len(msgs) == N
    assert len(conns) == N, "reuse_count_limit=1: expected %d connections, got %d" % (N, len(conns))
    p.wait_queue_empty(timeout=30)


def test_reuse_limit_reached_opens_next_connection(postino_factory, sink, dns):
    """Issue #12: with connections retired every 5 messages, the next ones
    open at once. A relayhost that names an address ([127.0.0.1]) is the
    one target, as in Postfix: no DNS query for it. Before the fix every
    new connection asked the resolver for the name "127.0.0.1" (A and
    AAAA); when a batch of sessions reached the limit together, a lost
    query stalled delivery for c-ares' 3 s timeout (make bench-modes: end
    to end at half the acceptance rate)."""
    limit, n = 5, 50
    dns.stop()
    dns.log_queries = True
    dns.start()
    p = postino_factory(main={"relayhost": "[127.0.0.1]:%d" % sink.port,
                              "smtp_connection_reuse_count_limit": str(limit)})
    s = p.smtp()
    try:
        for i in range(n):
            p.send(SENDER, "r%d-limit@example.test" % i, subject="limit %d" % i, conn=s)
    finally:
        s.quit()
    pred = lambda m: any(r.endswith("-limit@example.test") for r in m.rcpts)
    msgs = sink.wait_for(pred, count=n, timeout=90)
    assert sorted(m.msg["Subject"] for m in msgs) == sorted("limit %d" % i for i in range(n))
    conns = {}
    for m in msgs:
        conns[m.conn] = conns.get(m.conn, 0) + 1
    print("limit %d: %d connections for %d messages" % (limit, len(conns), n))
    assert max(conns.values()) <= limit, "a connection carried more than %d: %s" % (limit, conns)
    assert len(conns) >= n // limit
    p.wait_queue_empty(timeout=60)
    asked = [q for q in dns.queries() if q[1] == "127.0.0.1"]
    assert not asked, "DNS queries for the address literal relayhost: %s" % asked[:4]


class RsetMX(h.AsyncServers):
    """An ESMTP receiver with PIPELINING that notes, per connection, the
    commands it read, whether a reused connection's MAIL came before it had
    answered RSET (the same flight), and that answers RSET as `rset` says."""

    def __init__(self, port, rset=b"250 2.0.0 Ok\r\n", chunking=False):
        super().__init__(port, {"mx": ("127.0.0.1", None)})
        self.rset = rset
        self.chunking = chunking
        self.conns = []       # [{"verbs": [...], "mail_before_rset_reply": bool}]
        self.delivered = []   # (connection number, rcpts)

    async def session(self, key, script, reader, writer):
        conn = {"verbs": [], "mail_before_rset_reply": None}
        self.conns.append(conn)
        n = len(self.conns)
        rcpts = []
        try:
            writer.write(b"220 mx.test ESMTP\r\n")
            while True:
                await writer.drain()
                line = await asyncio.wait_for(reader.readline(), 60)
                if not line:
                    return
                verb = line.split()[0].upper().decode() if line.split() else ""
                conn["verbs"].append(verb)
                if verb == "EHLO":
                    writer.write(b"250-mx.test\r\n250-PIPELINING\r\n" +
                                 (b"250-CHUNKING\r\n" if self.chunking else b"") +
                                 b"250 8BITMIME\r\n")
                elif verb == "RSET":
                    # Does MAIL follow before we answer? (1 s is plenty on
                    # loopback when it was in the same write.)
                    try:
                        nxt = await asyncio.wait_for(reader.readline(), 1.0)
                    except asyncio.TimeoutError:
                        nxt = None
                    conn["mail_before_rset_reply"] = bool(nxt and nxt.upper().startswith(b"MAIL"))
                    writer.write(self.rset)
                    if nxt and not nxt.upper().startswith(b"MAIL"):
                        conn["verbs"].append(nxt.split()[0].upper().decode())
                        writer.write(b"503 5.5.1 out of sequence\r\n")
                        continue
                    if self.rset.startswith(b"421"):
                        await writer.drain()
                        return
                    if nxt:
                        conn["verbs"].append("MAIL")
                        rcpts = []
                        writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == "MAIL":
                    rcpts = []
                    writer.write(b"250 2.1.0 Ok\r\n")
                elif verb == "RCPT":
                    rcpts.append(line.decode().split(":", 1)[1].strip().strip("<>"))
                    writer.write(b"250 2.1.5 Ok\r\n")
                elif verb == "DATA":
                    writer.write(b"354 go ahead\r\n")
                    await writer.drain()
                    while (await asyncio.wait_for(reader.readline(), 60)) not in (b".\r\n", b""):
                        pass
                    self.delivered.append((n, rcpts))
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "BDAT":
                    words = line.split()
                    await reader.readexactly(int(words[1]))
                    if len(words) > 2 and words[2].upper() == b"LAST":
                        self.delivered.append((n, rcpts))
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == "QUIT":
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"502 5.5.2 what\r\n")
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def _rset_postino(postino_factory, port):
    return postino_factory(main={"relayhost": "[127.0.0.1]:%d" % port,
                                 "default_destination_concurrency_limit": "1",
                                 "smtp_connection_cache_time_limit": "10s"})


def test_reused_connection_pipelines_rset(postino_factory):
    """A cached connection is still proven with RSET (as Postfix), but the
    RSET travels in one flight with MAIL, RCPT and DATA: reuse costs no
    round trip. Fails on a client that waits for RSET's reply first."""
    mx = RsetMX(h.free_port()).start()
    try:
        p = _rset_postino(postino_factory, mx.port)
        for i in range(3):
            q = p.send(SENDER, "r%d@example.test" % i)
            p.wait_removed(q, timeout=30)
        assert [r for _, r in mx.delivered] == [["r0@example.test"], ["r1@example.test"],
                                                 ["r2@example.test"]]
        assert len(mx.conns) == 1, mx.conns
        assert mx.conns[0]["verbs"].count("RSET") == 2, mx.conns[0]["verbs"]
        assert mx.conns[0]["mail_before_rset_reply"] is True, mx.conns[0]
        assert not p.log_lines(r"status=deferred")
    finally:
        mx.stop()


def test_reused_connection_refused_at_rset_goes_fresh(postino_factory):
    """A server that answers the pipelined RSET with 421 (it had enough of
    this connection): the MAIL sent with it does not count; the message goes
    over a new connection at once, not deferred."""
    mx = RsetMX(h.free_port(), rset=b"421 4.7.0 mx.test closing connection\r\n").start()
    try:
        p = _rset_postino(postino_factory, mx.port)
        q = p.send(SENDER, "first@example.test")
        p.wait_removed(q, timeout=30)
        q = p.send(SENDER, "second@example.test")
        p.wait_removed(q, timeout=30)
        assert [r for _, r in mx.delivered] == [["first@example.test"], ["second@example.test"]]
        assert [n for n, _ in mx.delivered] == [1, 2]
        assert "RSET" in mx.conns[0]["verbs"]
        assert not p.log_lines(r"status=deferred"), p.log_tail(20)
    finally:
        mx.stop()


def test_refused_rset_sends_no_content(postino_factory):
    """With CHUNKING the content would go in the same flight as MAIL and
    RCPT (BDAT): on a reused connection it waits for the RSET's 250. A
    server that refuses the RSET but takes the rest must not get the
    message there as well as on the fresh connection (a duplicate)."""
    mx = RsetMX(h.free_port(), rset=b"502 5.5.2 RSET not here\r\n", chunking=True).start()
    try:
        p = _rset_postino(postino_factory, mx.port)
        q = p.send(SENDER, "first@example.test")
        p.wait_removed(q, timeout=30)
        q = p.send(SENDER, "second@example.test")
        p.wait_removed(q, timeout=30)
        assert [r for _, r in mx.delivered] == [["first@example.test"], ["second@example.test"]]
        assert [n for n, _ in mx.delivered] == [1, 2], mx.conns
        assert "BDAT" not in mx.conns[0]["verbs"][mx.conns[0]["verbs"].index("RSET"):]
        assert not p.log_lines(r"status=deferred"), p.log_tail(20)
    finally:
        mx.stop()
