"""The event stream (issue #11): every daemon that sees a recipient event
sends it to the one `events` daemon, which writes one JSON object per line
to event_log (rotated by size and age, reopened on reload) and POSTs the
same lines in NDJSON batches to event_webhook_url from a durable spool.

Every event type is produced by a scenario with real peers (aiosmtpd as
the receiving MX, the feedback agent reading a DSN and an ARF report built
with Python's email package), and every line is checked against
docs/events.schema.json by python3-jsonschema. The webhook is a plain
http.server that the test stops mid-run: once it is back, every event
arrives (at least once; duplicates are counted, not failed)."""
import http.server
import json
import os
import re
import threading
import time
from email.mime.base import MIMEBase
from email.mime.message import MIMEMessage
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

import jsonschema
import pytest

import postino_harness as h
from test_feedback import BOUNCE_DOMAIN, FEEDBACK_ROW, _fields, _send_original, _verp

SENDER = "news@sender.test"
EVENTS_ROW = "events unix - - n - 1 events"
SCHEMA_PATH = os.path.join(h.REPO, "docs", "events.schema.json")


@pytest.fixture(scope="module")
def validator():
    with open(SCHEMA_PATH) as f:
        schema = json.load(f)
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


class Webhook:
    """An HTTP receiver that keeps the lines of every POST; stop() and
    start() again on the same port (a webhook that goes away mid-run)."""

    def __init__(self):
        self.port = h.free_port()
        self.lines = []
        self.posts = 0
        self.host = None   # the Host fields of the last POST
        self.lock = threading.Lock()
        self.httpd = None

    def start(self):
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                hook.host = self.headers.get_all("Host")
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n).decode()
                ok = (self.path == "/hook" and
                      self.headers.get("Content-Type") == "application/x-ndjson")
                if ok:
                    with hook.lock:
                        hook.posts += 1
                        hook.lines += [ln for ln in body.split("\n") if ln]
                self.send_response(200 if ok else 400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None

    def received(self):
        with self.lock:
            return list(self.lines)


@pytest.fixture
def webhook():
    w = Webhook().start()
    yield w
    w.stop()


def _read_events(path):
    try:
        with open(path) as f:
            return [json.loads(ln) for ln in f.read().splitlines() if ln]
    except FileNotFoundError:
        return []


def _lines(path):
    try:
        with open(path) as f:
            return [ln for ln in f.read().splitlines() if ln]
    except FileNotFoundError:
        return []


def _wait_event(path, pred, what, timeout=40):
    return h.wait_until(lambda: [e for e in _read_events(path) if pred(e)] or None,
                        timeout=timeout, what=what)


def _instance(postino_factory, workdir, **main):
    # the events daemon runs as the mail owner: its directory is the owner's
    logdir = h.mail_owner_dir(os.path.join(workdir, "log"))
    cfg = {"event_log": os.path.join(logdir, "events.json"),
           "feedback_domains": BOUNCE_DOMAIN}
    cfg.update(main)
    p = postino_factory(main=cfg, master_extra=[FEEDBACK_ROW, EVENTS_ROW])
    return p, cfg["event_log"]


def _dsn_report(rcpt, orig):
    dsn = MIMEMultipart("report", report_type="delivery-status")
    dsn["From"] = "MAILER-DAEMON@mx1.example.test"
    dsn["To"] = _verp(rcpt)
    dsn["Subject"] = "Undelivered Mail Returned to Sender"
    dsn.attach(MIMEText("<%s>: user unknown\n" % rcpt))
    status = MIMEBase("message", "delivery-status")
    status.set_payload([
        _fields([("Reporting-MTA", "dns; mx1.example.test")]),
        _fields([("Final-Recipient", "rfc822; %s" % rcpt), ("Action", "failed"),
                 ("Status", "5.1.1"),
                 ("Diagnostic-Code", "smtp; 550 5.1.1 <%s>: User unknown" % rcpt)])])
    dsn.attach(status)
    dsn.attach(MIMEText(orig.content.split(b"\r\n\r\n", 1)[0].decode() + "\n", "rfc822-headers"))
    return dsn


def _arf_report(rcpt, orig):
    arf = MIMEMultipart("report", report_type="feedback-report")
    arf["From"] = "feedback@arf.mail.example.test"
    arf["To"] = "fbl@" + BOUNCE_DOMAIN
    arf["Subject"] = "FW: news"
    arf.attach(MIMEText("This is an email abuse report.\n"))
    fr = MIMEBase("message", "feedback-report")
    fr.set_payload([_fields([
        ("Feedback-Type", "abuse"), ("User-Agent", "test/1.0"), ("Version", "1"),
        ("Original-Mail-From", "<%s>" % _verp(rcpt)), ("Original-Rcpt-To", "<%s>" % rcpt),
        ("Reported-Domain", "sender.test")])])
    arf.attach(fr)
    arf.attach(MIMEMessage(orig.msg))
    return arf


def test_every_event_type_valid_and_webhook_loses_nothing(postino_factory, sink, workdir,
                                                           validator, webhook):
    p, log = _instance(postino_factory, workdir, maximal_queue_lifetime="4s",
                       event_webhook_url="http://127.0.0.1:%d/hook" % webhook.port)
    # reception + delivery, while the webhook is up
    q_ok = p.send(SENDER, "ok@example.test")
    p.wait_removed(q_ok)
    _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q_ok, "delivery")
    h.wait_until(lambda: any(q_ok in ln and '"delivery"' in ln for ln in webhook.received()),
                 what="the delivery event at the webhook")
    assert webhook.host == ["127.0.0.1:%d" % webhook.port]

    webhook.stop()   # the webhook goes away mid-run: events wait in the spool
    sink.on_rcpt("later@example.test", ["451 4.3.0 try again later"])
    sink.on_rcpt("gone@example.test", forever="550 5.1.1 <gone@example.test>: User unknown")
    sink.on_rcpt("never@example.test", forever="451 4.7.1 never ready")
    q_tf = p.send(SENDER, "later@example.test")
    q_b = p.send(SENDER, "gone@example.test")
    q_x = p.send(SENDER, "never@example.test")
    h.wait_until(lambda: p.cli("suppress", "add", "blocked@example.test", "--reason",
                               "bad-mailbox").returncode == 0, what="qmgr's control socket")
    q_s = p.send(SENDER, "blocked@example.test")
    # an out-of-band bounce and a complaint into the feedback domain
    _, orig1 = _send_original(p, sink, "alice@example.test")
    q_oob = p.send("", _verp("alice@example.test"), raw=_dsn_report("alice@example.test", orig1)
                   .as_bytes())
    _, orig2 = _send_original(p, sink, "carol@example.test")
    q_fb = p.send("", "fbl@" + BOUNCE_DOMAIN, raw=_arf_report("carol@example.test", orig2)
                  .as_bytes())

    want = {
        "reception": lambda e: e.get("queue_id") == q_ok,
        "delivery": lambda e: e.get("queue_id") == q_ok,
        "transient_failure": lambda e: e.get("queue_id") == q_tf,
        "bounce": lambda e: e.get("queue_id") == q_b,
        "expiration": lambda e: e.get("queue_id") == q_x,
        "suppression": lambda e: e.get("queue_id") == q_s,
        "oob_bounce": lambda e: e.get("queue_id") == q_oob,
        "feedback": lambda e: e.get("queue_id") == q_fb,
    }
    got = {}
    for t, pred in want.items():
        got[t] = _wait_event(log, lambda e, t=t, pred=pred: e["type"] == t and pred(e), t)[0]
    p.wait_removed(q_x, timeout=40)

    # the facts each type carries
    r = got["reception"]
    assert (r["recipient"], r["sender"], r["client_ip"]) == ("ok@example.test", SENDER, "127.0.0.1")
    assert r["message_id"].startswith("<") and r["size"] > 0
    d = got["delivery"]
    assert d["dsn"] == "2.0.0" and d["reply_code"] == 250 and d["attempt"] == 1
    assert d["remote_ip"].startswith("127.0.0.") and d["site"] and d["delays"].count("/") == 3
    assert d["message_id"] == r["message_id"] and d["size"] == r["size"]
    assert "source_address" not in d, "no source pool: the kernel chose the address"
    tf = got["transient_failure"]
    assert (tf["reply_code"], tf["dsn"], tf["recipient"]) == (451, "4.3.0", "later@example.test")
    assert "try again later" in tf["reply"] and tf["category"]
    b = got["bounce"]
    assert (b["reply_code"], b["dsn"], b["category"]) == (550, "5.1.1", "bad-mailbox")
    x = got["expiration"]
    assert (x["dsn"], x["category"], x["recipient"]) == ("4.4.7", "message-expired",
                                                          "never@example.test")
    s = got["suppression"]
    assert (s["dsn"], s["recipient"]) == ("5.7.1", "blocked@example.test")
    assert "recipient suppressed" in s["reply"]
    o = got["oob_bounce"]
    assert (o["recipient"], o["dsn"], o["category"]) == ("alice@example.test", "5.1.1",
                                                         "bad-mailbox")
    f = got["feedback"]
    assert (f["recipient"], f["report_type"], f["category"]) == ("carol@example.test", "abuse",
                                                                 "spam-related")

    # every line of the file is valid against the documented schema
    lines = _lines(log)
    for ln in lines:
        validator.validate(json.loads(ln))
    assert p.log_lines(r"event webhook http://127\.0\.0\.1:%d/hook: .*retrying" % webhook.port)

    # the webhook comes back: every event arrives, none lost
    webhook.start()
    h.wait_until(lambda: set(_lines(log)) <= set(webhook.received()), timeout=60,
                 what="every event at the webhook")
    p.wait_log(r"event webhook .* takes events again")
    seen = webhook.received()
    dups = len(seen) - len(set(seen))
    print("webhook: %d lines in %d POSTs, %d duplicates" % (len(seen), webhook.posts, dups))
    for ln in set(seen):
        validator.validate(json.loads(ln))
    h.wait_until(lambda: not [f for f in os.listdir(os.path.join(p.spool, "events"))
                              if f.startswith("B")], what="the webhook spool emptied")


def test_source_address_of_a_pool_delivery(postino_factory, sink, workdir, validator):
    """With a source pool the delivery and deferral events name the local
    address the connection was bound to, the one the receiver saw."""
    from test_source_pools import _table
    logdir = h.mail_owner_dir(os.path.join(workdir, "log"))
    log = os.path.join(logdir, "events.json")
    p = postino_factory(main={"event_log": log, "relayhost": "[127.0.0.1]:%d" % sink.port},
                        master_extra=[EVENTS_ROW], start=False)
    p.set(source_address_maps=_table(p, "source_addresses",
                                      {"127.0.0.11": "helo=one.postino.test",
                                       "127.0.0.12": "helo=two.postino.test"}),
          source_pool_maps=_table(p, "source_pools", {"default": "127.0.0.11",
                                                      "two": "127.0.0.12"}),
          sender_dependent_source_pool_maps=_table(p, "source_pool_senders",
                                                   {"@two.test": "two"}))
    p.start()
    sink.on_rcpt("later@example.test", ["451 4.3.0 try again later"])
    q1 = p.send(SENDER, "ok@example.test")
    q2 = p.send("news@two.test", "later@example.test")
    d = _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q1, "delivery")[0]
    tf = _wait_event(log, lambda e: e["type"] == "transient_failure" and e["queue_id"] == q2,
                     "transient_failure")[0]
    assert sink.wait_to("ok@example.test")[0].peer == "127.0.0.11"
    assert d["source_address"] == "127.0.0.11", d
    assert tf["source_address"] == "127.0.0.12", tf
    for ln in _lines(log):
        validator.validate(json.loads(ln))


def test_webhook_spool_survives_restart(postino_factory, workdir, webhook):
    """Events spooled while the webhook is down are sent by the next run."""
    p, log = _instance(postino_factory, workdir,
                       event_webhook_url="http://127.0.0.1:%d/hook" % webhook.port)
    webhook.stop()
    q = p.send(SENDER, "ok@example.test")
    p.wait_removed(q)
    _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q, "delivery")
    p.stop()
    assert not webhook.received()
    webhook.start()
    p.start()
    h.wait_until(lambda: set(_lines(log)) <= set(webhook.received()), timeout=60,
                 what="the events of the last run at the webhook")
    assert len(_lines(log)) == 2   # reception + delivery


def test_rotation_by_size_and_reopen_on_reload(postino_factory, workdir, validator):
    p, log = _instance(postino_factory, workdir, event_log_rotate_size="1500",
                       event_log_rotate_count="2")
    files = [log, log + ".1", log + ".2"]

    def logged(q):
        return any(e["type"] == "delivery" and e["queue_id"] == q
                   for f in files for e in _read_events(f))
    # one at a time, so each message's events are in before the next:
    # 16 events of some 400 bytes would fill more than three files
    for i in range(8):
        q = p.send(SENDER, "r%d@example.test" % i)
        h.wait_until(lambda: logged(q), what="the delivery event of %s" % q)
    assert os.path.exists(log + ".1") and os.path.exists(log + ".2")
    assert not os.path.exists(log + ".3"), "more than event_log_rotate_count files kept"
    for f in files:
        assert 0 < os.path.getsize(f) <= 1500, f
        for ln in _lines(f):
            validator.validate(json.loads(ln))

    # an outside logrotate moves the file away; postino reload reopens it
    os.rename(log, log + ".moved")
    before = len(_lines(log + ".moved"))
    p.cli("reload", check=True)
    p.wait_log(r"event_log %s reopened" % re.escape(log))
    q = p.send(SENDER, "after@example.test")
    _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q, "the new file")
    assert len(_lines(log + ".moved")) == before


def test_rotation_by_age(postino_factory, workdir):
    p, log = _instance(postino_factory, workdir, event_log_rotate_interval="1s")
    q1 = p.send(SENDER, "a@example.test")
    _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q1, "first")
    time.sleep(1.5)   # older than event_log_rotate_interval by now
    q2 = p.send(SENDER, "b@example.test")
    _wait_event(log, lambda e: e["queue_id"] == q2, "second")
    old = [json.loads(ln) for ln in _lines(log + ".1")]
    assert any(e["queue_id"] == q1 for e in old)
    assert all(e["queue_id"] != q2 for e in old)


def test_no_events_configured_no_daemon_traffic(postino_factory, workdir):
    """Without event_log and event_webhook_url nothing is sent: the events
    service is not even listened to by anyone."""
    p = postino_factory(master_extra=[EVENTS_ROW])
    q = p.send(SENDER, "ok@example.test")
    p.wait_removed(q)
    assert not p.log_lines(r"events service")
    assert not os.listdir(os.path.join(p.spool, "events"))


def test_check_names_event_configuration_errors(postino_factory, workdir):
    """postino check: a webhook URL the events daemon cannot use, and
    events configured while master.cf runs no events service."""
    p = postino_factory(start=False)
    assert p.cli("check").returncode == 0, p.cli("check").stderr
    p.set(event_log=os.path.join(workdir, "events.json"))
    r = p.cli("check")
    assert r.returncode != 0 and "master.cf runs no events service" in r.stderr, r.stderr
    p.master_extra.append(EVENTS_ROW)
    p.set(event_webhook_url="https://127.0.0.1:8443/hook")
    r = p.cli("check")
    assert r.returncode != 0 and "https is not supported" in r.stderr, r.stderr
    assert "no events service" not in r.stderr
    p.set(event_webhook_url="http://127.0.0.1:8080/hook")
    r = p.cli("check")
    assert r.returncode == 0, r.stderr


def test_webhook_spool_survives_a_crash(postino_factory, workdir, webhook):
    """The events daemon killed (SIGKILL) with a batch in its spool: the
    one master starts next sends it."""
    p, log = _instance(postino_factory, workdir,
                       event_webhook_url="http://127.0.0.1:%d/hook" % webhook.port)
    webhook.stop()
    q = p.send(SENDER, "ok@example.test")
    _wait_event(log, lambda e: e["type"] == "delivery" and e["queue_id"] == q, "delivery")
    # a failed POST means a batch was sealed (and fsynced); a line still in
    # events/open was written before the kill, and the next daemon seals it
    p.wait_log(r"event webhook .*: no response .*retrying")
    h.wait_until(lambda: len(_lines(log)) == 2, what="both events")
    old = p.kill("events")
    assert old
    webhook.start()
    h.wait_until(lambda: set(_lines(log)) <= set(webhook.received()), timeout=60,
                 what="the spooled events at the webhook")
    assert set(p.pids(("events",)).get("events", [])).isdisjoint(old)
