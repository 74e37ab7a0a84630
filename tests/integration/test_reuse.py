"""Connection reuse by the delivery agent: many messages to one destination
travel over few SMTP connections (RSET between them), and
smtp_connection_reuse_count_limit = 1 forces one connection per message.
Connections are counted at the receiving aiosmtpd sink (one Session object
per TCP connection)."""
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
