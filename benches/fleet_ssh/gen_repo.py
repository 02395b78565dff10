#!/usr/bin/env python3
"""Config repository for the fleet_ssh bench: one client, one datacenter, one server per line of
HOSTS (tab-separated: name, address, pinned host key `ssh-ed25519 AAAA...`) and one deployment
(`app`) on all of them with the same four things the peers check: a file (conf/motd.txt), a
rendered template (conf/app.conf), the `current -> releases/...` symlink and a running service
(a `sleep`, service manager `process`: there is no systemd per simulated host).

    gen_repo.py DIR HOSTS --phase local
        writes the repository with `local` servers (root = the server's name, under the
        reconciler's --work-dir) and commits it: applying that commit converges the host
        directories the simulated hosts later see as their own /opt/clarity and /var/lib/clarity.
    gen_repo.py DIR HOSTS --phase ssh [--identity KEY]
        rewrites only the server files to transport `ssh` (address, port 22, user root, pinned
        host key) and commits: the deployments, hence the desired state, are unchanged.
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
p.add_argument("--phase", choices=["local", "ssh"], required=True)
p.add_argument("--identity", help="private key file written as agent.ssh.identity_file")
a = p.parse_args()
root = a.dir

hosts = []
with open(a.hosts) as f:
    for line in f:
        line = line.rstrip("\n")
        if line:
            name, address, key = line.split("\t")
            hosts.append((name, address, key))


def write(path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)


def q(s):
    """A YAML double-quoted scalar."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def server_file(name, address, key):
    head = (f"hostname: {name}\ndatacenter: lab\nip_addresses:\n  - address: {address}\n"
            f"os:\n  family: debian\n  version: \"12\"\n")
    if a.phase == "local":
        return head + f"agent:\n  transport: local\n  root: {name}\n  service_manager: process\n"
    ident = f"    identity_file: {q(a.identity)}\n" if a.identity else ""
    return head + (f"agent:\n  transport: ssh\n  ssh:\n    address: {address}\n    port: 22\n"
                   f"    user: root\n    host_key: {q(key)}\n{ident}  service_manager: process\n")


if a.phase == "local":
    if os.path.exists(root):
        shutil.rmtree(root)
    os.makedirs(os.path.join(root, "files"))
    shutil.copy(os.path.join(HERE, "files", "app.sh"), os.path.join(root, "files", "app.sh"))
    with open(os.path.join(HERE, "files", "app.sh"), "rb") as f:
        app = f.read()
    with open(os.path.join(HERE, "files", "motd.txt")) as f:
        motd = f.read()
    with open(os.path.join(HERE, "templates", "app.conf.j2")) as f:
        write("templates/app/app.conf.j2", f.read())
    write("clarity.yml", "keep_releases: 3\n")
    write("repositories/bench-files.yml", "name: bench-files\ntype: file\npath: files\n")
    write("artifacts/app.yml",
          f"id: app\ntype: script\nrepository: bench-files\nversions:\n"
          f"  - version: \"1.0.0\"\n    sha256: {hashlib.sha256(app).hexdigest()}\n"
          f"    location: app.sh\n    size: {len(app)}\n"
          f"run:\n  command: [\"sh\", \"app.sh\"]\n")
    write("clients/bench/client.yml", "id: bench\ncode: BEN\nname: fleet_ssh bench\nstatus: active\n")
    write("clients/bench/datacenters/lab.yml",
          "code: lab\nname: Network namespaces on the bench machine\nlocation: here\n"
          "type: edge\nsl_no: 1\n")
    targets = "".join(f"  - server: {n}\n" for n, _, _ in hosts)
    content = "".join(f"      {line}\n" for line in motd.splitlines())
    write("clients/bench/deployments/app/prod.yml",
          f"artifact: app\nprofile: prod\nversion: \"1.0.0\"\ntargets:\n{targets}"
          f"configuration:\n  port: 8080\n"
          f"config_files:\n  - destination: conf/motd.txt\n    mode: \"0644\"\n    content: |\n{content}"
          f"  - destination: conf/app.conf\n    mode: \"0644\"\n    template: app/app.conf.j2\n"
          f"service:\n  command: [\"sh\", \"app.sh\"]\n")

for name, address, key in hosts:
    write(f"clients/bench/servers/{name}.yml", server_file(name, address, key))

env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@clarity.invalid",
           GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@clarity.invalid")
if a.phase == "local":
    subprocess.run(["git", "init", "-q", root], check=True)
subprocess.run(["git", "-C", root, "add", "-A"], check=True, env=env)
subprocess.run(["git", "-C", root, "commit", "-qm", f"fleet_ssh bench: {a.phase} servers"],
               check=True, env=env)
