#!/usr/bin/env python3
"""An alert storm, measured: `iiot run` with 10,000 simulated devices and two webhook channels
(`oncall` unlimited, `limited` at 30 a minute) on a local receiver started here. After a calm
phase, PUT /api/rules lowers temperature_high to 0.5 °C, so every device raises an alert within
one send interval; later the rule is removed and every alert resolves. Prints, as JSON, the
pipeline throughput (processed readings/s from /metrics, sampled every second) before, during
and after the storm, the alerts raised, and what each channel received and what the notifier
counted (sent, rate-limited, overflowed into a digest, dropped, failed).

  python3 scripts/bench/notify-storm.py --bin target/release/iiot [--devices 10000]
      [--interval 250ms] [--calm 20] [--storm 30] [--after 20]

Ports are asked of the OS (port 0) except the server's, which are taken below 32768.
"""
import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECEIVED = {}
LOCK = threading.Lock()


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        with LOCK:
            RECEIVED.setdefault(self.path.strip("/"), []).append(time.time())
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_):
        pass


def free_port():
    for _ in range(200):
        port = random.randint(20000, 32000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise SystemExit("no free port")


def http(method, url, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metrics(base):
    _, text = http("GET", f"{base}/metrics")
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, _, value = line.rpartition(" ")
        try:
            out[name] = float(value)
        except ValueError:
            pass
    return out


def total(m, name, labels=""):
    return sum(v for k, v in m.items()
               if (k == name or k.startswith(name + "{")) and labels in k)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/iiot")
    ap.add_argument("--devices", default="10000")
    ap.add_argument("--interval", default="250ms")
    ap.add_argument("--calm", type=int, default=20)
    ap.add_argument("--storm", type=int, default=30)
    ap.add_argument("--after", type=int, default=20)
    args = ap.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}"
    work = tempfile.mkdtemp(prefix="iiot-storm-")
    config = os.path.join(work, "iiot.toml")
    with open(config, "w") as f:
        f.write(f'''[notify]
queue_capacity = 10000

[[notify.channels]]
name = "oncall"
kind = "webhook"
url = "{hook}/oncall"

[[notify.channels]]
name = "limited"
kind = "webhook"
url = "{hook}/limited"
max_per_minute = 30
''')
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = dict(os.environ, HTTP_PORT=str(port), WEBSOCKET_PORT=str(free_port()),
               IIOT_CONFIG=config, DATA_DIR=os.path.join(work, "data"), RUST_LOG="warn",
               STATUS_INTERVAL="0")
    cmd = [args.bin, "run", "--devices", args.devices, "--interval", args.interval, "--seed", "1"]
    log = open(os.path.join(work, "iiot.log"), "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, cwd=work)
    try:
        for _ in range(200):
            try:
                if http("GET", f"{base}/ready")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        samples = []  # (t, processed, raised)
        marks = {}

        def sample():
            m = metrics(base)
            samples.append((time.time(), total(m, "iot_messages_total", 'status="success"'),
                            total(m, "iot_alerts_total", 'status="active"')))
            return m

        def run_for(seconds):
            end = time.time() + seconds
            while time.time() < end:
                sample()
                time.sleep(1)

        run_for(args.calm)
        marks["storm"] = time.time()
        status, body = http("PUT", f"{base}/api/rules/temperature_high",
                            {"alert_type": "temperature_high", "parameter": "temperature",
                             "operator": ">", "value": 0.5, "severity": "high"})
        assert status == 200, body
        run_for(args.storm)
        marks["resolve"] = time.time()
        status, body = http("DELETE", f"{base}/api/rules/temperature_high")
        assert status == 204, body
        run_for(args.after)
        time.sleep(2)
        final = sample()
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    def rate(t0, t1):
        inside = [s for s in samples if t0 <= s[0] <= t1]
        if len(inside) < 2:
            return None
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(inside, inside[1:])]
        rates.sort()
        return {"median": round(rates[len(rates) // 2]), "min": round(rates[0]),
                "max": round(rates[-1]), "seconds": len(rates)}

    t_start, t_end = samples[0][0], samples[-1][0]
    first_storm_minute = (marks["storm"], marks["storm"] + 60)
    before_storm = [s for s in samples if s[0] < marks["storm"]][-1]
    at_resolve = [s for s in samples if s[0] < marks["resolve"]][-1]
    with LOCK:
        got = {k: len(v) for k, v in RECEIVED.items()}
        within = {k: sum(1 for t in v if first_storm_minute[0] <= t <= first_storm_minute[1])
                  for k, v in RECEIVED.items()}
    report = {
        "command": " ".join(cmd) + f" (scripts/bench/notify-storm.py, storm at {args.calm}s, "
                   f"resolved at {args.calm + args.storm}s)",
        "machine": f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "throughput_per_s": {
            "before": rate(t_start, marks["storm"]),
            "storm": rate(marks["storm"], marks["resolve"]),
            "after": rate(marks["resolve"], t_end),
        },
        "alerts_raised_in_storm": at_resolve[2] - before_storm[2],
        "received_by_channel": got,
        "received_in_first_storm_minute": within,
        "notifier": {
            k: {c: total(final, f"iot_notifications_{k}_total", f'channel="{c}"')
                for c in ("oncall", "limited")}
            for k in ("sent", "rate_limited", "overflowed", "failed")
        },
        "dropped_at_intake": total(final, "iot_notifications_dropped_total"),
        "failed_reasons": {k: v for k, v in final.items()
                           if k.startswith("iot_notifications_failed_total") and v},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
