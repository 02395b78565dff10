# The pyinfra side of the fleet_ssh bench, run with --dry: the same four checks per host as the
# other tools (a file, a rendered template, the service state, the `current` symlink). Each
# simulated host sees its own directory as /opt/clarity and /var/lib/clarity. `assets` (this
# directory) and `release` (the converged release directory) come from the inventory's data.
import os

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

assets = host.data.assets
current = "/opt/clarity/app/current"

files.put(
    name="file",
    src=os.path.join(assets, "files", "motd.txt"),
    dest=f"{current}/conf/motd.txt",
    mode="644",
)

files.template(
    name="rendered template",
    src=os.path.join(assets, "templates", "app.conf.j2"),
    dest=f"{current}/conf/app.conf",
    mode="644",
    **{"config": {"port": 8080}, "server": {"hostname": host.name}, "client": {"id": "bench"}},
)

# The service check is a fact (it runs under --dry); a stopped service shows as a pending start.
state = host.get_fact(
    Command,
    'test -e "/proc/$(head -n1 /var/lib/clarity/run/clarity-app.pid)" && echo running || echo stopped',
)
if state != "running":
    server.shell(name="start the stopped service", commands=["echo would start app"])

files.link(
    name="current release",
    path=current,
    target=f"releases/{host.data.release}",
)
