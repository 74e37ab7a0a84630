"""The metrics service (issue #11): a Prometheus text endpoint on
metrics_listen, fed by the daemons' records and qmgr's gauges.

A known scenario (N delivered, M deferred once by a 4xx receiver, K bounced
by a 5xx one) is checked twice: by parsing the endpoint with
prometheus_client's text parser, and through a real Prometheus server that
scrapes it every second and is asked over its HTTP API. Also: the endpoint
runs as the unprivileged mail owner, and with metrics_listen empty nothing
listens."""
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

import postino_harness as h

prom_parser = pytest.importorskip("prometheus_client.parser")

SENDER = "s@sender.test"
SITE = "mx1.example.test"  # example.test's most preferred MX (conftest's zone)
N, M, K = 3, 2, 2
DEFER_REPLY = "451 4.7.1 greylisted, please come back later"
BOUNCE_REPLY = "550 5.1.1 mailbox unavailable"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def metrics_row():
    return ["metrics unix - - n - 1 metrics"]


def scrape(port, timeout=10):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=timeout) as r:
        assert r.status == 200
        ctype = r.headers.get("Content-Type", "")
        assert ctype.startswith("text/plain; version=0.0.4"), ctype
        return r.read().decode()


def samples(text):
    """{(sample name, frozenset(labels)): value} via prometheus_client's parser."""
    out = {}
    for fam in prom_parser.text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(smp, name, **labels):
    return smp.get((name, frozenset(labels.items())))


@pytest.fixture
def mport():
    return h.free_port()


def wait_serving(mport):
    def serving():
        try:
            return "postino_qmgr_up 1" in scrape(mport)
        except OSError:
            return False
    h.wait_until(serving, timeout=30, what="the metrics endpoint, with qmgr up")


@pytest.fixture
def metered(postino_factory, mport):
    p = postino_factory(main={"metrics_listen": "127.0.0.1:%d" % mport},
                        master_extra=metrics_row())
    wait_serving(mport)
    return p


def run_scenario(p, sink):
    """N delivered at once, M deferred once then delivered, K bounced; waits
    until the queue is empty (every DSN sent too)."""
    for i in range(M):
        sink.on_rcpt("defer%d@example.test" % i, [DEFER_REPLY])
    for i in range(K):
        sink.on_rcpt("bounce%d@example.test" % i, forever=BOUNCE_REPLY)
    qids = [p.send(SENDER, "ok%d@example.test" % i) for i in range(N)]
    qids += [p.send(SENDER, "defer%d@example.test" % i) for i in range(M)]
    qids += [p.send(SENDER, "bounce%d@example.test" % i) for i in range(K)]
    for i in range(M):
        p.wait_log(r"to=<defer%d@example.test>.*status=deferred" % i, timeout=60)
    for qid in qids:
        p.wait_removed(qid, timeout=90)
    # the K DSNs to the sender went out too
    sink.wait_for(lambda m: m.mail_from == "" and SENDER in m.rcpts, count=K, timeout=60)


def expected_ok(smp):
    return (value(smp, "postino_messages_delivered_total", site=SITE) == N + M and
            value(smp, "postino_messages_deferred_total", site=SITE,
                  category="greylisted") == M and
            value(smp, "postino_messages_bounced_total", site=SITE,
                  category="bad-mailbox") == K)


def test_endpoint_counts_a_known_scenario(metered, sink, mport):
    p = metered
    run_scenario(p, sink)
    # records travel asynchronously: wait for them to be counted
    h.wait_until(lambda: expected_ok(samples(scrape(mport))), timeout=30,
                 what="the scenario's counts on /metrics")
    text = scrape(mport)
    smp = samples(text)
    assert value(smp, "postino_messages_received_total") >= N + M + K
    assert value(smp, "postino_delivery_latency_seconds_count") >= N + M
    assert value(smp, "postino_delivery_latency_seconds_bucket", le="+Inf") == \
        value(smp, "postino_delivery_latency_seconds_count")
    # gauges, asked of qmgr at the scrape: the queue is empty now
    assert value(smp, "postino_qmgr_up") == 1
    for state in ("incoming", "active", "deferred", "hold"):
        assert value(smp, "postino_queue_messages", state=state) == 0, state
    assert value(smp, "postino_queue_oldest_message_age_seconds") == 0
    assert value(smp, "postino_active_deliveries") == 0
    assert value(smp, "postino_sites", state="suspended") == 0
    # HELP and TYPE for every family
    assert "# TYPE postino_messages_delivered_total counter" in text
    assert "# TYPE postino_delivery_latency_seconds histogram" in text
    assert "# TYPE postino_queue_messages gauge" in text


def test_gauges_show_a_waiting_message(metered, sink, mport):
    p = metered
    sink.on_rcpt("stuck@example.test", forever="451 4.3.0 not now")
    qid = p.send(SENDER, "stuck@example.test")
    p.wait_log(r"%s: to=<stuck@example.test>.*status=deferred" % qid, timeout=60)

    def queued():
        smp = samples(scrape(mport))
        waiting = sum(value(smp, "postino_queue_messages", state=s) or 0
                      for s in ("incoming", "active", "deferred"))
        return (waiting == 1 and value(smp, "postino_queue_oldest_message_age_seconds") >= 1 and
                value(smp, "postino_queue_site_messages", site=SITE) == 1)
    h.wait_until(queued, timeout=30, what="one message waiting for %s, a second old" % SITE)
    p.cli("queue", "delete", qid, check=True)


def test_suspended_site_counted(postino_factory, sink, mport):
    """A shaping rule suspends the site on the receiver's 4.7.28: the
    sites gauge shows it suspended, no longer normal."""
    p = postino_factory(main={"metrics_listen": "127.0.0.1:%d" % mport},
                        master_extra=metrics_row(), start=False)
    with open(os.path.join(p.conf, "shaping_rules"), "w") as f:
        f.write("suspend 1h dsn=4.7.28\n")
    p.start()
    wait_serving(mport)
    sink.on_rcpt("limited@example.test", forever="451 4.7.28 too much mail, try later")
    qid = p.send(SENDER, "limited@example.test")
    p.wait_log(r"site=%s suspended for 3600s" % re.escape(SITE), timeout=60)
    p.wait_log(r"%s: to=<limited@example.test>.*status=deferred" % qid, timeout=60)

    def suspended():
        smp = samples(scrape(mport))
        return (value(smp, "postino_sites", state="suspended") == 1 and
                value(smp, "postino_sites", state="normal") == 0)
    h.wait_until(suspended, timeout=30, what="one suspended site on /metrics")


def test_endpoint_bounded_and_only_metrics(metered, mport):
    # another path: 404; another method: 405 (evhttp's allowed methods)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/" % mport, timeout=10)
    assert e.value.code == 404
    req = urllib.request.Request("http://127.0.0.1:%d/metrics" % mport, data=b"", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code in (405, 501)
    # a client that sends half a request and goes away does not stop the service
    s = socket.create_connection(("127.0.0.1", mport), timeout=5)
    s.sendall(b"GET /metr")
    s.close()
    assert "postino_qmgr_up 1" in scrape(mport)


def listening_pid(port):
    """pid of the process with a listening TCP socket on port (from /proc)."""
    inodes = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and int(parts[1].split(":")[1], 16) == port:
                inodes.add(parts[9])
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir("/proc/%s/fd" % pid):
                link = os.readlink("/proc/%s/fd/%s" % (pid, fd))
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(pid)
        except OSError:
            continue
    return None


def test_endpoint_runs_unprivileged(metered, mport):
    scrape(mport)
    pid = listening_pid(mport)
    assert pid is not None
    with open("/proc/%d/status" % pid) as f:
        st = dict(line.split(":", 1) for line in f if ":" in line)
    uids = st["Uid"].split()
    gids = st["Gid"].split()
    pw = pwd.getpwnam("postino")
    assert uids == [str(pw.pw_uid)] * 4, uids
    assert gids == [str(pw.pw_gid)] * 4, gids
    assert os.readlink("/proc/%d/exe" % pid).endswith("/metrics")


def sockets_of(pid):
    out = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            out.add(link[8:-1])
    return out


def test_off_by_default_nothing_listens(postino_factory, sink, mport):
    p = postino_factory(master_extra=metrics_row())
    h.wait_until(lambda: p.pids(("metrics",)).get("metrics"), timeout=20,
                 what="metrics daemon started")
    pid = p.pids(("metrics",))["metrics"][0]
    with open("/proc/net/tcp") as f:
        listeners = {ln.split()[9] for ln in f.readlines()[1:] if ln.split()[3] == "0A"}
    before = sockets_of(pid)
    assert not before & listeners, "the idle metrics daemon holds a TCP listener"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", mport), timeout=2).close()
    # the daemons report nothing: no connection reaches private/metrics
    qid = p.send(SENDER, "ok@example.test")
    p.wait_removed(qid, timeout=60)
    assert sockets_of(pid) == before, "a daemon connected to the idle metrics service"


# ---------------------------------------------------------------- Prometheus

class Prometheus:
    """A private Prometheus server scraping one target every second."""

    def __init__(self, workdir, target):
        self.dir = workdir
        self.port = h.free_port()
        cfg = os.path.join(workdir, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: postino\n    static_configs:\n"
                    "      - targets: ['%s']\n" % target)
        self.log = open(os.path.join(workdir, "prometheus.log"), "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + cfg,
             "--storage.tsdb.path=" + os.path.join(workdir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=self.log, stderr=subprocess.STDOUT)

    def query(self, q):
        url = "http://127.0.0.1:%d/api/v1/query?%s" % (self.port, urllib.parse.urlencode({"query": q}))
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]["result"]

    def value(self, q):
        try:
            res = self.query(q)
        except OSError:
            return None
        return float(res[0]["value"][1]) if res else None

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def prometheus(workdir, mport):
    if not os.access(PROMETHEUS, os.X_OK):
        pytest.skip("prometheus is not installed (make deps)")
    p = Prometheus(workdir, "127.0.0.1:%d" % mport)
    yield p
    p.stop()


def test_prometheus_scrapes_the_scenario(metered, sink, mport, prometheus):
    p = metered
    run_scenario(p, sink)
    want = {
        'sum(postino_messages_delivered_total{site="%s"})' % SITE: N + M,
        'sum(postino_messages_deferred_total{site="%s",category="greylisted"})' % SITE: M,
        'sum(postino_messages_bounced_total{site="%s",category="bad-mailbox"})' % SITE: K,
        'sum(postino_queue_messages)': 0,
        'up{job="postino"}': 1,
    }

    def all_there():
        return all(prometheus.value(q) == v for q, v in want.items())
    h.wait_until(all_there, timeout=90, interval=1,
                 what="Prometheus to report the scenario's counts")
    assert prometheus.value('postino_qmgr_up') == 1
    assert prometheus.value('postino_messages_received_total') >= N + M + K
    # the shape of the README's deferral ratio query (on the totals: rate()
    # needs more samples than this short test takes): M deferrals among
    # the site's N + M deliveries and M deferrals
    ratio = ('sum by (category) (postino_messages_deferred_total) '
             '/ scalar(sum(postino_messages_delivered_total{site="%s"}) '
             '+ sum(postino_messages_deferred_total))' % SITE)
    res = prometheus.query(ratio)
    assert [r["metric"].get("category") for r in res] == ["greylisted"], res
    assert abs(float(res[0]["value"][1]) - M / (N + M + M)) < 1e-9, res
    # a quantile from the histogram is a number (Prometheus parsed the buckets)
    q = prometheus.value('histogram_quantile(0.5, postino_delivery_latency_seconds_bucket)')
    assert q is not None and q >= 0


# ---------------------------------------------------------------- TLS, AUTH, reload

from test_delivery_tls import TLS_IP, certs, receivers  # noqa: E402,F401 (fixtures)
from test_submission import AUTH, secrets, swaks  # noqa: E402,F401 (fixtures)


@pytest.mark.dns([("mx", "tlsdest.test", "mx.example.test", 10), ("a", "mx.example.test", TLS_IP)])
def test_tls_auth_and_connections(postino_factory, secrets, receivers, mport):
    """STARTTLS in with a failed and a good AUTH, STARTTLS out to a TLS
    receiver: the TLS, AUTH-failure and connection counters see them."""
    tsink, _, port = receivers
    sub = h.free_port()
    rows = metrics_row() + [
        "127.0.0.1:%d inet n - n - - smtpd -o smtpd_tls_security_level=encrypt "
        "-o smtpd_sasl_auth_enable=yes "
        "-o smtpd_relay_restrictions=permit_sasl_authenticated,reject" % sub]
    main = dict(secrets, mynetworks="10.0.0.0/8", smtpd_sasl_failure_delay="0",
                smtp_port=str(port), metrics_listen="127.0.0.1:%d" % mport)
    p = postino_factory(main=main, master_extra=rows)
    h.wait_until(lambda: "postino_qmgr_up 1" in _try_scrape(mport), timeout=30,
                 what="the metrics endpoint")
    bad = swaks(sub, "--tls", "--auth", "PLAIN", "--auth-user", "user",
                "--auth-password", "wrong", to="a@tlsdest.test")
    assert bad.returncode != 0
    good = swaks(sub, "--tls", *AUTH, to="a@tlsdest.test")
    assert good.returncode == 0, good.stdout + good.stderr
    tsink.wait_to("a@tlsdest.test")
    assert tsink.tls_for("a@tlsdest.test") == [True]

    def counted():
        smp = samples(scrape(mport))
        tls_in = sum(v for (n, lbl), v in smp.items() if n == "postino_tls_in_total")
        tls_out = sum(v for (n, lbl), v in smp.items() if n == "postino_tls_out_total")
        return (tls_in >= 2 and tls_out >= 1 and
                value(smp, "postino_auth_failures_total") == 1 and
                value(smp, "postino_connections_in_total") >= 2 and
                value(smp, "postino_connections_out_total") >= 1 and
                value(smp, "postino_messages_delivered_total", site="mx.example.test") == 1)
    h.wait_until(counted, timeout=30, what="TLS, AUTH and connection counts")
    smp = samples(scrape(mport))
    protos = {dict(lbl).get("protocol") for (n, lbl) in smp if n == "postino_tls_in_total"}
    assert protos <= {"TLSv1.2", "TLSv1.3"}, protos


def _try_scrape(port):
    try:
        return scrape(port)
    except OSError:
        return ""


def test_reload_moves_the_endpoint_and_keeps_counts(metered, sink, mport):
    p = metered
    qid = p.send(SENDER, "ok@example.test")
    p.wait_removed(qid, timeout=60)
    h.wait_until(lambda: value(samples(scrape(mport)), "postino_messages_delivered_total",
                               site=SITE) == 1, timeout=30, what="one delivery counted")
    pid = p.pids(("metrics",))["metrics"][0]
    new = h.free_port()
    p.set(metrics_listen="127.0.0.1:%d" % new)
    p.cli("reload", check=True)
    h.wait_until(lambda: "postino_qmgr_up 1" in _try_scrape(new), timeout=30,
                 what="the endpoint on the new port")
    # the same process (reloaded in place), the counts kept, the old port closed
    assert p.pids(("metrics",))["metrics"] == [pid]
    assert value(samples(scrape(new)), "postino_messages_delivered_total", site=SITE) == 1
    h.wait_until(lambda: _try_scrape(mport) == "", timeout=10, what="the old port closed")


def test_qmgr_not_answering(postino_factory, mport):
    """qmgr stopped (SIGSTOP): a scrape answers after metrics_scrape_timeout
    with the counters and postino_qmgr_up 0; a client that goes away while
    its scrape waits costs nothing; with qmgr back, the gauges are back."""
    p = postino_factory(main={"metrics_listen": "127.0.0.1:%d" % mport,
                              "metrics_scrape_timeout": "2s"},
                        master_extra=metrics_row())
    h.wait_until(lambda: "postino_qmgr_up 1" in _try_scrape(mport), timeout=30,
                 what="the metrics endpoint")
    qmgr = p.pids(("qmgr",))["qmgr"]
    for pid in qmgr:
        os.kill(pid, signal.SIGSTOP)
    try:
        # a client that gives up while its scrape waits for qmgr
        s = socket.create_connection(("127.0.0.1", mport), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        s.close()
        smp = samples(scrape(mport, timeout=30))
        assert value(smp, "postino_qmgr_up") == 0
        assert value(smp, "postino_messages_received_total") == 0
        assert value(smp, "postino_active_deliveries") is None
    finally:
        for pid in qmgr:
            os.kill(pid, signal.SIGCONT)
    h.wait_until(lambda: "postino_qmgr_up 1" in _try_scrape(mport), timeout=30,
                 what="the gauges back")
    assert p.pids(("metrics",))["metrics"]
