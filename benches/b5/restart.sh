#!/bin/sh
# Ansible's side of B5 (copied to /srv/web on each host): stop the web service started from
# /srv/web, by the PID it recorded, and start it again detached with the current config.
set -eu
cd /srv/web
if [ -f web.pid ]; then
  pid=$(cat web.pid)
  if kill "$pid" 2>/dev/null; then
    i=0
    while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 100 ]; do sleep 0.02; i=$((i + 1)); done
  fi
fi
setsid /usr/bin/python3 web.py conf/web.conf >web.log 2>&1 </dev/null &
echo $! >web.pid
