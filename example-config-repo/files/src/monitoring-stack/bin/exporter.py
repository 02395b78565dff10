#!/usr/bin/env python3
"""A stand-in monitoring exporter for Clarity's demo sandboxes (standard library only).

Serves Prometheus text on /metrics and OK on /health. Every `interval_s` it GETs each probe URL
from its config and exports whether it answered 2xx; when `database` names an SQLite file whose
schema exists (migrations/001_init.up.sql), each result is also recorded there.

Config: --config PATH (default etc/exporter.json, else etc/exporter.default.json).
EXPORTER_PORT overrides the config's port. A non-empty `metrics_token` makes /metrics require
`Authorization: Bearer <token>`; /health stays open for health checks.
"""

import argparse
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STARTED = time.time()
RESULTS = {}
LOCK = threading.Lock()


def load_config(path):
    if path is None:
        path = "etc/exporter.json" if os.path.exists("etc/exporter.json") else "etc/exporter.default.json"
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    if os.environ.get("EXPORTER_PORT"):
        config["port"] = int(os.environ["EXPORTER_PORT"])
    return config


def probe_once(config):
    for probe in config.get("probes", []):
        begin = time.monotonic()
        try:
            with urllib.request.urlopen(probe["url"], timeout=2) as response:
                up = 200 <= response.status < 300
        except OSError:
            up = False
        took = time.monotonic() - begin
        with LOCK:
            RESULTS[probe["name"]] = (up, took)
        record(config.get("database"), probe["name"], up, took)


def record(database, name, up, took):
    if not database or not os.path.exists(database):
        return
    try:
        with sqlite3.connect(database) as db:
            db.execute(
                "INSERT INTO probe_results (probe, up, duration_ms, at) VALUES (?, ?, ?, ?)",
                (name, int(up), int(took * 1000), int(time.time())),
            )
    except sqlite3.Error as e:
        print(f"exporter: cannot record to {database}: {e}", file=sys.stderr)


def metrics(config):
    labels = config.get("labels", {})

    def fmt(extra):
        pairs = {**labels, **extra}
        inner = ",".join(f'{k}="{v}"' for k, v in sorted(pairs.items()))
        return "{" + inner + "}" if inner else ""

    lines = [
        "# HELP clarity_exporter_up The exporter is running.",
        "# TYPE clarity_exporter_up gauge",
        f"clarity_exporter_up{fmt({})} 1",
        "# TYPE clarity_exporter_start_time_seconds gauge",
        f"clarity_exporter_start_time_seconds{fmt({})} {STARTED:.0f}",
        "# HELP clarity_probe_up The probe URL answered 2xx at the last attempt.",
        "# TYPE clarity_probe_up gauge",
    ]
    with LOCK:
        results = sorted(RESULTS.items())
    for name, (up, took) in results:
        lines.append(f"clarity_probe_up{fmt({'probe': name})} {int(up)}")
        lines.append(f"clarity_probe_duration_seconds{fmt({'probe': name})} {took:.3f}")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config")
    args = parser.parse_args()
    config = load_config(args.config)
    token = config.get("metrics_token") or ""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/health":
                self.reply(200, "OK\n")
            elif self.path == "/metrics":
                if token and self.headers.get("Authorization") != f"Bearer {token}":
                    self.reply(401, "unauthorized\n")
                else:
                    self.reply(200, metrics(config))
            else:
                self.reply(404, "not found\n")

        def reply(self, status, body):
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((config.get("listen", "0.0.0.0"), int(config["port"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())

    def loop():
        while True:
            probe_once(config)
            time.sleep(max(1, int(config.get("interval_s", 15))))

    threading.Thread(target=loop, daemon=True).start()
    print(f"exporter listening on {config.get('listen', '0.0.0.0')}:{config['port']}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
