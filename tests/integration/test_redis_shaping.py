"""Several nodes (issue #9): qmgr and the shared shaping state in a real
redis-server started by the test. qmgr connects at start-up and says so;
when Redis goes away mail keeps flowing and the change is logged once (not
once per failed reconnect); when Redis is back qmgr reconnects by itself.
A bad shaping_shared_state stops `postino check`.

The acceptance tests: two postino instances sharing one redis-server hold
a joint 600/m for one site at the receiver (each would send 600/m alone);
when Redis stops mid-run both keep sending, each within its share (limit /
shaping_node_count). The shared limiter itself is also tested in
tests/unit/qmgr/test_shared.c (the Lua GCRA against gcra.c, leases)."""
import os
import threading
import time

import pytest

import postino_harness as h

SENDER = "s@sender.test"


def shared(redis, sink, nodes=2):
    return {"relayhost": "[127.0.0.1]:%d" % sink.port,
            "shaping_shared_state": "redis:127.0.0.1:%d" % redis.port,
            "shaping_node_count": str(nodes)}


def send_and_wait(p, sink, rcpt):
    p.send(SENDER, rcpt)
    sink.wait_to(rcpt)


def test_redis_gone_and_back(postino_factory, redis, sink):
    p = postino_factory(main=shared(redis, sink))
    p.wait_log(r"qmgr\[\d+\]: redis: connected to 127\.0\.0\.1:%d" % redis.port)
    p.wait_log(r"shaping: shared state redis:127\.0\.0\.1:%d reachable" % redis.port)
    send_and_wait(p, sink, "before@example.net")

    redis.stop()
    p.wait_log(r"shaping: shared state .* unreachable: each site keeps to its local share "
               r"\(limit / shaping_node_count = 2\)")
    # reconnects back off from 0.1 s to 2 s: several fail meanwhile
    for i in range(3):
        send_and_wait(p, sink, "during%d@example.net" % i)
    time.sleep(3)
    assert len(p.log_lines(r"unreachable")) == 1, p.log_tail(40)

    redis.start()
    p.wait_log(r"shaping: shared state .* reachable", count=2, timeout=10)
    send_and_wait(p, sink, "after@example.net")
    assert len(p.log_lines(r"unreachable")) == 1


def test_bad_spec_stops_check(postino_factory, sink):
    p = postino_factory(main={"shaping_shared_state": "10.0.0.5:6379"}, start=False)
    r = p.cli("check")
    assert r.returncode != 0
    assert "shaping_shared_state" in r.stderr + r.stdout


# ---- two nodes, one joint rate (needs qmgr's sites: shaping_maps) ----

PROVIDER = [
    ("mx", "a.example", "mx1.provider.test", 10),
    ("mx", "b.example", "mx1.provider.test", 10),
    ("a", "mx1.provider.test", "127.0.0.2"),
]
SITE = "mx1.provider.test"


def node(postino_factory, redis, name, rate="600/m", nodes=2):
    """One postino node: the site at rate, shared through redis."""
    p = postino_factory(start=False)
    path = os.path.join(p.conf, "shaping")
    with open(path, "w") as f:
        f.write("site:%s max_message_rate=%s max_connections=5\n" % (SITE, rate))
    p.cli("map", "build", path, check=True)
    p.set(shaping_maps="hash:" + path,
          shaping_shared_state="redis:127.0.0.1:%d" % redis.port,
          shaping_node_count=nodes, myhostname=name)
    p.start()
    p.wait_log(r"shaping: shared state .* reachable")
    return p


def inject(p, domain, n):
    s = p.smtp()
    try:
        for i in range(n):
            p.send(SENDER, "n%d@%s" % (i, domain), conn=s)
    finally:
        s.quit()


def by_domain(msgs, domain, t0, t1):
    return sum(1 for m in msgs if t0 <= m.time < t1 and
               any(r.endswith("@" + domain) for r in m.rcpts))


@pytest.mark.dns(PROVIDER)
def test_two_nodes_hold_a_joint_rate(postino_factory, redis, sink):
    # Each node alone would send 600/m: together they send 600/m, 200 +- 10
    # in 20 s at the receiver (the short form of 6000/h over a minute).
    a = node(postino_factory, redis, "node-a.test")
    b = node(postino_factory, redis, "node-b.test")
    threads = [threading.Thread(target=inject, args=(p, d, 250))
               for p, d in ((a, "a.example"), (b, "b.example"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sink.wait_for(count=230, timeout=120)
    t0 = min(m.time for m in got)
    n_a, n_b = by_domain(got, "a.example", t0, t0 + 20), by_domain(got, "b.example", t0, t0 + 20)
    print("joint: %d + %d in 20 s" % (n_a, n_b))
    assert 190 <= n_a + n_b <= 210, "%d + %d messages in 20 s" % (n_a, n_b)
    assert n_a > 20 and n_b > 20, "both nodes send: %d, %d" % (n_a, n_b)
    assert redis.command("EXISTS", "postino:rate:" + SITE) == "1"


@pytest.mark.dns(PROVIDER)
def test_redis_stops_mid_run(postino_factory, redis, sink):
    # Redis goes away while both nodes send: each keeps sending, within its
    # share (240/m / 2 nodes), says so once, and the two together stay
    # within the joint limit. (A low rate, so that the share and a node's
    # full rate differ by more than what a busy machine loses.)
    a = node(postino_factory, redis, "node-a.test", rate="240/m")
    b = node(postino_factory, redis, "node-b.test", rate="240/m")
    threads = [threading.Thread(target=inject, args=(p, d, 120))
               for p, d in ((a, "a.example"), (b, "b.example"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.wait_for(count=20, timeout=60)
    redis.stop()
    for p in (a, b):
        p.wait_log(r"shaping: shared state .* unreachable")
    t_stop = time.time()
    t1, t2 = t_stop + 1, t_stop + 11
    time.sleep(t2 + 1 - time.time())  # the whole window, then count it
    got = sink.received()
    n_a, n_b = by_domain(got, "a.example", t1, t2), by_domain(got, "b.example", t1, t2)
    print("without Redis: %d, %d in 10 s" % (n_a, n_b))
    # 10 s at 120/m each: 20 apiece at most (+1 for the first token)
    assert n_a <= 21 and n_b <= 21, "without Redis: %d, %d in 10 s" % (n_a, n_b)
    assert n_a >= 10 and n_b >= 10, "both nodes keep sending: %d, %d" % (n_a, n_b)
    for p in (a, b):
        assert len(p.log_lines(r"unreachable")) == 1


# ---- two nodes, one joint connection limit (leases in Redis) ----

def conn_node(postino_factory, redis, name, bind, limit=2, shared_state=True):
    """A node sending from its own address (so the receiver tells the
    nodes apart), the site at max_connections=limit, joint through redis
    unless shared_state is False."""
    p = postino_factory(start=False)
    path = os.path.join(p.conf, "shaping")
    with open(path, "w") as f:
        f.write("site:%s max_connections=%d\n" % (SITE, limit))
    p.cli("map", "build", path, check=True)
    main = {"shaping_maps": "hash:" + path, "smtp_bind_address": bind, "myhostname": name}
    if shared_state:
        main.update(shaping_shared_state="redis:127.0.0.1:%d" % redis.port,
                    shaping_node_count=2)
    p.set(**main)
    p.start()
    if shared_state:
        p.wait_log(r"shaping: shared state .* reachable")
    return p


def two_nodes_send(nodes, sink, n=20):
    """n messages from each node at once through a slow receiver."""
    sink.data_delay = 0.3
    threads = [threading.Thread(target=inject, args=(p, d, n))
               for p, d in zip(nodes, ("a.example", "b.example"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sink.wait_for(count=n * len(nodes), timeout=180)


@pytest.mark.dns(PROVIDER)
def test_two_nodes_hold_a_joint_connection_limit(postino_factory, redis, sink):
    a = conn_node(postino_factory, redis, "node-a.test", "127.0.0.21")
    b = conn_node(postino_factory, redis, "node-b.test", "127.0.0.22")
    two_nodes_send((a, b), sink)
    print("peaks:", sink.peak, sink.client_peak)
    assert sink.peak.get("127.0.0.2", 0) <= 2, sink.peak
    assert sink.client_peak.get("127.0.0.21", 0) >= 1, sink.client_peak
    assert sink.client_peak.get("127.0.0.22", 0) >= 1, sink.client_peak
    # the leases go back once the connections are over (idle time, a tick)
    h.wait_until(lambda: redis.command("ZCARD", "postino:conn:" + SITE) == "0",
                 timeout=30, what="no connection leases left in Redis")


@pytest.mark.dns(PROVIDER)
def test_without_shared_state_the_nodes_add_up(postino_factory, redis, sink):
    # The control: each node alone holds max_connections=2, together they
    # open more than two (so the leases are what holds the test above).
    a = conn_node(postino_factory, redis, "node-a.test", "127.0.0.21", shared_state=False)
    b = conn_node(postino_factory, redis, "node-b.test", "127.0.0.22", shared_state=False)
    two_nodes_send((a, b), sink)
    assert sink.peak.get("127.0.0.2", 0) > 2, sink.peak


@pytest.mark.dns(PROVIDER)
def test_connection_share_without_redis(postino_factory, redis, sink):
    # Redis away: each node keeps to max_connections / shaping_node_count
    # (4 / 2) and keeps sending.
    a = conn_node(postino_factory, redis, "node-a.test", "127.0.0.21", limit=4)
    b = conn_node(postino_factory, redis, "node-b.test", "127.0.0.22", limit=4)
    redis.stop()
    for p in (a, b):
        p.wait_log(r"shaping: shared state .* unreachable")
    two_nodes_send((a, b), sink)
    print("peaks:", sink.peak, sink.client_peak)
    assert 1 <= sink.client_peak.get("127.0.0.21", 0) <= 2, sink.client_peak
    assert 1 <= sink.client_peak.get("127.0.0.22", 0) <= 2, sink.client_peak
