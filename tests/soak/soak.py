#!/usr/bin/python3
"""soak.py - postino under mixed load and repeated crashes, for a long time.

What it does (issue #12, "Soak"):
  * several senders inject mail without pause: 1-50 recipients per message,
    4 KB - 1 MB, to many domains served by dnsmasq and spread over five
    aiosmtpd receivers on 127.0.0.21-25; the receiver on .25 misbehaves
    (every "flaky-" recipient gets 451 the first time, every "bad-" one 550);
  * every --kill-every seconds a random supervised daemon (smtpd, qmgr,
    delivery, bounce, anvil) is killed with SIGKILL, every --reload-every
    seconds `postino reload` runs;
  * every --sample-every seconds the RSS and open descriptors of each daemon
    are sampled from /proc.
Afterwards it waits for the queue to drain and checks, against what the
receivers saw: every recipient of every message answered 250 was delivered
or bounced back to its sender (lost = 0), how often one was delivered twice
(duplicates: only messages in flight at a kill may repeat), no file left in
the spool, and descriptors and memory flat. It writes soak.json, soak.txt and
(with matplotlib) soak.png into --out and exits 1 when something was lost,
left over or grew.
"""
import argparse
import json
import os
import random
import re
import signal
import smtplib
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

from aiosmtpd.controller import Controller  # noqa: E402

import postino_harness as h  # noqa: E402

GOOD_IPS = ["127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.24"]
BAD_IP = "127.0.0.25"                    # the misbehaving receiver
DSN_IP = "127.0.0.26"                    # the senders' own domains: DSNs land here
RCPT_DOMAINS = 40
SENDER_DOMAINS = 4
KILLABLE = ("smtpd", "qmgr", "delivery", "bounce", "anvil")
MSGID_RX = re.compile(rb"^Message-ID:\s*<([^>]+)>", re.I | re.M)
FINAL_RX = re.compile(rb"^Final-Recipient:\s*rfc822;\s*<?([^>\s]+)>?", re.I | re.M)
ORIG_ID_RX = re.compile(rb"^Message-ID:\s*<(soak-[^>]+)>", re.I | re.M)


# ------------------------------------------------------------- receivers

class Ledger:
    """What the receivers saw, by (message-id, recipient); nothing else is
    kept (an hour of 1 MB messages does not fit in memory)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.delivered = {}         # (msgid, rcpt) -> times
        self.bounced = set()        # (msgid, rcpt) named by a DSN
        self.dsns = 0
        self.flaky_seen = set()
        self.messages = 0

    def deliver(self, msgid, rcpts):
        with self.lock:
            self.messages += 1
            for r in rcpts:
                k = (msgid, r.lower())
                self.delivered[k] = self.delivered.get(k, 0) + 1

    def bounce(self, content):
        m = ORIG_ID_RX.findall(content)
        finals = [f.decode(errors="replace").lower() for f in FINAL_RX.findall(content)]
        with self.lock:
            self.dsns += 1
            for mid in m:
                for f in finals:
                    self.bounced.add((mid.decode(), f))


class Handler:
    def __init__(self, ledger, ip):
        self.ledger, self.ip = ledger, ip

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0].lower()
        if self.ip == BAD_IP:
            if local.startswith("bad-"):
                return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
            if local.startswith("flaky-"):
                with self.ledger.lock:
                    first = address.lower() not in self.ledger.flaky_seen
                    self.ledger.flaky_seen.add(address.lower())
                if first:
                    return "451 4.3.0 <%s>: try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        content = envelope.content
        if self.ip == DSN_IP:
            if envelope.mail_from in ("", "<>"):
                self.ledger.bounce(content)
            return "250 2.0.0 Ok"
        m = MSGID_RX.search(content[:16384])
        if m:
            self.ledger.deliver(m.group(1).decode(errors="replace"), envelope.rcpt_tos)
        return "250 2.0.0 Ok"


def start_receivers(ledger):
    ips = GOOD_IPS + [BAD_IP, DSN_IP]
    port = h.free_port_all(ips)
    ctls = []
    for ip in ips:
        c = Controller(Handler(ledger, ip), hostname=ip, port=port, ready_timeout=10,
                       decode_data=False, data_size_limit=0,
                       server_hostname="soak-%s.test" % ip)
        c.start()
        ctls.append(c)
    return port, ctls


def dns_records():
    recs = []
    for i in range(RCPT_DOMAINS):
        d = "d%d.test" % i
        ip = BAD_IP if i % 8 == 7 else GOOD_IPS[i % len(GOOD_IPS)]
        recs += [("mx", d, "mx.%s" % d, 10), ("a", "mx.%s" % d, ip)]
    for i in range(SENDER_DOMAINS):
        d = "s%d.test" % i
        recs += [("mx", d, "mx.%s" % d, 10), ("a", "mx.%s" % d, DSN_IP)]
    return recs


# ------------------------------------------------------------- load

class Load:
    def __init__(self, p, seed, rate=0.0, senders=1):
        self.p = p
        self.interval = senders / rate if rate > 0 else 0.0   # per sender
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.acked = {}            # msgid -> [rcpts]
        self.refused = 0           # 4xx/5xx or lost connections (not acknowledged)
        self.seq = 0
        self.bytes = 0
        self.stop = threading.Event()

    def _size(self, rng):
        x = rng.random()
        if x < 0.70:
            return rng.randint(4 << 10, 16 << 10)
        if x < 0.95:
            return rng.randint(16 << 10, 256 << 10)
        return rng.randint(512 << 10, 1 << 20)

    def _rcpts(self, rng, n):
        out = []
        for _ in range(n):
            d = rng.randrange(RCPT_DOMAINS)
            with self.lock:
                self.seq += 1
                k = self.seq
            kind = ""
            if d % 8 == 7:
                kind = rng.choice(["", "", "flaky-", "bad-"])
            out.append("%su%d@d%d.test" % (kind, k, d))
        return out

    def sender(self, idx):
        rng = random.Random(self.rng.random())
        mail_from = "sender%d@s%d.test" % (idx, idx % SENDER_DOMAINS)
        conn = None
        sent_on_conn = 0
        next_at = time.time()
        while not self.stop.is_set():
            if self.interval:
                next_at += self.interval
                if self.stop.wait(max(0.0, next_at - time.time())):
                    break
            n = 50 if rng.random() < 0.05 else rng.randint(1, 5)
            rcpts = self._rcpts(rng, n)
            with self.lock:
                self.seq += 1
                msgid = "soak-%d-%d@s.test" % (idx, self.seq)
            size = self._size(rng)
            line = ("x" * 75 + "\r\n")
            body = line * max(1, size // len(line))
            # To: folded one address per line: 50 of them on one line would
            # pass the 998-octet limit (RFC 5322 2.1.1), and receivers refuse
            # such lines (aiosmtpd: 500 Line too long)
            text = ("From: <%s>\r\nTo: %s\r\nSubject: soak %s\r\nMessage-ID: <%s>\r\n\r\n%s"
                    % (mail_from, ",\r\n ".join("<%s>" % r for r in rcpts), msgid, msgid, body))
            try:
                if conn is None:
                    conn = smtplib.SMTP("127.0.0.1", self.p.port, timeout=60)
                    conn.ehlo("soak.test")
                    sent_on_conn = 0
                code, _ = conn.mail(mail_from)
                if code != 250:
                    raise smtplib.SMTPSenderRefused(code, b"", mail_from)
                ok = []
                for r in rcpts:
                    code, _ = conn.rcpt(r)
                    if code in (250, 251):
                        ok.append(r)
                if not ok:
                    conn.rset()
                    raise smtplib.SMTPRecipientsRefused({})
                code, _ = conn.data(text.encode())
                if code == 250:
                    with self.lock:
                        self.acked[msgid] = [r.lower() for r in ok]
                        self.bytes += len(text)
                else:
                    with self.lock:
                        self.refused += 1
                sent_on_conn += 1
                if sent_on_conn >= rng.randint(1, 20):
                    conn.quit()
                    conn = None
            except (smtplib.SMTPException, OSError):
                # a killed smtpd, a 421, a refused command: not acknowledged
                with self.lock:
                    self.refused += 1
                try:
                    if conn is not None:
                        conn.close()
                except OSError:
                    pass
                conn = None
                time.sleep(0.2)
        if conn is not None:
            try:
                conn.quit()
            except (smtplib.SMTPException, OSError):
                pass


# ------------------------------------------------------------- chaos, samples

def daemon_sample(p):
    """{daemon: (rss_kb, fds)} summed over the processes of each daemon."""
    out = {}
    for name, pids in p.pids().items():
        rss = fds = 0
        for pid in pids:
            try:
                with open("/proc/%d/status" % pid) as f:
                    for ln in f:
                        if ln.startswith("VmRSS:"):
                            rss += int(ln.split()[1])
                fds += len(os.listdir("/proc/%d/fd" % pid))
            except (OSError, ValueError):
                pass
        out[name] = (rss, fds)
    return out


def fd_kinds(p):
    """{daemon: {kind: count}} of what the open descriptors are (socket,
    pipe, a file's directory...), to tell a leak from a connection pool."""
    out = {}
    for name, pids in p.pids().items():
        kinds = {}
        for pid in pids:
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                k = t.split(":")[0] if ":" in t and not t.startswith("/") else os.path.dirname(t)
                kinds[k] = kinds.get(k, 0) + 1
        out[name] = kinds
    return out


def qmgr_breakdown(p):
    """qmgr's memory by mapping kind, from /proc/PID/smaps (KB of RSS and,
    for the heap and anonymous maps, of private dirty pages): [heap],
    anonymous maps (malloc arenas, large allocations), Berkeley DB region
    files (__db.*), other files (mmapped databases, libraries) and the
    stack, so a growth can be told apart by where it lives."""
    pids = p.pids(("qmgr",)).get("qmgr", [])
    if not pids:
        return None
    pid = pids[0]
    kinds = {}
    cur = None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for ln in f:
                head = ln.split()
                if not head:
                    continue
                if not head[0].endswith(":"):
                    path = head[5] if len(head) > 5 else ""
                    if path == "[heap]":
                        cur = "heap"
                    elif path == "":
                        cur = "anon"
                    elif os.path.basename(path).startswith("__db."):
                        cur = "bdb_region"
                    elif path.startswith("["):
                        cur = path.strip("[]")
                    elif ".so" in os.path.basename(path):
                        cur = "libs"
                    else:
                        cur = "files"
                    continue
                if head[0] == "Rss:":
                    kinds[cur] = kinds.get(cur, 0) + int(head[1])
                elif head[0] == "Private_Dirty:" and cur in ("heap", "anon"):
                    kinds[cur + "_dirty"] = kinds.get(cur + "_dirty", 0) + int(head[1])
    except (OSError, ValueError, IndexError):
        return None
    kinds["pid"] = pid
    return kinds


def chaos(p, args, stop, events, rng):
    """A kill every --kill-every seconds, a reload every --reload-every;
    0 turns either off (a steady run, to watch memory without restarts)."""
    t0 = time.time()
    never = float("inf")
    next_kill = t0 + args.kill_every if args.kill_every > 0 else never
    next_reload = t0 + args.reload_every if args.reload_every > 0 else never
    while not stop.wait(0.5):
        now = time.time()
        if now >= next_kill:
            name = rng.choice(KILLABLE)
            pids = p.pids((name,)).get(name, [])
            if pids:
                victim = rng.choice(pids)
                try:
                    os.kill(victim, signal.SIGKILL)
                    events.append((round(now - t0, 1), "kill -9 %s[%d]" % (name, victim)))
                except ProcessLookupError:
                    pass
            next_kill += args.kill_every
        if now >= next_reload:
            r = p.cli("reload")
            events.append((round(now - t0, 1), "reload rc=%d" % r.returncode))
            next_reload += args.reload_every


def sampler(p, args, stop, samples, t0, breakdown=None):
    while True:
        now = round(time.time() - t0, 1)
        samples.append((now, daemon_sample(p)))
        if breakdown is not None:
            breakdown.append((now, qmgr_breakdown(p)))
        if stop.wait(args.sample_every):
            return


# ------------------------------------------------------------- verdict

def spool_leftovers(p):
    """Files left in the spool's message directories after the drain."""
    left = []
    for sub in ("queue", "incoming", "active", "deferred", "hold", "maildrop"):
        d = os.path.join(p.spool, sub)
        for root, _, files in os.walk(d):
            left += [os.path.join(root, f) for f in files]
    return left


def flat(samples, warm):
    """Per daemon: first sample after warm-up and the last one. Growth is
    judged between them (a daemon killed and restarted starts afresh, so
    its figures can only be lower)."""
    after = [s for s in samples if s[0] >= warm] or samples
    first, last = after[0][1], samples[-1][1]
    out = {}
    for name in sorted(set(first) | set(last)):
        f = first.get(name, (0, 0))
        l = last.get(name, (0, 0))
        out[name] = {"rss_kb_first": f[0], "rss_kb_last": l[0],
                     "fds_first": f[1], "fds_last": l[1]}
    return out


def grew(fl):
    bad = []
    for name, v in fl.items():
        if v["fds_last"] > v["fds_first"] + 16 and v["fds_first"]:
            bad.append("%s descriptors %d -> %d" % (name, v["fds_first"], v["fds_last"]))
        if v["rss_kb_first"] and v["rss_kb_last"] > 2 * v["rss_kb_first"] + 32768:
            bad.append("%s RSS %d -> %d KB" % (name, v["rss_kb_first"], v["rss_kb_last"]))
    return bad


def plot(samples, events, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = sorted({n for _, s in samples for n in s})
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for n in names:
        xs = [t / 60 for t, s in samples if n in s]
        ax1.plot(xs, [s[n][0] / 1024 for t, s in samples if n in s], label=n)
        ax2.plot(xs, [s[n][1] for t, s in samples if n in s], label=n)
    for t, what in events:
        if what.startswith("kill"):
            for ax in (ax1, ax2):
                ax.axvline(t / 60, color="grey", alpha=0.25, linewidth=0.8)
    ax1.set_ylabel("RSS (MB)")
    ax2.set_ylabel("open descriptors")
    ax2.set_xlabel("minutes (grey: a daemon killed with SIGKILL)")
    ax1.legend(fontsize=7, ncol=4)
    ax1.set_title("postino soak: memory and descriptors per daemon")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    return True


# ------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=3600, help="length of the load")
    ap.add_argument("--kill-every", type=float, default=60, help="0: no kills")
    ap.add_argument("--reload-every", type=float, default=300, help="0: no reloads")
    ap.add_argument("--sample-every", type=float, default=60)
    ap.add_argument("--senders", type=int, default=4)
    ap.add_argument("--rate", type=float, default=20.0,
                    help="messages per second offered by all senders together (0: flat out)")
    ap.add_argument("--drain", type=int, default=300, help="seconds allowed to drain")
    ap.add_argument("--out", default="soak-out")
    ap.add_argument("--seed", type=int, default=int(time.time()))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    why = h.ensure_mail_owner()
    if why:
        sys.exit("soak: %s" % why)

    workdir = h.make_tmpdir("postino-soak-")
    ledger = Ledger()
    port, ctls = start_receivers(ledger)
    dns = h.DnsServer(workdir, dns_records()).start()
    p = h.Postino(sink_port=port, dns_port=dns.port, main={
        "maximal_queue_lifetime": "1d", "bounce_queue_lifetime": "1d",
        "default_destination_concurrency_limit": "10",
        "smtpd_client_connection_count_limit": "0",
        "smtpd_client_connection_rate_limit": "0",
        "smtpd_client_message_rate_limit": "0",
        # the harness's instance has no local delivery agent: notices for
        # postmaster (a bounce that could not be returned) go to the
        # senders' receiver, which counts them
        "2bounce_notice_recipient": "postmaster@s0.test",
    })
    load = Load(p, args.seed, args.rate, args.senders)
    rng = random.Random(args.seed)
    events, samples, breakdown = [], [], []
    stop_chaos = threading.Event()
    ok = False
    try:
        p.start()
        t0 = time.time()
        print("soak: %d s of load, seed %d, postino in %s" % (args.seconds, args.seed, p.dir),
              flush=True)
        threads = [threading.Thread(target=load.sender, args=(i,), daemon=True)
                   for i in range(args.senders)]
        threads.append(threading.Thread(target=chaos, daemon=True,
                                        args=(p, args, stop_chaos, events, rng)))
        samp = threading.Thread(target=sampler, daemon=True,
                                args=(p, args, stop_chaos, samples, t0, breakdown))
        for t in threads + [samp]:
            t.start()
        while time.time() - t0 < args.seconds:
            time.sleep(min(10, args.seconds - (time.time() - t0)) if args.seconds > 10 else 1)
            with load.lock:
                n = len(load.acked)
            print("soak: %4.0fs acknowledged %d, receivers saw %d messages, %d DSNs" % (
                time.time() - t0, n, ledger.messages, ledger.dsns), flush=True)
        load.stop.set()
        stop_chaos.set()
        for t in threads:
            t.join(120)
        # every daemon back up (a kill in the last second), then the drain
        h.wait_until(lambda: p.master_pid() and h.smtp_port_accepts(p.port), timeout=60,
                     what="postino back up after the last kill")
        p.cli("queue", "flush")
        expected = {(mid, r) for mid, rs in load.acked.items() for r in rs}

        def settled():
            with ledger.lock:
                done = all(k in ledger.delivered or k in ledger.bounced for k in expected)
            return done and not p.queue_files()
        try:
            h.wait_until(settled, timeout=args.drain, interval=2, what="the queue to drain")
        except TimeoutError as e:
            print("soak: %s" % e, flush=True)
        # idle for a moment: cached SMTP sessions close (the harness's
        # smtp_connection_cache_time_limit is 1s) and qmgr closes its idle
        # agent connections (10 s), then the last sample
        time.sleep(15)
        samples.append((round(time.time() - t0, 1), daemon_sample(p)))
        kinds = fd_kinds(p)
        p.stop()
        with ledger.lock:
            lost = sorted(k for k in expected if k not in ledger.delivered and k not in ledger.bounced)
            dups = sum(v - 1 for k, v in ledger.delivered.items() if k in expected and v > 1)
            dup_rcpts = sum(1 for k, v in ledger.delivered.items() if k in expected and v > 1)
            delivered = sum(1 for k in expected if k in ledger.delivered)
            bounced = sum(1 for k in expected if k not in ledger.delivered and k in ledger.bounced)
            # only "bad-" recipients are refused by a receiver: any other
            # bounce is postino's fault (or the load's, as a too-long line was)
            wrong = sorted(k for k in expected if k not in ledger.delivered and
                           k in ledger.bounced and not k[1].startswith("bad-"))
        left = spool_leftovers(p)
        fl = flat(samples, warm=min(60, args.seconds / 4))
        growth = grew(fl)
        kills = sum(1 for _, e in events if e.startswith("kill"))
        reloads = sum(1 for _, e in events if e.startswith("reload"))
        result = {
            "seconds": args.seconds, "seed": args.seed, "senders": args.senders,
            "rate": args.rate,
            "messages_acknowledged": len(load.acked), "recipients_acknowledged": len(expected),
            "megabytes_acknowledged": round(load.bytes / 1e6, 1),
            "not_acknowledged": load.refused,
            "delivered": delivered, "bounced": bounced, "lost": len(lost),
            "bounced_wrongly": len(wrong), "bounced_wrongly_sample": wrong[:20],
            "duplicate_deliveries": dups, "recipients_duplicated": dup_rcpts,
            "kills": kills, "reloads": reloads, "spool_leftovers": len(left),
            "daemons": fl, "growth": growth, "descriptors_at_end": kinds, "events": events,
            "lost_sample": lost[:20], "leftover_sample": left[:20],
        }
        with open(os.path.join(args.out, "soak.json"), "w") as f:
            json.dump(result, f, indent=1)
        with open(os.path.join(args.out, "samples.json"), "w") as f:
            json.dump(samples, f)
        with open(os.path.join(args.out, "qmgr_smaps.json"), "w") as f:
            json.dump(breakdown, f)
        png = plot(samples, events, os.path.join(args.out, "soak.png"))
        lines = [
            "soak: %d s, %d senders, seed %d: %d messages (%d recipients, %.1f MB) acknowledged, "
            "%d attempts not acknowledged" % (args.seconds, args.senders, args.seed,
                                              len(load.acked), len(expected), load.bytes / 1e6,
                                              load.refused),
            "soak: delivered %d, bounced %d (%d of them not refused by a receiver), lost %d; "
            "%d duplicate deliveries (%d recipients)"
            % (delivered, bounced, len(wrong), len(lost), dups, dup_rcpts),
            "soak: %d daemons killed with SIGKILL, %d reloads; %d files left in the spool"
            % (kills, reloads, len(left)),
        ]
        for name, v in fl.items():
            lines.append("soak: %-9s RSS %6d -> %6d KB, descriptors %3d -> %3d" % (
                name, v["rss_kb_first"], v["rss_kb_last"], v["fds_first"], v["fds_last"]))
        if png:
            lines.append("soak: plot in %s" % os.path.join(args.out, "soak.png"))
        ok = not lost and not wrong and not left and not growth and len(expected) > 0
        lines.append("soak: %s" % ("PASS" if ok else "FAIL: " + "; ".join(
            (["lost %d (e.g. %s)" % (len(lost), lost[:3])] if lost else []) +
            (["bounced wrongly %d (e.g. %s)" % (len(wrong), wrong[:3])] if wrong else []) +
            (["spool leftovers %s" % left[:3]] if left else []) +
            growth + ([] if expected else ["nothing acknowledged"]))))
        text = "\n".join(lines)
        print(text, flush=True)
        with open(os.path.join(args.out, "soak.txt"), "w") as f:
            f.write(text + "\n")
    finally:
        load.stop.set()
        stop_chaos.set()
        p.stop()
        dns.stop()
        for c in ctls:
            c.stop()
        if ok:
            p.cleanup()
        else:
            print("soak: kept %s for inspection" % p.dir)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
