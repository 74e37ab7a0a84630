"""The log is Postfix-shaped enough for pflogsumm to count it right."""
import re
import subprocess

SENDER = "s@sender.test"


def _totals(text):
    out = {}
    for key in ("received", "delivered", "deferred", "bounced"):
        m = re.search(r"^\s*(\d+)\s+%s\b" % key, text, re.M)
        assert m, "pflogsumm printed no %r count:\n%s" % (key, text)
        out[key] = int(m.group(1))
    m = re.search(r"deferred\s+\((\d+)\s+deferrals?\)", text)
    out["deferrals"] = int(m.group(1)) if m else 0
    return out


def test_pflogsumm_counts(relay_postino, sink):
    p = relay_postino
    sink.on_rcpt("bad@example.test", forever="550 5.1.1 no such user")
    sink.on_rcpt("slow@example.test", ["451 4.3.0 later"])
    qids = [p.send(SENDER, "ok%d@example.test" % i) for i in range(5)]
    qids.append(p.send(SENDER, "bad@example.test"))
    qids.append(p.send(SENDER, "slow@example.test"))
    for q in qids:
        p.wait_removed(q, timeout=30)
    dsn = sink.wait_for(lambda m: m.mail_from == "")[0]
    # The DSN itself is delivered too (a 7th status=sent); wait for its removal.
    p.wait_log(r"postino/smtp\[\d+\]: \w+: to=<%s>, .*status=sent" % SENDER)
    p.wait_log(r": removed", count=8)
    r = subprocess.run(["/usr/sbin/pflogsumm", "--syslog-name=postino", p.maillog],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    t = _totals(r.stdout)
    assert t == {"received": 7, "delivered": 7, "deferred": 1, "bounced": 1, "deferrals": 1}, \
        "%s\n%s" % (t, r.stdout)
    assert dsn.msg.get_content_type() == "multipart/report"
