#!/usr/bin/env python3
"""Samples the open file descriptors and threads of every process running one binary, until
SIGTERM, then prints the peaks: `fds=N threads=N samples=N`.

    sample_fds.py BINARY [INTERVAL_S]

Used by benches/fleet500.sh around one reconciler pass (the process is found by its
/proc/PID/exe, which is the bench's own build, so no other program is ever counted). It only
reads /proc; it never signals anything.
"""
import os
import signal
import sys
import time

binary = os.path.realpath(sys.argv[1])
interval = float(sys.argv[2]) if len(sys.argv) > 2 else 0.005
peak_fds = peak_threads = samples = 0
running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
pids = []
last_scan = 0.0
while running:
    now = time.monotonic()
    if not pids or now - last_scan > 0.05:
        last_scan = now
        pids = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.readlink(f"/proc/{p}/exe") == binary:
                        pids.append(p)
                except OSError:
                    pass
    for p in pids:
        try:
            n = len(os.listdir(f"/proc/{p}/fd"))
            with open(f"/proc/{p}/status") as f:
                t = next(int(l.split()[1]) for l in f if l.startswith("Threads:"))
        except (OSError, StopIteration):
            continue
        samples += 1
        peak_fds = max(peak_fds, n)
        peak_threads = max(peak_threads, t)
    time.sleep(interval)
print(f"fds={peak_fds} threads={peak_threads} samples={samples}")
