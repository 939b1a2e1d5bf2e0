"""A fresh Debian machine in a chroot: the README's two commands, the newest ansible-core.

One harness, used twice:

- ``fresh``: a clean Debian (debootstrap's base variant plus python3, nothing else), a fresh
  ``git clone`` of the repository inside, then the README's commands run in it as a new user
  would: ``./try`` (3 Ready nodes), ``./try`` again (reuses everything), ``./try down``
  (nothing left behind), ``./test`` (the default tier). Each step is timed; the result is
  JSON on stdout. ``tests/fresh/test_fresh_machine.py`` (slow tier) runs it.
- ``newest``: the unit tests and the lab ``up`` tests on the newest ansible-core, which needs
  a newer Python than bookworm's 3.11: a Debian trixie machine (python3.13) kept in
  ``/var/cache/pikube-fresh/newest-trixie`` between runs, the checkout bound into it, and
  ``./test`` run there with its virtualenv in ``/opt/pikube-venv``. ``./test`` runs it after
  the default tier.

How the lab runs inside a chroot (the cheapest thing that works here): the harness re-executes
itself under ``unshare --mount --propagation slave``, so every mount it makes (and every mount
the lab makes inside) lives in a private mount namespace: nothing propagates back to the
host's mount table, and it all goes when the last process inside ends. The chroot gets a bind
of the tree onto itself (``ip -n`` remounts ``/`` as a slave, so ``/`` must be a mount point),
a new ``/proc``, recursive binds of ``/sys`` (cgroups) and ``/dev`` (loop devices), and binds
of the host's ``/var/lib/pikube-lab`` and ``/var/cache/pikube-lab/acng`` (``newest``: all of
``/var/cache/pikube-lab``, so the lab's cached rootfs is reused). So a lab inside is an
ordinary lab of this machine: same state root (``lab leftovers --name`` on the host sees it,
``lab down --name`` on the host ends its processes), the same shared apt-cacher-ng and its
users' registry (tests/lab/acng.py). It shares the host's network namespace: apt, pip and
the lab's proxy reach the network as on the host. Network namespaces made inside are named in
the chroot's own ``/run/netns``. ``/usr/sbin/policy-rc.d`` refuses service starts, as in any
Debian chroot (there is no init inside to own them). DNS and the site's TLS trust anchors
are copied in from the host (``Chroot._site_config``).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from tests.lab import acng

CACHE = Path(os.environ.get("PIKUBE_FRESH_CACHE", "/var/cache/pikube-fresh"))
MIRROR = "http://deb.debian.org/debian"
REPO_ROOT = Path(__file__).resolve().parents[2]
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NEWEST_SUITE = "trixie"  # python3.13: pip resolves the newest ansible-core (2.21.x)
# The lab `up` modules run on the newest ansible-core only: in ./test's default run they are
# left out of the first pass (CI stays near 30 min); every other lab test, and `pikube up`
# inside the day-2 and calico modules, runs on the floor (bookworm's 2.19).
NEWEST_ONLY = (
    "tests/integration/test_up_kubeadm.py",
    "tests/integration/test_up_microk8s.py",
)
# The static checks (ruff, mypy, yamllint, ansible-lint, shellcheck) judge the same files with
# the same tools: they run once, in the first pass. What the newest ansible-core itself says of
# the playbooks (syntax check, deprecations) comes from unit tests that run here too.
NEWEST_TESTS = (
    "tests/unit",
    "--ignore=tests/unit/test_quality_gates.py",
    *NEWEST_ONLY,
)
_IN_NAMESPACE = "PIKUBE_FRESH_PRIVATE_MOUNTS"
_PASSED_ENV = ("PIKUBE_LAB_NAME", "PIKUBE_LAB_SUBNET", "PIKUBE_SLOW", "PIKUBE_DEBUG")


def _run(argv: Sequence[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=True, text=True, **kw)  # type: ignore[call-overload, no-any-return]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def base_tree(suite: str) -> Path:
    """A cached Debian ``suite``: debootstrap's base variant plus python3, nothing else."""
    target = CACHE / f"base-{suite}"
    if (target / ".pikube-fresh-complete").exists():
        return target
    with _locked(CACHE / f"base-{suite}.lock"):
        if (target / ".pikube-fresh-complete").exists():
            return target
        build = target.with_name(target.name + ".building")
        shutil.rmtree(build, ignore_errors=True)
        print(f"fresh: debootstrap {suite} (base + python3, a few minutes)", file=sys.stderr)
        log = CACHE / f"base-{suite}.debootstrap.log"
        with log.open("w") as out:
            done = subprocess.run(
                ["debootstrap", "--include=python3", suite, str(build), MIRROR],
                stdout=out,
                stderr=subprocess.STDOUT,
                check=False,
            )
        if done.returncode != 0:
            shutil.rmtree(build, ignore_errors=True)
            raise RuntimeError(f"debootstrap {suite} failed (exit {done.returncode}); see {log}")
        (build / "etc/apt/sources.list").write_text(
            f"deb {MIRROR} {suite} main\ndeb {MIRROR} {suite}-updates main\n"
            f"deb http://deb.debian.org/debian-security {suite}-security main\n"
        )
        policy = build / "usr/sbin/policy-rc.d"
        policy.write_text("#!/bin/sh\n# A chroot: no init here to own services.\nexit 101\n")
        policy.chmod(0o755)
        (build / ".pikube-fresh-complete").write_text(suite + "\n")
        build.rename(target)
        return target


def copy_tree(source: Path, target: Path) -> None:
    _run(["cp", "-a", "--reflink=auto", str(source), str(target)])


class Chroot:
    """A Debian tree entered with chroot(8), with the mounts the lab needs (see module doc)."""

    def __init__(self, root: Path, binds: Sequence[tuple[Path, str]] = ()) -> None:
        self.root = root
        self.binds = list(binds)

    def __enter__(self) -> Chroot:
        if os.environ.get(_IN_NAMESPACE) != "1":
            raise RuntimeError("Chroot is entered only inside a private mount namespace (main())")
        self._site_config()
        # `ip -n NETNS` remounts / as a slave: / of the chroot must be a mount point.
        _run(["mount", "--bind", str(self.root), str(self.root)])
        _run(["mount", "-t", "proc", "proc", str(self.root / "proc")])
        for top in ("sys", "dev"):
            _run(["mount", "--rbind", f"/{top}", str(self.root / top)])
        for source, inside in self.binds:
            source.mkdir(parents=True, exist_ok=True)
            point = self.root / inside.lstrip("/")
            point.mkdir(parents=True, exist_ok=True)
            _run(["mount", "--bind", str(source), str(point)])
        (self.root / "run/netns").mkdir(parents=True, exist_ok=True)
        return self

    def _site_config(self) -> None:
        """What any machine on this site gets besides its packages: DNS and trust anchors.

        The site reaches PyPI through a TLS-inspecting egress whose CA the host trusts
        (``/usr/local/share/ca-certificates``); pip is pointed at the host's bundle.
        """
        shutil.copyfile("/etc/resolv.conf", self.root / "etc/resolv.conf")
        local_cas = Path("/usr/local/share/ca-certificates")
        if local_cas.is_dir():
            shutil.copytree(local_cas, self.root / local_cas.relative_to("/"), dirs_exist_ok=True)
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if bundle.exists():
            inside = self.root / bundle.relative_to("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            if (self.root / "usr/sbin/update-ca-certificates").exists():
                _run(["chroot", str(self.root), "update-ca-certificates"], capture_output=True)
            else:  # no ca-certificates package yet: the host's bundle
                shutil.copyfile(bundle, inside)
            (self.root / "etc/pip.conf").write_text(f"[global]\ncert = {bundle}\n")

    def __exit__(self, *exc: object) -> None:
        # The namespace drops every mount when it ends; unmount anyway so a long-lived caller
        # can delete the tree right after.
        prefix = str(self.root) + "/"
        points = [
            line.split()[4]
            for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(prefix)
        ]
        for point in [*sorted(set(points), key=len, reverse=True), str(self.root)]:
            if subprocess.run(["umount", point], check=False, capture_output=True).returncode:
                subprocess.run(["umount", "--lazy", point], check=False, capture_output=True)

    def argv(
        self, argv: Sequence[str], cwd: str = "/", env: dict[str, str] | None = None
    ) -> list[str]:
        base = {"PATH": CHROOT_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb"}
        passed = {k: os.environ[k] for k in _PASSED_ENV if k in os.environ}
        merged = base | passed | (env or {})
        return [
            "chroot",
            str(self.root),
            "/usr/bin/env",
            "-i",
            "-C",
            cwd,
            *(f"{k}={v}" for k, v in merged.items()),
            *argv,
        ]


def release_proxy_rooted_in(root: Path) -> None:
    """The shared apt-cacher-ng must not live on in a chroot about to be deleted.

    When a lab inside the chroot started it and other labs still use it, start it again from
    the host; with no other user, stop it (the lab's own rule: it goes with the last lab).
    """
    with acng.users_lock():
        pid = acng._our_pid()  # the registry is shared: see the module docstring
        if pid is None:
            return
        try:
            pid_root = os.readlink(f"/proc/{pid}/root")
        except OSError:
            return
        if not pid_root.startswith(str(root)):
            return
        acng.stop_ours()
        if list(acng.ACNG_HOME.parent.glob(f"*/{acng.USER_MARKER}")):
            acng.ensure_acng()


def tear_down_lab(chroot: Chroot, root: Path, checkout: str) -> None:
    """What a run in the chroot may have left: its lab (a no-op after `lab down`), then the
    shared apt proxy if it was started from inside ``root``."""
    subprocess.run(
        chroot.argv(["python3", "tests/lab/lab", "down"], checkout),
        check=False,
        capture_output=True,
    )
    release_proxy_rooted_in(root)


def _timed(
    chroot: Chroot,
    name: str,
    argv: Sequence[str],
    cwd: str,
    logs: Path,
    env: dict[str, str] | None = None,
) -> dict[str, object]:
    log = logs / f"{name}.log"
    print(f"fresh: {name}: {' '.join(argv)} (log: {log})", file=sys.stderr)
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run(
            chroot.argv(argv, cwd, env), stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = round(time.monotonic() - started, 1)
    print(f"fresh: {name}: exit {done.returncode} in {seconds} s", file=sys.stderr)
    return {
        "name": name,
        "argv": list(argv),
        "exit": done.returncode,
        "seconds": seconds,
        "log": str(log),
    }


FRESH_STEPS = {
    "try": ["./try"],
    "retry": ["./try"],
    "down": ["./try", "down"],
    "leftovers": ["python3", "tests/lab/lab", "leftovers"],
    "test": ["./test"],
}


def fresh(suite: str, repo: str, rev: str, steps: Sequence[str], logs: Path) -> dict[str, object]:
    """Clone ``repo`` at ``rev`` into a clean ``suite`` machine and run ``steps`` in it."""
    result: dict[str, object] = {"suite": suite, "rev": rev}
    started = time.monotonic()
    base = base_tree(suite)
    result["base_seconds"] = round(time.monotonic() - started, 1)
    work = Path(tempfile.mkdtemp(prefix=f"pikube-fresh-{suite}-", dir="/var/tmp"))
    root = work / "root"
    records: list[dict[str, object]] = []
    try:
        copy_tree(base, root)
        checkout = root / "root/pikube"
        _run(["git", "clone", "--quiet", "--no-hardlinks", repo, str(checkout)])
        _run(["git", "-C", str(checkout), "checkout", "--quiet", rev])
        binds = [
            (Path("/var/lib/pikube-lab"), "/var/lib/pikube-lab"),
            (acng.ACNG_CACHE, "/var/cache/pikube-lab/acng"),
        ]
        with Chroot(root, binds) as chroot:
            try:
                for step in steps:
                    records.append(
                        _timed(
                            chroot,
                            step,
                            FRESH_STEPS[step],
                            "/root/pikube",
                            logs,
                            {"PIKUBE_NEWEST": "0"},
                        )
                    )
                    if records[-1]["exit"] != 0 and step != "leftovers":
                        break
            finally:
                tear_down_lab(chroot, root, "/root/pikube")  # what a failed step left
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["steps"] = records
    return result


def newest(logs: Path | None = None) -> int:
    """The unit and lab ``up`` tests on the newest ansible-core, in the trixie machine."""
    machine = CACHE / f"newest-{NEWEST_SUITE}"
    with _locked(CACHE / f"newest-{NEWEST_SUITE}.lock"):
        if not (machine / ".pikube-fresh-complete").exists():
            shutil.rmtree(machine, ignore_errors=True)
            staging = machine.with_name(machine.name + ".building")
            shutil.rmtree(staging, ignore_errors=True)
            copy_tree(base_tree(NEWEST_SUITE), staging)
            staging.rename(machine)
        binds = [
            (REPO_ROOT, "/pikube"),
            (Path("/var/lib/pikube-lab"), "/var/lib/pikube-lab"),
            (acng.ACNG_CACHE.parent, "/var/cache/pikube-lab"),
        ]
        env = {"PIKUBE_VENV": "/opt/pikube-venv", "PIKUBE_NEWEST": "0"}
        with Chroot(machine, binds) as chroot:
            try:
                done = subprocess.run(
                    chroot.argv(
                        ["./test", "-p", "no:cacheprovider", *NEWEST_TESTS], "/pikube", env
                    ),
                    check=False,
                )
            finally:
                tear_down_lab(chroot, machine, "/pikube")
                # pytest keeps its last temp dirs (GBs of sparse images): not in the cache.
                for left in (machine / "tmp").iterdir():
                    if left.is_dir() and not left.is_symlink():
                        shutil.rmtree(left, ignore_errors=True)
                    else:
                        left.unlink(missing_ok=True)
        return done.returncode


def main(argv: Sequence[str] | None = None) -> int:
    top = argparse.ArgumentParser(
        prog="python -m tests.fresh.machine",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    one = sub.add_parser("fresh", help="run the README's commands in a clean Debian")
    one.add_argument("--suite", default="bookworm")
    one.add_argument("--repo", default=str(REPO_ROOT))
    one.add_argument("--rev", default="HEAD")
    one.add_argument("--steps", default="try,retry,down,leftovers,test")
    one.add_argument("--logs", type=Path, required=True)
    sub.add_parser("newest", help="unit + lab up tests on the newest ansible-core (trixie)")
    sub.add_parser("newest-only", help="print the test modules that run on the newest only")
    args = top.parse_args(argv)

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # so every `finally` runs: lab down, unmount, delete the tree

    signal.signal(signal.SIGTERM, interrupted)
    if args.command == "newest-only":
        print("\n".join(NEWEST_ONLY))
        return 0
    if os.geteuid() != 0:
        print("fresh: needs root (chroot, mounts, the lab)", file=sys.stderr)
        return 2
    if os.environ.get(_IN_NAMESPACE) != "1":
        # Everything below runs in a private mount namespace (module docstring).
        os.environ[_IN_NAMESPACE] = "1"
        os.chdir(REPO_ROOT)
        reexec = [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            sys.executable,
            "-m",
            "tests.fresh.machine",
            *(sys.argv[1:] if argv is None else argv),
        ]
        return subprocess.run(reexec, check=False).returncode
    if args.command == "newest":
        return newest()
    args.logs.mkdir(parents=True, exist_ok=True)
    rev = _run(["git", "-C", args.repo, "rev-parse", args.rev], capture_output=True).stdout.strip()
    result = fresh(args.suite, args.repo, rev, args.steps.split(","), args.logs)
    print(json.dumps(result, indent=2))
    steps = result["steps"]
    assert isinstance(steps, list)
    return 0 if steps and all(s["exit"] == 0 for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
