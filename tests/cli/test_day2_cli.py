"""Day-2 commands through click's CliRunner: confirmation prompts, refusals, bad input.

No lab needed: every refusal happens before Ansible runs; the one prompt-accepted case runs
the real playbook against loopback addresses nobody answers on (exit 6).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import pikube.cli.day2 as day2
from pikube.cli.main import cli
from pikube.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_QUORUM, EXIT_UNREACHABLE, EXIT_USAGE
from tests.factories import loopback_cluster_data, write_cluster
from tests.factories import run_dirs as runs


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def cluster(tmp_path: Path, ssh_key: Path) -> Path:
    data = loopback_cluster_data(tmp_path, ssh_key, 3)
    data["kubernetes"]["version"] = "1.30"
    return write_cluster(tmp_path, data)


def test_every_day2_command_is_in_the_command_table() -> None:
    listing = run("--help").stdout
    for name in ("add-node", "remove-node", "reset", "upgrade", "status", "doctor"):
        assert f"  {name} " in listing


@pytest.mark.parametrize(
    "args",
    [
        ("reset",),
        ("remove-node", "pi-w1"),
        ("upgrade", "--to", "1.31"),
    ],
)
def test_destructive_commands_refuse_without_tty_or_yes(
    cluster: Path, args: tuple[str, ...]
) -> None:
    result = run(*args, "--cluster", str(cluster))
    assert result.exit_code == EXIT_USAGE
    assert "stdin is not a terminal" in result.stderr
    assert f"pikube {args[0]} --yes" in result.stderr
    assert result.stdout == ""
    assert runs(cluster) == []  # no playbook ran


def test_reset_prompt_names_the_cluster_and_a_wrong_answer_changes_nothing(
    cluster: Path, tty: None
) -> None:
    result = run("reset", "--cluster", str(cluster), input="prod\n")
    assert result.exit_code == EXIT_FAILURE
    assert "reset cluster homelab on all nodes (pi-cp1, pi-w1, pi-w2)" in result.stderr
    assert "Type the cluster name (homelab)" in result.stderr or "homelab" in result.output
    assert "not confirmed" in result.stderr and "nothing changed" in result.stderr
    assert runs(cluster) == []


def test_reset_prompt_accepted_runs_the_reset_playbook(cluster: Path, tty: None) -> None:
    result = run("reset", "--cluster", str(cluster), "--limit", "pi-w2", input="homelab\n")
    # The nodes are loopback addresses without sshd: the playbook ran and could not reach them.
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    (run_dir,) = runs(cluster)
    command = (run_dir / "command.txt").read_text() if (run_dir / "command.txt").exists() else ""
    assert "reset" in run_dir.name
    assert "reset.yml" in command or any(
        "reset.yml" in p.read_text() for p in run_dir.glob("*.json")
    )


def test_reset_limit_with_unknown_node_is_a_usage_error(cluster: Path) -> None:
    result = run("reset", "--cluster", str(cluster), "--limit", "pi-w9", "--yes")
    assert result.exit_code == EXIT_USAGE
    assert "unknown node 'pi-w9'" in result.stderr


def test_add_node_refuses_a_node_missing_from_the_cluster_file(cluster: Path) -> None:
    result = run("add-node", "pi-w7", "--cluster", str(cluster))
    assert result.exit_code == EXIT_FAILURE
    assert "node 'pi-w7' is not in the cluster file" in result.stderr
    assert "pi-cp1, pi-w1, pi-w2" in result.stderr


def test_add_node_refuses_the_control_plane(cluster: Path) -> None:
    result = run("add-node", "pi-cp1", "--cluster", str(cluster))
    assert result.exit_code == EXIT_FAILURE
    assert "control plane" in result.stderr


def test_remove_node_refuses_the_control_plane(cluster: Path) -> None:
    result = run("remove-node", "pi-cp1", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_FAILURE
    assert "pikube reset" in result.stderr
    assert runs(cluster) == []


@pytest.fixture
def ha_cluster(tmp_path: Path, ssh_key: Path) -> Path:
    """Three control planes behind a VIP and a worker, on loopback addresses nobody answers."""
    data = loopback_cluster_data(tmp_path, ssh_key, 4, "pi4-4gb")
    for i, node in enumerate(data["nodes"][:3], 1):
        node["name"], node["role"] = f"pi-cp{i}", "control-plane"
    data["nodes"][3].update(name="pi-w1", role="worker")
    data["network"]["vip"] = "127.0.0.100"
    return write_cluster(tmp_path, data)


def test_remove_node_refuses_the_first_control_plane_and_says_how(ha_cluster: Path) -> None:
    result = run("remove-node", "pi-cp1", "--yes", "--cluster", str(ha_cluster))
    assert result.exit_code == EXIT_FAILURE, result.stderr
    assert "first control plane" in result.stderr
    assert "move another control plane (pi-cp2, pi-cp3) above it" in result.stderr
    assert runs(ha_cluster) == []


def test_remove_node_of_a_control_plane_refuses_when_quorum_cannot_be_checked(
    ha_cluster: Path,
) -> None:
    # No control plane answers SSH, so no datastore member can vouch for quorum: exit 7
    # before any playbook runs.
    result = run("remove-node", "pi-cp2", "--yes", "--cluster", str(ha_cluster))
    assert result.exit_code == EXIT_QUORUM, result.stderr
    assert "refusing" in result.stderr or "cannot tell whether" in result.stderr
    assert "nothing was changed" in result.stderr
    assert runs(ha_cluster) == []


def members_answer(monkeypatch: pytest.MonkeyPatch, healthy: dict[str, bool]) -> list[str]:
    """The control planes answer as etcd members (``healthy`` by node); the playbook run is
    replaced: returns the --limit add-node or remove-node hands it, as a list."""
    from pikube.probe import status
    from pikube.probe.ha import ControlPlaneView, Member, quorum

    members = [
        Member(name=n, address=f"127.0.0.{i}", healthy=h, node=n)
        for i, (n, h) in enumerate(healthy.items(), 1)
    ]
    view = ControlPlaneView("etcd", "127.0.0.100", [], members, quorum(members))
    monkeypatch.setattr(status, "ha_view", lambda cluster: view)
    limits: list[str] = []
    monkeypatch.setattr(day2, "run_site", lambda *a, **k: limits.append(k["limit"]))
    return limits


def test_add_node_of_a_control_plane_runs_on_every_serving_control_plane(
    ha_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pi-cp3 was removed: pi-cp1 and pi-cp2 are the members, and their haproxy and
    # keepalived must list it again, so the run covers them.
    limits = members_answer(monkeypatch, {"pi-cp1": True, "pi-cp2": True})
    result = run("add-node", "pi-cp3", "--cluster", str(ha_cluster))
    assert result.exit_code == 0, result.stderr
    assert limits == ["pi-cp3,pi-cp1,pi-cp2"]


def test_add_node_leaves_a_listed_control_plane_that_is_no_member_yet_alone(
    ha_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Growing one at a time: the cluster file lists pi-cp3 before it joins; adding pi-cp2
    # must not need pi-cp3 to answer (nor set it up).
    limits = members_answer(monkeypatch, {"pi-cp1": True})
    result = run("add-node", "pi-cp2", "--cluster", str(ha_cluster))
    assert result.exit_code == 0, result.stderr
    assert limits == ["pi-cp2,pi-cp1"]


def test_add_node_of_a_worker_contacts_only_the_first_control_plane(
    ha_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = members_answer(monkeypatch, {"pi-cp1": True, "pi-cp2": True, "pi-cp3": True})
    assert run("add-node", "pi-w1", "--cluster", str(ha_cluster)).exit_code == 0
    assert limits == ["pi-w1,pi-cp1"]


def test_remove_node_of_a_control_plane_runs_on_every_other_serving_control_plane(
    ha_cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = members_answer(monkeypatch, {"pi-cp1": True, "pi-cp2": True, "pi-cp3": True})
    result = run("remove-node", "pi-cp3", "--yes", "--cluster", str(ha_cluster))
    assert result.exit_code == 0, result.stderr
    assert limits == ["pi-cp3,pi-cp1,pi-cp2"]


def test_remove_node_rejects_a_zero_drain_timeout(cluster: Path) -> None:
    result = run("remove-node", "pi-w1", "--drain-timeout", "0", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_USAGE


def test_remove_node_help_spells_out_force(cluster: Path) -> None:
    text = "".join(run("remove-node", "--help").stdout.split())  # wrapping-proof
    assert "--force--ignore-daemonsets--delete-emptydir-data" in text
    assert "evenifthedrainfailsortimesout" in text


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("1.32", "cannot upgrade from 1.30 to 1.32"),
        ("1.29", "cannot upgrade from 1.30 to 1.29"),
    ],
)
def test_upgrade_refuses_skipping_or_going_back_minors(
    cluster: Path, target: str, message: str
) -> None:
    result = run("upgrade", "--to", target, "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_FAILURE
    assert message in result.stderr
    assert runs(cluster) == []


def test_upgrade_refusal_names_the_next_minor(cluster: Path) -> None:
    result = run("upgrade", "--to", "1.32", "--yes", "--cluster", str(cluster))
    assert "upgrade to 1.31 first" in result.stderr


def test_upgrade_rejects_a_malformed_version(cluster: Path) -> None:
    result = run("upgrade", "--to", "v1.31-beta", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_USAGE
    assert "not a Kubernetes version" in result.stderr


def test_cluster_file_version_update_keeps_comments(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(
        'name: lab  # the lab\nkubernetes:\n  # pinned minor\n  version: "1.30"  # bump me\n'
        "  cni: flannel\n"
    )
    assert day2.update_cluster_file(path, "version", "1.30", "1.31")
    assert path.read_text() == (
        'name: lab  # the lab\nkubernetes:\n  # pinned minor\n  version: "1.31"  # bump me\n'
        "  cni: flannel\n"
    )


def test_cluster_file_version_update_declines_when_ambiguous(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    text = "kubernetes:\n  version: '1.30'\nother:\n  version: '1.30'\n"
    path.write_text(text)
    assert not day2.update_cluster_file(path, "version", "1.30", "1.31")
    assert path.read_text() == text


def recorded_argv(run_dir: Path) -> list[str]:
    """The ansible-playbook argv the run recorded in command.txt (last line, shell-quoted)."""
    import shlex

    return shlex.split((run_dir / "command.txt").read_text().replace("\\\n", " "))


@pytest.mark.parametrize(
    ("args", "playbook"),
    [
        (("reset",), "reset.yml"),
        (("add-node", "pi-w2"), "add_node.yml"),
        (("remove-node", "pi-w2"), "remove_node.yml"),
        (("upgrade", "--to", "1.31"), "upgrade.yml"),
    ],
)
def test_day2_commands_pass_check_diff_tags_and_verbosity_to_ansible(
    cluster: Path, args: tuple[str, ...], playbook: str
) -> None:
    # --check changes nothing, so it needs no confirmation: no --yes and no terminal here.
    result = run(*args, "--check", "--diff", "--tags", "prepare", "-vv", "--cluster", str(cluster))
    # The nodes are loopback addresses without sshd: the playbook ran, and could not reach
    # them unless the tag left nothing to do on them (reset, remove-node: exit 0).
    assert result.exit_code in (0, EXIT_UNREACHABLE), result.stderr
    assert "check mode: nothing was changed" in result.stderr or result.exit_code
    (run_dir,) = runs(cluster)
    argv = recorded_argv(run_dir)
    assert argv[-1].endswith(playbook)
    assert "--check" in argv and "--diff" in argv and "-vv" in argv
    assert argv[argv.index("--tags") + 1] == "prepare"


def test_day2_commands_without_the_options_run_for_real(cluster: Path) -> None:
    result = run("reset", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    (run_dir,) = runs(cluster)
    argv = recorded_argv(run_dir)
    assert not {"--check", "--diff", "--tags"} & set(argv)
    assert not any(a.startswith("-v") for a in argv)


def test_upgrade_in_check_mode_leaves_the_cluster_file_alone(
    cluster: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A check run that succeeds (the playbook run is replaced: no nodes here) must not record
    # the new version in cluster.yaml, while a real run does.
    monkeypatch.setattr(day2, "run_site", lambda *a, **k: None)
    before = cluster.read_text()
    result = run("upgrade", "--to", "1.31", "--check", "--cluster", str(cluster))
    assert result.exit_code == 0, result.stderr
    assert "check mode: nothing was changed" in result.stderr
    assert cluster.read_text() == before
    result = run("upgrade", "--to", "1.31", "--yes", "--cluster", str(cluster))
    assert result.exit_code == 0, result.stderr
    assert cluster.read_text() != before and "1.31" in cluster.read_text()


def test_upgrade_passes_the_ready_timeout_to_the_playbook(cluster: Path) -> None:
    result = run(
        "upgrade", "--to", "1.31", "--yes", "--ready-timeout", "45", "--cluster", str(cluster)
    )
    assert result.exit_code == EXIT_UNREACHABLE, result.stderr
    # The retry names the upgrade again (upgrade has no --limit to retry some nodes with).
    assert "then run `pikube upgrade --to 1.31 --yes`" in result.stderr
    (run_dir,) = runs(cluster)
    argv = recorded_argv(run_dir)
    extra = json.loads(argv[argv.index("--extra-vars") + 1])
    assert extra == {"pikube_upgrade_ready_timeout": 45, "pikube_upgrade_to": "1.31"}


def microk8s_cluster(tmp_path: Path, ssh_key: Path, channel: str) -> Path:
    data = loopback_cluster_data(tmp_path, ssh_key, 2)
    data["distribution"] = "microk8s"
    data["kubernetes"] = {"channel": channel}
    return write_cluster(tmp_path, data)


def test_upgrade_of_a_latest_channel_cluster_is_refused_with_the_fix(
    tmp_path: Path, ssh_key: Path
) -> None:
    """`channel: latest/stable` names no minor: `upgrade --to 1.32` refuses it with exit 3 and
    says how to name the track (it used to end in a raw IndexError traceback)."""
    cluster = microk8s_cluster(tmp_path, ssh_key, "latest/stable")
    assert run("validate", "--cluster", str(cluster)).exit_code == 0
    result = run("upgrade", "--to", "1.32", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_CONFIG, result.stderr
    assert "latest/stable has no version track" in result.stderr
    assert "fix: set kubernetes.channel to the track the cluster runs" in result.stderr
    assert "Traceback" not in result.stderr
    assert runs(cluster) == []


def test_microk8s_upgrade_targets_follow_the_channel_grammar(
    tmp_path: Path, ssh_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--to 1.32 means 1.32/stable; a strict or latest target is a usage error with a fix."""
    seen: list[object] = []
    monkeypatch.setattr(day2, "run_site", lambda *a, **k: seen.append(k["extra_vars"]))
    cluster = microk8s_cluster(tmp_path, ssh_key, "1.31/stable")
    result = run("upgrade", "--to", "1.32", "--yes", "--cluster", str(cluster))
    assert result.exit_code == 0, result.stderr
    assert seen[-1]["pikube_upgrade_to"] == "1.32/stable"  # type: ignore[index]
    assert 'channel: "1.32/stable"' in cluster.read_text()
    for target, message in (
        ("1.33-strict/stable", "strictly confined"),
        ("latest/stable", "not a MicroK8s version or channel"),
    ):
        result = run("upgrade", "--to", target, "--yes", "--cluster", str(cluster))
        assert result.exit_code == EXIT_USAGE, result.stderr
        assert message in result.stderr


def test_a_strict_channel_cluster_gets_the_validation_error_not_report_it(
    tmp_path: Path, ssh_key: Path
) -> None:
    """`channel: 1.31-strict/stable` stops every command at validation with the classic track
    as the fix (`pikube upgrade` used to fail with a ValueError and "report it")."""
    cluster = microk8s_cluster(tmp_path, ssh_key, "1.31-strict/stable")
    result = run("upgrade", "--to", "1.32", "--yes", "--cluster", str(cluster))
    assert result.exit_code == EXIT_CONFIG, result.stderr
    assert "strictly confined" in result.stderr and "channel: 1.31/stable" in result.stderr
    assert "report it" not in result.stderr
