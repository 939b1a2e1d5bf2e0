"""The lab's nodes behave like freshly flashed Pis reachable over real SSH.

Runs against the session lab (3 nodes, node-1 with a Raspberry Pi 4 personality).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.lab import Lab
from tests.lab.fixtures import bin_path, run_ansible

pytestmark = pytest.mark.lab


def ssh(lab: Lab, node: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        lab.ssh_argv(node, [command]), capture_output=True, text=True, timeout=60, check=False
    )


def test_every_node_boots_to_a_running_systemd(lab: Lab) -> None:
    states = {n.name: lab.system_state(n.name) for n in lab.nodes()}
    assert states == {n.name: "running" for n in lab.nodes()}, {
        n: lab.failed_units(n) for n, s in states.items() if s == "degraded"
    }


def test_nodes_have_their_own_identity(lab: Lab) -> None:
    """Own hostname, machine-id and SSH host keys (generated at first boot, not in the image)."""
    hostnames, machine_ids, host_keys = set(), set(), set()
    for node in lab.nodes():
        hostnames.add(lab.exec(node.name, ["hostname"], check=True).stdout.strip())
        machine_ids.add(lab.exec(node.name, ["cat", "/etc/machine-id"], check=True).stdout)
        host_keys.add(lab.host_keys(node.name)[0])
    count = len(lab.nodes())
    assert hostnames == {n.name for n in lab.nodes()}
    assert len(machine_ids) == count
    assert len(host_keys) == count
    base = Path(json.loads((lab.state_dir / "state.json").read_text())["rootfs"])
    assert not list((base / "etc/ssh").glob("ssh_host_*")), "the cached rootfs carries host keys"


def test_the_generated_cluster_file_passes_pikube_validate(lab_cluster: Path) -> None:
    result = subprocess.run(
        [bin_path("pikube"), "validate", "--cluster", str(lab_cluster)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_ansible_ping_answers_from_every_node_with_host_key_checking(
    lab: Lab, lab_inventory: Path
) -> None:
    result = run_ansible(lab, lab_inventory, "all", "-m", "ansible.builtin.ping")
    assert result.returncode == 0, result.stdout + result.stderr
    for node in lab.nodes():
        assert f"{node.name} | SUCCESS" in result.stdout


def test_ansible_refuses_nodes_whose_host_key_is_unknown(
    lab: Lab, lab_inventory: Path, tmp_path: Path
) -> None:
    """Host key checking really is on: an empty known_hosts makes every host unreachable."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = f"-o UserKnownHostsFile={empty} -o StrictHostKeyChecking=yes"
    fresh = tmp_path / "cp"  # no ControlPersist master from earlier tests to piggy-back on
    fresh.mkdir()
    result = run_ansible(
        lab,
        lab_inventory,
        "all",
        "-m",
        "ansible.builtin.ping",
        "-e",
        f"ansible_ssh_common_args='{args}'",
        env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(fresh)},
    )
    assert result.returncode != 0
    assert "Host key verification failed" in result.stdout + result.stderr


def test_passwordless_sudo_for_the_ubuntu_user(lab: Lab) -> None:
    result = ssh(lab, "node-2", "sudo -n id -u")
    assert (result.returncode, result.stdout.strip()) == (0, "0"), result.stderr


def test_modprobe_br_netfilter_and_overlay_succeed(lab: Lab) -> None:
    result = ssh(lab, "node-2", "sudo modprobe br_netfilter && sudo modprobe overlay")
    assert result.returncode == 0, result.stderr
    missing = ssh(lab, "node-2", "sudo modprobe no_such_module_xyz")
    assert missing.returncode != 0  # modprobe is real, not a stub that always succeeds


def test_pi_node_looks_like_ubuntu_on_a_pi_4(lab: Lab) -> None:
    model = lab.exec("node-1", ["cat", "/sys/firmware/devicetree/base/model"], check=True)
    assert model.stdout == "Raspberry Pi 4 Model B Rev 1.4\0"
    cmdline = lab.exec("node-1", ["cat", "/boot/firmware/cmdline.txt"], check=True).stdout
    assert "root=LABEL=writable" in cmdline and cmdline.endswith("splash\n")
    config = lab.exec("node-1", ["cat", "/boot/firmware/config.txt"], check=True).stdout
    assert "arm_64bit=1" in config
    plain = lab.exec("node-2", ["test", "-e", "/sys/firmware/devicetree/base/model"])
    assert plain.returncode != 0, "a node without Pi personality must not claim to be a Pi"


def test_nodes_know_the_lab_http_server(lab: Lab) -> None:
    (lab.www_dir / "probe.txt").write_text("lab www\n")
    env = lab.exec("node-2", ["cat", "/etc/pikube-lab/lab.env"], check=True).stdout
    assert f"LAB_HTTP={lab.http_url}\n" in env
    result = ssh(lab, "node-2", f"curl -sf {lab.http_url}/probe.txt")
    assert result.stdout == "lab www\n", result.stderr


def test_apt_works_through_the_proxy_on_the_bridge(lab: Lab) -> None:
    result = ssh(lab, "node-3", f"sudo apt-get -q -o Acquire::http::Proxy={lab.apt_proxy} update")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "bookworm" in result.stdout


def test_nodes_cannot_reach_anything_outside_the_lab(lab: Lab) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never routed on the internet.
    result = ssh(lab, "node-2", "curl -s --max-time 3 http://192.0.2.1/")
    assert result.returncode != 0
    direct = ssh(lab, "node-2", "curl -s --max-time 3 http://deb.debian.org/")
    assert direct.returncode != 0, "a node reached the internet without the proxy"


def test_a_rebooted_node_comes_back(lab: Lab, lab_inventory: Path) -> None:
    """ansible.builtin.reboot works (nspawn exits 133, the supervisor boots the node again),
    and kernel flags written to cmdline.txt take effect at that reboot."""
    before = lab.reboot_count("node-1")
    boot_id = lab.exec("node-1", ["cat", "/proc/sys/kernel/random/boot_id"]).stdout
    edit = ssh(lab, "node-1", "sudo sed -i 's/$/ cgroup_enable=memory/' /boot/firmware/cmdline.txt")
    assert edit.returncode == 0, edit.stderr
    running = lab.exec("node-1", ["cat", "/run/pikube-lab/cmdline"]).stdout
    assert "cgroup_enable=memory" not in running  # not before the reboot
    result = run_ansible(
        lab,
        lab_inventory,
        "node-1",
        "--become",
        "-m",
        "ansible.builtin.reboot",
        "-a",
        '{"test_command": "systemctl is-system-running"}',
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert lab.reboot_count("node-1") == before + 1
    assert lab.exec("node-1", ["cat", "/proc/sys/kernel/random/boot_id"]).stdout != boot_id
    running = lab.exec("node-1", ["cat", "/run/pikube-lab/cmdline"]).stdout
    assert "cgroup_enable=memory" in running
    # The Pi personality survives the reboot.
    model = lab.exec("node-1", ["cat", "/sys/firmware/devicetree/base/model"]).stdout
    assert model.startswith("Raspberry Pi 4")


def test_isolate_cuts_a_node_off_and_heal_restores_it(lab: Lab) -> None:
    node3 = lab.node("node-3").ip
    ping = ["ping", "-c", "1", "-W", "1", node3]
    assert lab.exec("node-2", ping).returncode == 0
    lab.isolate("node-3")
    try:
        assert lab.exec("node-2", ping).returncode != 0
        assert lab.status()["nodes"][2]["isolated"] is True
    finally:
        lab.heal("node-3")
    # The link's carrier and a fresh ARP lookup take a moment after `heal` (the kernel's
    # linkwatch delays carrier events up to a second): one reply within 15 s, not within 1 s.
    back = ["ping", "-c", "1", "-w", "15", node3]
    assert lab.exec("node-2", back, timeout=30).returncode == 0


def test_stop_powers_a_node_off_and_start_brings_it_back(lab: Lab) -> None:
    keys = lab.host_keys("node-2")
    lab.stop("node-2")
    assert lab.system_state("node-2") == "stopped"
    netns = lab.node("node-2").netns
    assert (
        subprocess.run(
            ["ip", "netns", "pids", netns], capture_output=True, text=True, check=True
        ).stdout
        == ""
    )
    assert lab.start("node-2") == "running"
    assert lab.host_keys("node-2") == keys  # same disk: same host keys
    result = ssh(lab, "node-2", "true")
    assert result.returncode == 0, result.stderr
