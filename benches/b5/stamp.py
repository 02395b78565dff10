#!/usr/bin/env python3
"""Copies stdin to stdout, each line prefixed with the wall-clock time it arrived (epoch seconds,
microseconds): B5 reads the time between the agent's events (a failed health check, the
rollback that followed) from Clarity's own streamed output."""
import sys
import time

for line in sys.stdin:
    sys.stdout.write(f"{time.time():.6f} {line}")
    sys.stdout.flush()
