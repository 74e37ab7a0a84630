"""Several nodes (issue #9): qmgr and the shared shaping state in a real
redis-server started by the test. qmgr connects at start-up and says so;
when Redis goes away mail keeps flowing and the change is logged once (not
once per failed reconnect); when Redis is back qmgr reconnects by itself.
A bad shaping_shared_state stops `postino check`.

The joint-rate acceptance test (two instances, one Redis, 600/min between
them) needs per-site rate limits in qmgr (branch `sites`); the shared limiter
itself is tested against a real redis-server in tests/unit/qmgr/test_shared.c
(two nodes holding one rate, the fallback share, connection leases)."""
import time

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
