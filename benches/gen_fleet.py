#!/usr/bin/env python3
"""Generate a large config repository for benchmarks: CLIENTS clients with SERVERS servers each
and five artifacts deployed to every server (prod profile), committed to git so Clarity reads it
the way it reads a real repository. Usage: gen_fleet.py DIR [--clients 1000] [--servers 10] [--ansible-inventory FILE]: the last
writes the same servers, groups and per-deployment variables as an Ansible inventory, the peer
that benches/fleet.sh compares the plan with."""
import argparse, hashlib, os, subprocess

p = argparse.ArgumentParser()
p.add_argument("dir")
p.add_argument("--clients", type=int, default=1000)
p.add_argument("--servers", type=int, default=10)
p.add_argument("--ansible-inventory", metavar="FILE",
               help="also write the same fleet as an Ansible YAML inventory (for benches/fleet.sh)")
a = p.parse_args()
root = a.dir
ARTIFACTS = ["smsgateway", "monitoring-stack", "sip-proxy", "cdr-rotate", "billing-agent"]
TYPES = ["jar", "tarball", "binary", "script", "jar"]

def write(path, text):
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as f:
        f.write(text)

write("clarity.yml", "keep_releases: 5\n")
write("repositories/releases.yml", "name: releases\ntype: http\nurl: https://artifacts.example.net/releases\n")
for i, (art, typ) in enumerate(zip(ARTIFACTS, TYPES)):
    versions = "".join(
        f"  - version: \"1.{v}.0\"\n    sha256: {hashlib.sha256(f'{art}{v}'.encode()).hexdigest()}\n"
        f"    location: {art}/{art}-1.{v}.0.bin\n    size: {1000 + v}\n" for v in range(5))
    write(f"artifacts/{art}.yml",
          f"id: {art}\ntype: {typ}\nrepository: releases\nversions:\n{versions}"
          f"run:\n  command: [\"bin/{art}\", \"--config\", \"conf/{art}.conf\"]\n")
    write(f"templates/{art}/{art}.conf.j2",
          "# {{ artifact.id }} {{ artifact.version }} on {{ server.hostname }}\n"
          "listen = {{ config.port }}\nclient = {{ client.id }}\nprofile = {{ profile }}\n"
          "{% for peer in config.peers %}peer = {{ peer }}\n{% endfor %}")
for c in range(a.clients):
    cid = f"client-{c:04d}"
    write(f"clients/{cid}/client.yml", f"id: {cid}\ncode: C{c:04d}\nname: Client {c}\nstatus: active\n")
    write(f"clients/{cid}/datacenters/dc-{cid}.yml",
          f"code: dc-{cid}\nname: DC of {cid}\nlocation: Somewhere\ntype: primary\nsl_no: {c}\n")
    hosts = []
    for s in range(a.servers):
        host = f"{cid}-srv-{s:03d}"
        hosts.append(host)
        # RFC 2544's benchmarking range (benches/harness_net.sh): planned, never contacted.
        n = c * a.servers + s + 1
        ip = f"198.{18 + ((n >> 16) & 1)}.{(n >> 8) & 255}.{n & 255}"
        write(f"clients/{cid}/servers/{host}.yml",
              f"hostname: {host}\ndatacenter: dc-{cid}\nip_addresses:\n  - address: {ip}\n"
              f"specifications: {{cpu_cores: 8, ram_gb: 32, disk_gb: 500}}\nvirtualization: vm\n"
              f"os: {{family: debian, version: \"12\"}}\n"
              f"agent:\n  transport: ssh\n  ssh: {{user: deploy, port: 22}}\n  service_manager: systemd\n")
    for i, art in enumerate(ARTIFACTS):
        targets = "".join(f"  - server: {h}\n    priority: {n}\n" for n, h in enumerate(hosts))
        write(f"clients/{cid}/deployments/{art}/prod.yml",
              f"artifact: {art}\nprofile: prod\nversion: \"1.{(c + i) % 5}.0\"\ntargets:\n{targets}"
              f"configuration:\n  port: {20000 + i}\n  peers: [a.example.net, b.example.net]\n"
              f"env_vars:\n  CLIENT: ${{CLIENT_ID}}\n  PORT: ${{CONFIG:port}}\n"
              f"config_files:\n  - destination: conf/{art}.conf\n    template: {art}/{art}.conf.j2\n    mode: \"0640\"\n"
              f"ports:\n  - port: {20000 + i}\n"
              f"health_checks:\n  - type: tcp\n    port: {20000 + i}\n"
              f"rollout:\n  batch_size: \"25%\"\n  max_failures: 1\n")

if a.ansible_inventory:
    # One group per client with its servers, one child group per deployment carrying the
    # deployment's variables: what `ansible-inventory --list` must resolve for every host.
    out = ["all:", "  children:"]
    for c in range(a.clients):
        cid = f"client-{c:04d}"
        out.append(f"    {cid.replace('-', '_')}:")
        out.append("      hosts:")
        for s in range(a.servers):
            n = c * a.servers + s + 1
            ip = f"198.{18 + ((n >> 16) & 1)}.{(n >> 8) & 255}.{n & 255}"
            out.append(f"        {cid}-srv-{s:03d}:")
            out.append(f"          ansible_host: {ip}")
            out.append("          ansible_user: deploy")
            out.append("          ansible_port: 22")
            out.append("          datacenter: dc-" + cid)
        out.append(f"      vars:")
        out.append(f"        client_id: {cid}")
        out.append(f"        client_code: C{c:04d}")
        out.append("        deployments:")
        for i, art in enumerate(ARTIFACTS):
            out.append(f"          - artifact: {art}")
            out.append(f"            version: \"1.{(c + i) % 5}.0\"")
            out.append(f"            port: {20000 + i}")
            out.append("            peers: [a.example.net, b.example.net]")
            out.append(f"            config_file: conf/{art}.conf")
    with open(a.ansible_inventory, "w") as f:
        f.write("\n".join(out) + "\n")

env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="bench@clarity.invalid",
           GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="bench@clarity.invalid")
subprocess.run(["git", "init", "-q", root], check=True)
subprocess.run(["git", "-C", root, "add", "-A"], check=True, env=env)
subprocess.run(["git", "-C", root, "commit", "-qm", "generated fleet"], check=True, env=env)
print(f"generated {a.clients * a.servers} servers, {a.clients * len(ARTIFACTS)} deployment files in {root}")
