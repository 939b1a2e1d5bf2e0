"""`snap` stand-in: install / list / refresh / remove / info for the MicroK8s stand-in.

Contract: https://snapcraft.io/docs/managing-snaps , https://snapcraft.io/docs/channels ,
https://snapcraft.io/docs/managing-updates (refresh --hold),
https://microk8s.io/docs/setting-snap-channel .
Standard library only (it is baked into every lab node). The "store" is the lab's HTTP
server: $LAB_HTTP/snaps/<name>/index.json plus one payload tarball per revision/arch,
written by standins.prepare().
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from . import common
from .common import path

STATE = "/var/lib/pikube-standin/snap/state.json"
KNOWN = ("microk8s",)


def arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def lab_http() -> str | None:
    if os.environ.get("PIKUBE_LAB_HTTP"):
        return os.environ["PIKUBE_LAB_HTTP"].rstrip("/")
    env = path("/etc/pikube-lab/lab.env")
    if env.exists():
        for line in env.read_text().splitlines():
            if line.startswith("LAB_HTTP="):
                return line.split("=", 1)[1].strip().strip('"').rstrip("/")
    return None


def load_state() -> dict[str, Any]:
    p = path(STATE)
    return json.loads(p.read_text()) if p.exists() else {}


def save_state(s: dict[str, Any]) -> None:
    common.write_file(path(STATE), json.dumps(s, indent=2), 0o600)


def err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 1


def need_root() -> int | None:
    if os.geteuid() != 0:
        return err("access denied (try with sudo)")
    return None


def store_get(name: str, rel: str) -> bytes:
    base = lab_http()
    url = f"{base}/snaps/{name}/{rel}" if base else "https://api.snapcraft.io/v2/snaps/refresh"
    if base is None:
        raise OSError(
            f'Post "{url}": dial tcp: lookup api.snapcraft.io: Temporary failure in name resolution'
        )
    try:
        with urllib.request.urlopen(url, timeout=30) as r:  # noqa: S310 - lab HTTP store
            return bytes(r.read())
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise LookupError(rel) from e
        raise OSError(f'Get "{url}": {e}') from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise OSError(
            f'Post "https://api.snapcraft.io/v2/snaps/refresh": dial tcp: {reason}'
        ) from e


def resolve(name: str, channel: str) -> tuple[dict[str, Any], dict[str, Any]]:
    index = json.loads(store_get(name, "index.json"))
    ch = (
        channel
        if "/" in channel
        else (
            f"latest/{channel}"
            if channel in ("stable", "candidate", "beta", "edge")
            else f"{channel}/stable"
        )
    )
    entry = index["channels"].get(ch)
    if entry is None:
        tracks = sorted({c.split("/")[0] for c in index["channels"]})
        raise KeyError(
            f'snap "{name}" is not available on {ch} but is available to install on the following '
            f"tracks:\n       " + "  ".join(tracks)
        )
    return index, {**entry, "channel": ch}


def unpack(name: str, entry: dict[str, Any]) -> None:
    rev = str(entry["revision"])
    blob = store_get(name, entry["files"][arch()])
    dest = path(f"/snap/{name}/{rev}")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        try:
            tar.extractall(dest, filter="data")
        except TypeError:  # Python without tarfile extraction filters
            tar.extractall(dest)  # noqa: S202 - our own lab payload
    old_data = path(f"/var/snap/{name}/current")
    new_data = path(f"/var/snap/{name}/{rev}")
    if old_data.exists() and not new_data.exists():  # snapd copies SNAP_DATA to the new revision
        shutil.copytree(old_data.resolve(), new_data, symlinks=True)
    for base in (path(f"/snap/{name}"), path(f"/var/snap/{name}")):
        (base / rev).mkdir(parents=True, exist_ok=True)
        cur = base / "current"
        if cur.is_symlink() or cur.exists():
            cur.unlink()
        cur.symlink_to(rev)
    path(f"/var/snap/{name}/common").mkdir(parents=True, exist_ok=True)


WRAPPER = """#!/usr/bin/python3
import sys
sys.path.insert(0, "/snap/{name}/current/lib")
from pikube_standin.{name} import main
sys.exit(main({args}))
"""


def write_commands(name: str) -> None:
    """snapd exposes a classic snap's apps in /snap/bin (microk8s, microk8s.kubectl, ...)."""
    common.write_file(path(f"/snap/bin/{name}"), WRAPPER.format(name=name, args=""), 0o755)
    apps = ("kubectl", "status", "config", "add-node", "join", "leave", "enable", "disable")
    for app in (*apps, "dbctl"):
        extra = f'["{app}"] + sys.argv[1:]'
        common.write_file(
            path(f"/snap/bin/{name}.{app}"), WRAPPER.format(name=name, args=extra), 0o755
        )


def remove_commands(name: str) -> None:
    for f in path("/snap/bin").glob(f"{name}*"):
        f.unlink(missing_ok=True)


def run_hook(name: str, hook: str) -> None:
    """The snap's hooks (install, remove, post-refresh) live in its payload."""
    lib = path(f"/snap/{name}/current/lib")
    env = {
        **os.environ,
        "PYTHONPATH": str(lib),
        "SNAP": f"/snap/{name}/current",
        "SNAP_DATA": f"/var/snap/{name}/current",
    }
    r = subprocess.run(
        [sys.executable, "-m", "pikube_standin.microk8s", f"--hook={hook}"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if r.returncode != 0:
        raise RuntimeError(r.stdout + r.stderr)


def ensure_runtime_deps() -> None:
    """A real snap bundles its runtime; the stand-in payload uses Debian's python3-yaml and
    python3-cryptography, installed here through the node's apt (and its lab proxy) if missing."""
    probe = subprocess.run(
        [sys.executable, "-c", "import yaml, cryptography"], capture_output=True, check=False
    )
    if probe.returncode == 0 or common.root() != Path("/"):
        return
    argv = ["apt-get", "install", "-y", "--no-install-recommends", "python3-yaml"]
    argv.append("python3-cryptography")
    envv = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(argv, env=envv, capture_output=True, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=envv, capture_output=True, check=False)
        subprocess.run(argv, env=envv, capture_output=True, check=False)


def cmd_install(args: list[str]) -> int:
    if (e := need_root()) is not None:
        return e
    names = [a for a in args if not a.startswith("-")]
    channel = "latest/stable"
    classic = "--classic" in args
    for a in args:
        if a.startswith("--channel="):
            channel = a.split("=", 1)[1]
    if "--channel" in args:
        channel = args[args.index("--channel") + 1]
        names = [n for n in names if n != channel]
    if not names:
        return err("the required argument `<snap> (at least 1 argument)` was not provided")
    name = names[0]
    state = load_state()
    if name in state:
        print(f"snap \"{name}\" is already installed, see 'snap help refresh'", file=sys.stderr)
        return 0
    if name not in KNOWN:
        return err(f'snap "{name}" not found')
    try:
        _index, entry = resolve(name, channel)
    except OSError as e:
        return err(f'cannot install "{name}": {e}')
    except KeyError as e:
        return err(str(e.args[0]))
    if entry.get("confinement") == "classic" and not classic:
        return err(
            f'This revision of snap "{name}" was published using classic confinement and thus may '
            "perform\n"
            "       arbitrary system changes outside of the security sandbox that snaps are "
            "usually\n"
            "       confined to, which may put your system at risk.\n\n"
            "       If you understand and want to proceed repeat the command including --classic."
        )
    ensure_runtime_deps()
    try:
        unpack(name, entry)
        state[name] = {
            "channel": entry["channel"],
            "revision": entry["revision"],
            "version": entry["version"],
            "hold": False,
            "installed": dt.datetime.now(dt.UTC).isoformat(),
            "confinement": entry.get("confinement", "strict"),
        }
        save_state(state)
        write_commands(name)
        run_hook(name, "install")
    except (OSError, LookupError, RuntimeError) as e:
        return err(
            f'cannot perform the following tasks:\n- Run install hook of "{name}" snap if present '
            f"({e})"
        )
    print(f"{name} ({entry['channel']}) {entry['version']} from Canonical\u2713 installed")
    return 0


def cmd_refresh(args: list[str]) -> int:
    if (e := need_root()) is not None:
        return e
    state = load_state()
    names = [a for a in args if not a.startswith("-")]
    if "--hold" in args or any(a.startswith("--hold=") for a in args):
        if not names:
            for s in state.values():
                s["hold"] = True
            save_state(state)
            print("Auto-refresh of all snaps held indefinitely")
            return 0
        for n in names:
            if n not in state:
                return err(f'snap "{n}" is not installed')
            state[n]["hold"] = True
            print(f'General refreshes of "{n}" held indefinitely')
        save_state(state)
        return 0
    if "--unhold" in args:
        for n in names or list(state):
            if n in state:
                state[n]["hold"] = False
                print(f'Removed general refresh hold of "{n}"')
        save_state(state)
        return 0
    channel = None
    for a in args:
        if a.startswith("--channel="):
            channel = a.split("=", 1)[1]
    if "--channel" in args:
        channel = args[args.index("--channel") + 1]
        names = [n for n in names if n != channel]
    if not names:
        print("All snaps up to date.")
        return 0
    name = names[0]
    if name not in state:
        return err(f'snap "{name}" is not installed')
    try:
        _index, entry = resolve(name, channel or state[name]["channel"])
    except OSError as e:
        return err(f'cannot refresh "{name}": {e}')
    except KeyError as e:
        return err(str(e.args[0]))
    if entry["revision"] == state[name]["revision"]:
        if channel and entry["channel"] != state[name]["channel"]:
            state[name]["channel"] = entry["channel"]
            save_state(state)
            print(f"{name} ({entry['channel']}) {entry['version']} from Canonical\u2713 refreshed")
            return 0
        print(f'snap "{name}" has no updates available', file=sys.stderr)
        return 0
    try:
        run_hook(name, "pre-refresh")
        unpack(name, entry)
        state[name].update(
            channel=entry["channel"], revision=entry["revision"], version=entry["version"]
        )
        save_state(state)
        run_hook(name, "post-refresh")
    except (OSError, LookupError, RuntimeError) as e:
        return err(f'cannot refresh "{name}": {e}')
    print(f"{name} ({entry['channel']}) {entry['version']} from Canonical\u2713 refreshed")
    return 0


def cmd_remove(args: list[str]) -> int:
    if (e := need_root()) is not None:
        return e
    state = load_state()
    names = [a for a in args if not a.startswith("-")]
    for name in names:
        if name not in state:
            print(f'snap "{name}" is not installed')
            continue
        with contextlib.suppress(RuntimeError, OSError):
            run_hook(name, "remove")
        remove_commands(name)
        for d in (path(f"/snap/{name}"), path(f"/var/snap/{name}")):
            shutil.rmtree(d, ignore_errors=True)
        del state[name]
        save_state(state)
        print(
            f"{name} removed" if "--purge" in args else f"{name} removed (snap data snapshot saved)"
        )
    return 0


def cmd_list(args: list[str]) -> int:
    state = load_state()
    names = [a for a in args if not a.startswith("-")]
    rows = [(n, s) for n, s in sorted(state.items()) if not names or n in names]
    if not rows:
        if names:
            return err("no matching snaps installed")
        print("No snaps are installed yet. Try 'snap install hello-world'.")
        return 0
    table = [("Name", "Version", "Rev", "Tracking", "Publisher", "Notes")]
    for n, s in rows:
        notes = [s.get("confinement", "-")] if s.get("confinement") == "classic" else []
        if s.get("hold"):
            notes.append("held")
        table.append(
            (
                n,
                s["version"],
                str(s["revision"]),
                s["channel"],
                "canonical\u2713",
                ",".join(notes) or "-",
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(6)]
    for r in table:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return 0


def cmd_info(args: list[str]) -> int:
    names = [a for a in args if not a.startswith("-")]
    if not names:
        return err("the required argument `<snap>` was not provided")
    name = names[0]
    if name not in KNOWN:
        return err(f'no snap found for "{name}"')
    try:
        index = json.loads(store_get(name, "index.json"))
    except (OSError, LookupError) as e:
        return err(f"cannot get snap info: {e}")
    state = load_state().get(name)
    print(
        f"name:      {name}\nsummary:   Kubernetes for workstations and appliances\npublisher: "
        "Canonical\u2713\n"
        "store-url: https://snapcraft.io/microk8s\ncontact:   "
        "https://github.com/canonical/microk8s\n"
        "license:   Apache-2.0\ndescription: |\n  MicroK8s is a small, fast, secure, single node "
        "Kubernetes that "
        "installs on just about any Linux box.\n  (pikube lab stand-in)\ncommands:\n  - microk8s\n"
        "  - microk8s.add-node\n  - microk8s.config\n  - microk8s.kubectl\n  - microk8s.status\n"
        "services:\n  microk8s.daemon-cluster-agent: simple, enabled, active\n"
        "  microk8s.daemon-kubelite:      simple, enabled, active"
    )
    print("snap-id:      EaXqgt1lyCaxKaQCU349mlodBkDCXRcg")
    if state:
        print(f"tracking:     {state['channel']}\nrefresh-date: today")
        if state.get("hold"):
            print("hold:         forever")
    print("channels:")
    for ch, e in sorted(index["channels"].items()):
        print(
            f"  {ch + ':':<16} {e['version']:<10} {dt.date.today():%Y-%m-%d} ({e['revision']}) "
            "180MB classic"
        )
    if state:
        print(
            f"installed:      {state['version']:<10}            ({state['revision']}) 180MB classic"
        )
    return 0


def cmd_wait(args: list[str]) -> int:
    """`snap wait system seed.loaded`: returns once snapd has seeded (snapd's cmd_wait.go);
    the stand-in has nothing to seed. Other snaps or keys are not modelled."""
    if len(args) != 2:
        return err("the required arguments `<snap>` and `<key>` were not provided")
    if args != ["system", "seed.loaded"]:
        return err(f"pikube lab stand-in models only `snap wait system seed.loaded`, not {args}")
    return 0


COMMANDS = {
    "wait": cmd_wait,
    "install": cmd_install,
    "refresh": cmd_refresh,
    "remove": cmd_remove,
    "list": cmd_list,
    "info": cmd_info,
}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help", "help"):
        print(
            "Usage: snap <command> [<options>...]\n\nCommands modelled by the pikube lab stand-in: "
            + ", ".join(COMMANDS)
        )
        return 0
    if args[0] == "version":
        print("snap    2.63+pikube-standin\nsnapd   2.63+pikube-standin\nseries  16")
        return 0
    fn = COMMANDS.get(args[0])
    if fn is None:
        return err(f"unknown command \"{args[0]}\", see 'snap help'.")
    return fn(args[1:])


if __name__ == "__main__":
    sys.exit(main())
