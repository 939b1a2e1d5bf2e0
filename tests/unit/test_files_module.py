"""The module pikube_files writes a role's small files in one run: only what differs (bytes,
owner, group, mode, a folder's too), atomically, nothing in check mode, a secret never in a
diff; and through ansible-playbook a second run changes nothing and a file changed by hand is
repaired."""

from __future__ import annotations

import grp
import os
import pwd
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.resources import data_path
from tests.cni import plugin_module

files = plugin_module("pikube_files")

BIN = Path(sys.executable).parent
OWNER = pwd.getpwuid(os.getuid()).pw_name
GROUP = grp.getgrgid(os.getgid()).gr_name


def spec(path: Path, content: str | None = "a = 1\n", **extra: Any) -> dict[str, Any]:
    return {"path": str(path), "content": content, "state": "present", "owner": OWNER,
            "group": GROUP, "mode": "0644", "unsafe_writes": False, "secret": False,
            **extra}  # fmt: skip


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_missing_file_is_written_and_an_equal_one_is_left_alone(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    diffs: list[dict[str, str]] = []
    assert files.ensure_file(spec(target), False, diffs) is True
    assert target.read_text() == "a = 1\n" and mode_of(target) == 0o644
    assert diffs[0]["after"] == "a = 1\n"
    inode = target.stat().st_ino
    assert files.ensure_file(spec(target), False, []) is False
    assert target.stat().st_ino == inode  # not rewritten


def test_content_and_mode_changed_by_hand_are_repaired(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    files.ensure_file(spec(target), False, [])
    target.write_text("a = 2\n")
    diffs: list[dict[str, str]] = []
    assert files.ensure_file(spec(target), False, diffs) is True
    assert target.read_text() == "a = 1\n"
    assert diffs[0]["before"] == "a = 2\n"
    target.chmod(0o666)
    assert files.ensure_file(spec(target), False, []) is True
    assert mode_of(target) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pikube-")]


def test_check_mode_reports_and_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    folder = tmp_path / "new"
    dir_spec = {"path": str(folder), "owner": OWNER, "group": GROUP, "mode": "0755"}
    assert files.ensure_directory(dir_spec, True) is True
    assert files.ensure_file(spec(folder / "b.conf"), True, []) is True
    assert files.ensure_file(spec(target), True, []) is True
    assert not target.exists() and not folder.exists()
    target.write_text("old\n")
    assert files.ensure_file(spec(target, state="absent"), True, []) is True
    assert target.read_text() == "old\n"


def test_absent_removes_and_a_second_time_changes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "proxy.conf"
    target.write_text('Acquire::http::Proxy "http://x";\n')
    assert files.ensure_file(spec(target, content="", state="absent"), False, []) is True
    assert not target.exists()
    assert files.ensure_file(spec(target, content="", state="absent"), False, []) is False


def test_a_folder_is_created_and_its_mode_repaired(tmp_path: Path) -> None:
    folder = tmp_path / "containerd"
    dir_spec = {"path": str(folder), "owner": OWNER, "group": GROUP, "mode": "0755"}
    assert files.ensure_directory(dir_spec, False) is True
    assert folder.is_dir() and mode_of(folder) == 0o755
    assert files.ensure_directory(dir_spec, False) is False
    folder.chmod(0o700)
    assert files.ensure_directory(dir_spec, False) is True
    assert mode_of(folder) == 0o755


def test_a_secret_never_appears_in_the_diff(tmp_path: Path) -> None:
    target = tmp_path / "token"
    diffs: list[dict[str, str]] = []
    files.ensure_file(spec(target, content="s3cr3t\n", mode="0600", secret=True), False, diffs)
    assert "s3cr3t" not in repr(diffs)
    assert mode_of(target) == 0o600


def test_unsafe_writes_rewrites_in_place(tmp_path: Path) -> None:
    target = tmp_path / "hosts"
    target.write_text("old\n")
    inode = target.stat().st_ino
    assert files.ensure_file(spec(target, unsafe_writes=True), False, []) is True
    assert target.read_text() == "a = 1\n" and target.stat().st_ino == inode


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: spec(p / "missing" / "a.conf"), "does not exist"),
    (lambda p: spec(p), "not a regular file"),
    (lambda p: spec(p / "a.conf", mode="rw-r--r--"), "not an octal mode"),
    (lambda p: spec(p / "a.conf", owner="no-such-user-pikube"), "no such user"),
])  # fmt: skip
def test_bad_input_is_a_clear_error(tmp_path: Path, make: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        files.ensure_file(make(tmp_path), False, [])


def test_through_ansible_a_second_run_and_a_check_run_change_nothing(tmp_path: Path) -> None:
    """The module as roles call it (its short name, pikube's ansible.cfg): written, then
    changed=0; changed by hand, repaired; in check mode, reported and left alone."""
    conf = tmp_path / "etc" / "a.conf"
    task = {
        "name": "Write",
        "pikube_files": {
            "directories": [{"path": str(conf.parent), "owner": OWNER, "group": GROUP}],
            "files": [
                {"path": str(conf), "content": "{{ value }}\n", "owner": OWNER, "group": GROUP},
                {"path": str(tmp_path / "gone"), "state": "absent"},
            ],
        },
    }
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "vars": {"value": "x = 1"}, "tasks": [task]}]  # fmt: skip
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump(play))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env |= {"ANSIBLE_CONFIG": str(data_path("ansible.cfg")), "ANSIBLE_NOCOLOR": "1"}
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", str(playbook)]
    argv += ["-e", f"ansible_python_interpreter={sys.executable}"]

    def run(*extra: str) -> str:
        proc = subprocess.run([*argv, *extra], capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
        return proc.stdout

    assert "changed=1 " in run()
    assert conf.read_text() == "x = 1\n"
    assert "changed=0 " in run()
    conf.write_text("by hand\n")
    out = run("--check", "--diff")
    assert "changed=1 " in out and "-by hand" in out and "+x = 1" in out
    assert conf.read_text() == "by hand\n"
    assert "changed=1 " in run()
    assert conf.read_text() == "x = 1\n"


def test_validate_checks_the_new_content_before_it_replaces_the_file(tmp_path: Path) -> None:
    target = tmp_path / "kubeadm.yaml"
    target.write_text("kind: Old\n")
    good = spec(target, "kind: Good\n", validate="grep -q Good %s")
    assert files.ensure_file(good, False, []) is True
    assert target.read_text() == "kind: Good\n"
    bad = spec(target, "kind: Bad\n", validate="grep -q Good %s")
    with pytest.raises(ValueError, match=r"fails its check \(grep -q Good %s, exit 1\)"):
        files.ensure_file(bad, False, [])
    assert target.read_text() == "kind: Good\n"  # left as it was
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pikube-")]
    # check mode judges nothing and writes nothing, as the template module's validate
    assert files.ensure_file(bad, True, []) is True
    assert target.read_text() == "kind: Good\n"


def test_validate_hides_what_the_checker_said_of_a_secret_file(tmp_path: Path) -> None:
    target = tmp_path / "key.yaml"
    loud = spec(target, "key: s3cret\n", validate="sh -c 'cat \"$0\" >&2; exit 3' %s")
    with pytest.raises(ValueError, match=r"s3cret"):
        files.ensure_file(loud, False, [])
    quiet = {**loud, "secret": True}
    with pytest.raises(ValueError, match=r"not shown: the file is secret") as err:
        files.ensure_file(quiet, False, [])
    assert "s3cret" not in str(err.value)
    assert not target.exists()


def test_validate_without_a_placeholder_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "a.conf"
    with pytest.raises(ValueError, match="has no %s"):
        files.ensure_file(spec(target, validate="true"), False, [])
    assert not target.exists()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a file to another user needs root")
def test_an_empty_owner_and_group_are_left_as_they_are(tmp_path: Path) -> None:
    # The admin machine's kubeconfig: written as whoever runs pikube, a rewrite keeps the
    # file's owner; root here stands for "another user" (the test runs as root in CI).
    target = tmp_path / "config"
    keep = spec(target, owner="", group="", mode="0600")
    assert files.ensure_file(keep, False, []) is True
    assert (target.stat().st_uid, target.stat().st_gid) == (os.getuid(), os.getgid())
    os.chown(target, 65534, 65534)
    assert files.ensure_file(keep, False, []) is False  # owner not judged
    assert files.ensure_file({**keep, "content": "b = 2\n"}, False, []) is True
    assert (target.stat().st_uid, target.stat().st_gid) == (65534, 65534)
    assert target.read_text() == "b = 2\n" and mode_of(target) == 0o600
    folder = {"path": str(tmp_path / "kube"), "owner": "", "group": "", "mode": "0700"}
    assert files.ensure_directory(folder, False) is True
    os.chown(tmp_path / "kube", 65534, 65534)
    assert files.ensure_directory(folder, False) is False
