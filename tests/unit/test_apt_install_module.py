"""The module pikube_apt_install runs apt only for the packages dpkg does not have, in one
apt-get install after an optional update, refuses anything that is not a package name, and in
check mode says what it would install without running apt."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cni import plugin_module

apt = plugin_module("pikube_apt_install")

# dpkg-query --show --showformat='${db:Status-Abbrev}${Package}\n' on a node with containerd
# installed, kubeadm held, kubelet removed (config left) and kubectl unknown to dpkg (stderr).
DPKG = "ii containerd\nhi kubeadm\nrc kubelet\n"


class Node:
    """The module's view of a node: records the commands run, answers dpkg-query with DPKG."""

    def __init__(self, check_mode: bool = False, fail: str = "") -> None:
        self.check_mode = check_mode
        self.fail = fail
        self.ran: list[list[str]] = []
        self.env: list[dict[str, str] | None] = []

    def run_command(self, argv: list[str], environ_update: Any = None) -> tuple[int, str, str]:
        self.ran.append(argv)
        self.env.append(environ_update)
        if argv[0] == "dpkg-query":
            return 1, DPKG, "dpkg-query: no packages found matching kubectl\n"
        if self.fail and argv[1:3] == ["-q", self.fail]:
            return 100, "", "E: Failed to fetch http://deb.debian.org/...\n"
        return 0, f"ran {argv[-1]}\n", ""

    def fail_json(self, **result: Any) -> None:
        raise RuntimeError(result)


def test_only_the_missing_packages_are_installed_in_one_apt_run_after_the_update() -> None:
    node = Node()
    result = apt.install(node, ["containerd", "kubelet", "kubeadm", "kubectl"], True)
    assert result["changed"] is True
    assert result["installed"] == ["kubelet", "kubectl"]
    assert [argv[:3] for argv in node.ran] == [
        ["dpkg-query", "--show", "--showformat=${db:Status-Abbrev}${Package}\n"],
        ["apt-get", "-q", "update"],
        ["apt-get", "-q", "-y"],
    ]
    assert node.ran[-1][-3:] == ["--", "kubelet", "kubectl"]
    assert "Dpkg::Options::=--force-confold" in node.ran[-1]  # the node's own config files stay
    assert node.env[-1] == {"DEBIAN_FRONTEND": "noninteractive"}


def test_with_everything_installed_no_apt_runs_and_nothing_changes() -> None:
    node = Node()
    assert apt.install(node, ["containerd", "kubeadm"], True) == {"changed": False, "installed": []}
    assert [argv[0] for argv in node.ran] == ["dpkg-query"]


def test_without_update_cache_the_lists_are_not_refreshed() -> None:
    node = Node()
    apt.install(node, ["kubectl"], False)
    assert [argv[1:3] for argv in node.ran[1:]] == [["-q", "-y"]]


def test_check_mode_names_what_would_be_installed_and_runs_no_apt() -> None:
    node = Node(check_mode=True)
    result = apt.install(node, ["kubelet", "containerd"], True)
    assert result == {"changed": True, "installed": ["kubelet"], "msg": "would install kubelet"}
    assert [argv[0] for argv in node.ran] == ["dpkg-query"]


def test_a_failed_update_fails_the_task_before_any_install() -> None:
    node = Node(fail="update")
    with pytest.raises(RuntimeError, match="apt-get -q update failed"):
        apt.install(node, ["kubelet"], True)
    assert node.ran[-1][:3] == ["apt-get", "-q", "update"]


@pytest.mark.parametrize(
    "name", ["-oAPT::Get::Foo=1", "kubelet=1.31.2-1.1", "kube*", "Kubelet", ""]
)
def test_anything_but_a_debian_package_name_is_refused(name: str) -> None:
    assert apt.bad_names(["kubelet", name]) == [name]


def test_debian_package_names_pass() -> None:
    assert apt.bad_names(["libstdc++6", "python3-apt", "cri-tools", "g++", "ca-certificates"]) == []


def test_a_held_lists_lock_is_waited_for_then_the_update_goes_on(monkeypatch: Any) -> None:
    # apt-get update does not wait for /var/lib/apt/lists/lock (apt-daily's update holds it
    # on a fresh image's first boot): the module polls until the lock is free.
    monkeypatch.setattr(apt, "LOCK_POLL_S", 0.0)
    node = Node()
    answers = iter(
        [
            (
                100,
                "",
                "E: Could not get lock /var/lib/apt/lists/lock. It is held by process 77\n",
            )
        ]
        * 2
    )
    plain = node.run_command

    def run(argv: list[str], environ_update: Any = None) -> tuple[int, str, str]:
        if argv[1:3] == ["-q", "update"]:
            node.ran.append(argv)
            return next(answers, (0, "", ""))
        return plain(argv, environ_update)

    node.run_command = run  # type: ignore[method-assign]
    result = apt.install(node, ["kubelet"], True, lock_timeout=60)
    assert result["installed"] == ["kubelet"]
    assert [argv[2] for argv in node.ran[1:]] == ["update", "update", "update", "-y"]
    assert "DPkg::Lock::Timeout=60" in node.ran[-1]  # dpkg's lock: apt waits itself


def test_a_lock_held_past_the_timeout_fails_with_apts_words() -> None:
    node = Node()
    node.run_command = lambda argv, environ_update=None: (  # type: ignore[method-assign]
        (0, DPKG, "") if argv[0] == "dpkg-query" else (100, "", "E: Could not get lock x\n")
    )
    with pytest.raises(RuntimeError, match="Could not get lock"):
        apt.install(node, ["kubelet"], True, lock_timeout=0)


def test_an_empty_lists_folder_is_no_package_lists_however_new(tmp_path: Any) -> None:
    # A fresh image (debootstrap, a cloud image) ships /var/lib/apt/lists empty, its mtime that
    # of the build: taken for lists refreshed then, apt would be asked to install from nothing.
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    (tmp_path / "lists" / "lock").touch()
    assert apt.apt_lists_age(str(tmp_path)) is None


def test_lists_with_an_index_are_as_old_as_the_success_stamp(tmp_path: Any) -> None:
    import os
    import time

    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages.lz4").touch()
    assert 0 <= apt.apt_lists_age(str(tmp_path)) < 60  # the folder's mtime: no stamp
    stamp = tmp_path / "periodic" / "update-success-stamp"
    stamp.parent.mkdir()
    stamp.touch()
    old = time.time() - 7200
    os.utime(stamp, (old, old))
    assert 7190 < apt.apt_lists_age(str(tmp_path)) < 7300


def test_no_apt_folder_is_no_package_lists(tmp_path: Any) -> None:
    assert apt.apt_lists_age(str(tmp_path / "missing")) is None


def lists_refreshed(root: Any, seconds_ago: float) -> str:
    import os
    import time

    lists = root / "lists"
    lists.mkdir(parents=True)
    (lists / "deb.debian.org_debian_dists_bookworm_main_binary-arm64_Packages").touch()
    then = time.time() - seconds_ago
    os.utime(lists, (then, then))
    return str(root)


def test_lists_younger_than_cache_valid_time_are_kept(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(apt, "APT_STATE", lists_refreshed(tmp_path, 600))
    node = Node()
    apt.install(node, ["kubectl"], True, cache_valid_time=3600)
    assert [argv[2] for argv in node.ran[1:]] == ["-y"]
    node = Node()
    apt.install(node, ["kubectl"], True, cache_valid_time=300)
    assert [argv[2] for argv in node.ran[1:]] == ["update", "-y"]


def test_a_fresh_images_empty_lists_are_refreshed_whatever_their_date(
    tmp_path: Any, monkeypatch: Any
) -> None:
    (tmp_path / "lists" / "partial").mkdir(parents=True)
    monkeypatch.setattr(apt, "APT_STATE", str(tmp_path))
    node = Node()
    apt.install(node, ["kubectl"], True, cache_valid_time=3600)
    assert [argv[2] for argv in node.ran[1:]] == ["update", "-y"]


def test_a_changed_repository_is_refreshed_with_everything_installed_and_is_no_change() -> None:
    # pikube upgrade points the repository at the next minor: apt must learn its versions
    # although every package is installed (the upgrade then asks apt-cache policy).
    node = Node()
    result = apt.install(node, ["containerd", "kubeadm"], True, update_cache_anyway=True)
    assert result["changed"] is False
    assert [argv[:3] for argv in node.ran[1:]] == [["apt-get", "-q", "update"]]
    check = Node(check_mode=True)
    assert apt.install(check, ["containerd"], True, update_cache_anyway=True)["changed"] is False
    assert [argv[0] for argv in check.ran] == ["dpkg-query"]
