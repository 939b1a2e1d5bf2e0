# pikube_node_prep's one probe: everything the role decides from a node's real state, read in
# one round trip instead of one task (or loop item) per question. Read-only. argv[1] is a JSON
# object of the role's lists; prints one JSON object. Runs with the node's python3.
import json
import os
import socket
import subprocess
import sys
import time

ask = json.loads(sys.argv[1])


def run(*argv):
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as err:
        return 127, "", str(err)
    return proc.returncode, proc.stdout, proc.stderr


def first_existing(paths):
    return next((p for p in paths if os.path.exists(p)), "")


state = {}
# Swap in use now, and the services that bring it back at boot.
state["swap_active"] = run("swapon", "--show=NAME", "--noheadings")[1].split()
state["swap_services"] = [
    name for name in ask["swap_services"] if os.path.exists(f"/lib/systemd/system/{name}.service")
]
# `modprobe --dry-run --first-time` fails for a module that is loaded or built in.
state["modules_to_load"], state["modules_unknown"] = [], []
for module in ask["kernel_modules"]:
    rc, _, err = run("modprobe", "--dry-run", "--first-time", module)
    if "not found" in err:
        state["modules_unknown"].append(module)
    elif rc == 0:
        state["modules_to_load"].append(module)
state["modules_missing"] = [m for m in ask["required_modules"] if run("modinfo", "--field=filename", m)[0] != 0]
# The kernel's values of the drop-in's settings, in the order asked (None: unreadable).
rc, out, _ = run("sysctl", "--values", *ask["sysctl"])
state["sysctl"] = [line.strip() for line in out.splitlines()] if rc == 0 else None
try:
    import apt  # noqa: F401  the apt module needs python3-apt for check mode
    state["python_apt"] = True
except ImportError:
    state["python_apt"] = False
state["container"] = run("systemd-detect-virt", "--container")[0] == 0
state["chrony"] = os.path.exists("/usr/sbin/chronyd")
model_file = first_existing(ask["model_files"])
state["model"] = ""
if model_file:
    with open(model_file, "rb") as handle:
        state["model"] = handle.read(4096).replace(b"\0", b"").decode("utf-8", "replace").strip()
state["cmdline_file"] = first_existing(ask["cmdline_files"])
# Packages dpkg does not have installed ("ii ", or "hi " when held).
_, out, _ = run("dpkg-query", "--show", "--showformat=${db:Status-Abbrev}${Package}\n", *ask["packages"])
installed = {line.split()[-1] for line in out.splitlines() if line[:3] in ("ii ", "hi ")}
state["packages_missing"] = [name for name in ask["packages"] if name not in installed]
# How old apt's package lists are, as the apt module's cache_valid_time reads it.
stamp = first_existing(["/var/lib/apt/periodic/update-success-stamp", "/var/lib/apt/lists"])
state["apt_lists_age"] = time.time() - os.stat(stamp).st_mtime if stamp else None
# The running (transient) and the static hostname.
state["hostname"] = socket.gethostname()
try:
    with open("/etc/hostname", encoding="utf-8") as handle:
        state["static_hostname"] = handle.read().strip()
except OSError:
    state["static_hostname"] = ""
print(json.dumps(state))
