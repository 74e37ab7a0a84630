#!/usr/bin/python3
"""scale.py - postino with a very large deferred queue (issue #12, "A
million queued messages"); `make scale`, not in CI.

How the queue is filled: one message goes in through smtpd and is
deferred (its relay does not listen); postino is stopped and that queue
file is copied N-1 times under new queue ids, each copy's recipient on one
of D domains (postino_harness.clone_queue_file). A queue file names no id
inside, so each copy is byte for byte what smtpd would have written for
that recipient. This is the fastest honest way: injection through smtpd
runs at a few thousand messages a second (1M would take several minutes
and measure smtpd, which `make bench` does), while what this script
measures is qmgr with the files on disk. qmgr then finds them at its
start, as files that came while it was down, and indexes them.

Then it measures, printing one line each and writing scale.json into
--out: the start-up adoption of the N files, `queue stats`, `queue
summary`, `queue list -d DOMAIN` (N/D messages), qmgr's RSS, a clean
restart, a rebuild after kill -9 (and how long `queue stats` takes to
answer during it), hold/release/delete of one domain's messages, and the
delivery rate once a receiver (Postfix's smtp-sink) listens and the queue
is flushed.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import postino_harness as h  # noqa: E402

SENDER = "s@sender.test"


def domain(i, d):
    return "d%07d.test" % (i % d)


def timed(fn):
    t = time.monotonic()
    r = fn()
    return time.monotonic() - t, r


def qmgr_rss_kb(p):
    pids = p.pids(("qmgr",)).get("qmgr", [])
    for pid in pids:
        with open("/proc/%d/status" % pid) as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1])
    return 0


def wait_log_after(p, rx, n_before, timeout):
    """Wait for the (n_before+1)-th line matching rx."""
    h.wait_until(lambda: len(p.log_lines(rx)) > n_before, timeout=timeout, interval=0.2,
                 what=rx)


def cli_ok(p, *args, timeout=600):
    return p.cli(*args, check=True, timeout=timeout)


def measure_delivery(p, port, left, say, res):
    """smtp-sink listens where the relay was refused; flush; time to empty."""
    sink = subprocess.Popen(["smtp-sink", "-c", "-u", "nobody", "127.0.0.1:%d" % port, "1000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        n_sent = len(p.log_lines(r"status=sent"))
        t0 = time.monotonic()
        cli_ok(p, "queue", "flush")
        h.wait_until(lambda: not p.queue_files(), timeout=3600, interval=0.5,
                     what="an empty queue")
        t = time.monotonic() - t0
        sent = len(p.log_lines(r"status=sent")) - n_sent
        say("deliver_rate", left / t, "delivery once the receiver listens: %.0f msg/s")
        res["delivered"] = sent
    finally:
        sink.terminate()
        sink.wait()


def run(args):
    res = {"n": args.messages, "domains": args.domains, "date": time.strftime("%Y-%m-%d"),
           "machine": "%s, %d cores" % (os.uname().machine, os.cpu_count())}
    why = h.ensure_mail_owner()
    if why:
        sys.exit("scale: %s" % why)
    port = h.free_port()
    p = h.Postino(sink_port=port, main={
        "relayhost": "[127.0.0.1]:%d" % port,
        "minimal_backoff_time": "4h", "maximal_backoff_time": "4h",
        "queue_run_delay": "1h", "destination_suspend_time": "1s"})
    p.start()
    report = []

    def say(key, value, fmt):
        res[key] = value
        line = fmt % value
        report.append(line)
        print(line, flush=True)

    try:
        qid = p.send(SENDER, "user@" + domain(0, args.domains))
        p.wait_log(r"%s: to=.*status=deferred" % qid)
        p.stop()
        t, _ = timed(lambda: p.clone_queue_file(
            qid, args.messages - 1, lambda i: domain(i + 1, args.domains)))
        say("fill_s", t, "fill (copy %d queue files): %%.1f s" % args.messages)

        idx_rx = r"qmgr\[\d+\]: queue index: %d messages" % args.messages
        t, _ = timed(lambda: (p.start(timeout=120), wait_log_after(p, idx_rx, 0, 3600)))
        say("adopt_s", t, "start, adopting the files: %.1f s")

        t, r = timed(lambda: cli_ok(p, "queue", "stats"))
        say("stats_s", t, "queue stats: %.2f s")
        t, r = timed(lambda: cli_ok(p, "queue", "summary"))
        say("summary_s", t, "queue summary: %.2f s")
        dom = domain(42, args.domains)
        t, r = timed(lambda: cli_ok(p, "queue", "list", "-d", dom))
        k = len(re.findall(r"^[0-9A-F]{17}", r.stdout, re.M))
        res["k"] = k
        say("list_d_s", t, "queue list -d (%d messages): %%.3f s" % k)
        say("qmgr_rss_mb", qmgr_rss_kb(p) / 1024, "qmgr RSS: %.0f MB")

        t, _ = timed(lambda: cli_ok(p, "queue", "hold", "-d", dom))
        say("hold_s", t, "queue hold -d (%d): %%.3f s" % k)
        t, _ = timed(lambda: cli_ok(p, "queue", "release", "-d", dom))
        say("release_s", t, "queue release -d (%d): %%.3f s" % k)

        n_idx = len(p.log_lines(idx_rx))
        p.stop(timeout=600)
        t, _ = timed(lambda: (p.start(timeout=120), wait_log_after(p, idx_rx, n_idx, 3600)))
        say("restart_s", t, "clean restart: %.1f s")

        p.kill_all()
        n_rb = len(p.log_lines(r"queue index rebuilt: "))
        t0 = time.monotonic()
        p.start(timeout=120)
        p.wait_log(r"rebuilding it from the queue files", timeout=60)
        ts, r = timed(lambda: cli_ok(p, "queue", "stats", timeout=600))
        say("stats_during_rebuild_s", ts, "queue stats during the rebuild: %.2f s")
        res["stats_during_rebuild"] = r.stdout.splitlines()[0] if r.stdout else ""
        wait_log_after(p, r"queue index rebuilt: ", n_rb, 3600)
        say("rebuild_s", time.monotonic() - t0, "rebuild after kill -9: %.1f s")

        t, _ = timed(lambda: cli_ok(p, "queue", "delete", "-d", dom))
        say("delete_s", t, "queue delete -d (%d): %%.3f s" % k)
        left = args.messages - k
        if not args.no_delivery:
            measure_delivery(p, port, left, say, res)
        p.stop()
    finally:
        try:
            p.stop(timeout=600)
        except Exception:
            pass
        if not args.keep:
            p.cleanup()
    finish(args, res, report)


def finish(args, res, report):
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "scale-%d.json" % args.messages), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(args.out, "scale-%d.txt" % args.messages), "w") as f:
        f.write("\n".join(report) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--messages", type=int, default=1000000)
    ap.add_argument("--domains", type=int, default=10000)
    ap.add_argument("--out", default="scale-out")
    ap.add_argument("--keep", action="store_true", help="keep the spool for inspection")
    ap.add_argument("--no-delivery", action="store_true",
                    help="skip the delivery phase (at 1M it takes many minutes)")
    run(ap.parse_args())


if __name__ == "__main__":
    main()
