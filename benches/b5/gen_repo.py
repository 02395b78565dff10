#!/usr/bin/env python3
"""Config repository for the B5 bench: one client, one datacenter, one `ssh` server per line of
HOSTS (tab-separated: name, address, pinned host key) and one deployment (`web`, the tiny HTTP
server web.py, service manager `process`) on all of them, in host order (priority = position),
with its config file rendered from web.conf.j2, an http health check and a rollout of batches
of BATCH hosts with MAX_FAILURES failed hosts tolerated.

    gen_repo.py DIR HOSTS --version v1|v2 [--batch 10] [--max-failures 0]

v1 (written and committed first, DIR is created anew): port 8080, greeting v1. v2 (a second
commit): port 9090, greeting v2, so that the config file's content changes on every host and
its health check follows the new port.
"""
import argparse
import hashlib
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("hosts")
p.add_argument("--version", choices=["v1", "v2"], required=True)
p.add_argument("--batch", type=int, default=10)
p.add_argument("--max-failures", type=int, default=0)
a = p.parse_args()
root = a.dir
port, greeting = (8080, "v1") if a.version == "v1" else (9090, "v2")

hosts = []
with open(a.hosts) as f:
    for line in f:
        line = line.rstrip("\n")
        if line:
            hosts.append(line.split("\t"))


def write(path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def q(s):
    """A YAML double-quoted scalar."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


if a.version == "v1":
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "files"))
    shutil.copy(os.path.join(HERE, "web.py"), os.path.join(root, "files", "web.py"))
    with open(os.path.join(HERE, "web.py"), "rb") as f:
        web = f.read()
    with open(os.path.join(HERE, "web.conf.j2")) as f:
        write("templates/web/web.conf.j2", f.read())
    write("clarity.yml", "keep_releases: 3\n")
    write("repositories/bench-files.yml", "name: bench-files\ntype: file\npath: files\n")
    write("artifacts/web.yml",
          f"id: web\ntype: script\nrepository: bench-files\nversions:\n"
          f"  - version: \"1.0.0\"\n    sha256: {hashlib.sha256(web).hexdigest()}\n"
          f"    location: web.py\n    size: {len(web)}\n"
          f"run:\n  command: [\"/usr/bin/python3\", \"web.py\", \"conf/web.conf\"]\n")
    write("clients/bench/client.yml", "id: bench\ncode: BEN\nname: B5 bench\nstatus: active\n")
    write("clients/bench/datacenters/lab.yml",
          "code: lab\nname: Network namespaces on the bench machine\nlocation: here\n"
          "type: edge\nsl_no: 1\n")
    for name, address, key in hosts:
        write(f"clients/bench/servers/{name}.yml",
              f"hostname: {name}\ndatacenter: lab\nip_addresses:\n  - address: {address}\n"
              f"os:\n  family: debian\n  version: \"12\"\n"
              f"agent:\n  transport: ssh\n  ssh:\n    address: {address}\n    port: 22\n"
              f"    user: root\n    host_key: {q(key)}\n  service_manager: process\n")

targets = "".join(f"  - server: {n}\n    priority: {i}\n" for i, (n, _, _) in enumerate(hosts, 1))
write("clients/bench/deployments/web/prod.yml",
      f"artifact: web\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}"
      f"configuration:\n  port: {port}\n  greeting: {greeting}\n"
      f"config_files:\n  - destination: conf/web.conf\n    mode: \"0644\"\n"
      f"    template: web/web.conf.j2\n"
      f"service:\n  command: [\"/usr/bin/python3\", \"web.py\", \"conf/web.conf\"]\n"
      f"health_checks:\n  - type: http\n    url: http://127.0.0.1:{port}/health\n"
      f"    body_contains: \"ok {greeting}\"\n    interval_s: 1\n    timeout_s: 1\n"
      f"    retries: 2\n"
      f"rollout:\n  batch_size: {a.batch}\n  max_failures: {a.max_failures}\n")

env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@clarity.invalid",
           GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@clarity.invalid")
if a.version == "v1":
    subprocess.run(["git", "init", "-q", root], check=True)
subprocess.run(["git", "-C", root, "add", "-A"], check=True, env=env)
subprocess.run(["git", "-C", root, "commit", "-qm", f"B5 bench: {a.version}"], check=True, env=env)
