"""The foundation commands through click's CliRunner: exit codes, stderr, clean stdout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from pikube import __version__
from pikube.cli.main import cli
from pikube.errors import EXIT_CONFIG, EXIT_FAILURE, EXIT_USAGE
from tests.factories import base_cluster, edited, write_cluster


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def cluster_file(tmp_path: Path, ssh_key: Path) -> Path:
    return write_cluster(tmp_path, base_cluster(ssh_key))


def test_version_names_pikube_and_ansible_core() -> None:
    result = run("--version")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"pikube {__version__}"
    assert lines[1].startswith("ansible-core 2.")


def test_help_lists_commands_and_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for command in ("init", "validate", "inventory"):
        assert command in result.stdout
    assert "3 invalid configuration" in result.stdout


def test_help_imports_no_heavy_modules() -> None:
    """--help must stay fast: listing commands imports neither Ansible, pydantic nor Jinja2."""
    code = (
        "import sys\nfrom pikube.cli.main import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('ansible', 'pydantic', 'jinja2', 'yaml', 'paramiko', 'rich')"
        " if m in sys.modules]\nprint('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in result.stderr


def test_init_writes_a_valid_example(
    tmp_path: Path, ssh_key: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = ssh_key.parent.parent
    (home / ".ssh").mkdir(exist_ok=True)
    for suffix in ("", ".pub"):
        target = home / ".ssh" / f"id_ed25519{suffix}"
        if not target.exists():
            target.write_bytes(Path(f"{ssh_key}{suffix}").read_bytes())
            target.chmod(0o600)
    monkeypatch.setenv("HOME", str(home))
    target = tmp_path / "cluster.yaml"
    result = run("init", "--cluster", str(target))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert f"wrote {target}" in result.stderr
    assert run("validate", "--cluster", str(target)).exit_code == 0


def test_init_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    target = tmp_path / "cluster.yaml"
    target.write_text("mine\n")
    result = run("init", "--cluster", str(target))
    assert result.exit_code == EXIT_FAILURE
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert target.read_text() == "mine\n"
    assert run("init", "--cluster", str(target), "--force").exit_code == 0
    assert target.read_text() != "mine\n"


def test_init_microk8s(tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    assert run("init", "-c", str(target), "--distribution", "microk8s").exit_code == 0
    assert "distribution: microk8s" in target.read_text()


def test_validate_ok_prints_summary_on_stderr_only(cluster_file: Path) -> None:
    result = run("validate", "--cluster", str(cluster_file))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "OK" in result.stderr and "4 nodes" in result.stderr


def test_validate_json_is_data_on_stdout(cluster_file: Path) -> None:
    result = run("validate", "--cluster", str(cluster_file), "--json")
    data = json.loads(result.stdout)
    assert data["nodes"][0]["name"] == "pi-cp1"


def test_validate_reports_every_problem_with_exit_code_3(tmp_path: Path, ssh_key: Path) -> None:
    data: dict[str, Any] = edited(
        base_cluster(ssh_key), **{"nodes.1.ip": "192.168.1.1", "nodes.2.name": "Bad"}
    )
    path = write_cluster(tmp_path, data)
    result = run("validate", "--cluster", str(path))
    assert result.exit_code == EXIT_CONFIG
    assert result.stdout == ""
    assert result.stderr.startswith(f"Error: {path} has 2 problems:")
    assert "(nodes[1].ip)" in result.stderr and "(nodes[2].name)" in result.stderr
    assert "fix:" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_yaml_is_exit_3_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text("name: x\n  nodes: [\n")
    result = run("validate", "--cluster", str(path))
    assert result.exit_code == EXIT_CONFIG
    assert "not valid YAML" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_cluster_file(tmp_path: Path) -> None:
    result = run("validate", "--cluster", str(tmp_path / "nope.yaml"))
    assert result.exit_code == EXIT_CONFIG
    assert "does not exist" in result.stderr and "pikube init" in result.stderr


def test_cluster_file_from_environment(cluster_file: Path) -> None:
    result = run("validate", env={"PIKUBE_CLUSTER": str(cluster_file)})
    assert result.exit_code == 0


def test_inventory_to_stdout_is_yaml_only(cluster_file: Path) -> None:
    result = run("inventory", "--cluster", str(cluster_file))
    assert result.exit_code == 0
    parsed = yaml.safe_load(result.stdout)
    assert "pi-cp1" in parsed["all"]["children"]["cluster"]["children"]["control_plane"]["hosts"]
    assert result.stderr == ""


def test_inventory_to_directory(cluster_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("inventory", "--cluster", str(cluster_file), "--output", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert (out / "hosts.yml").is_file() and (out / "group_vars" / "cluster.yml").is_file()
    assert f"wrote {out / 'hosts.yml'}" in result.stderr


def test_inventory_refuses_an_invalid_cluster(tmp_path: Path, ssh_key: Path) -> None:
    path = write_cluster(tmp_path, edited(base_cluster(ssh_key), **{"nodes.0.role": "worker"}))
    result = run("inventory", "--cluster", str(path))
    assert result.exit_code == EXIT_CONFIG
    assert result.stdout == ""


def test_unknown_option_is_a_usage_error() -> None:
    result = run("validate", "--bogus")
    assert result.exit_code == EXIT_USAGE
    assert "No such option" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.exit_code == EXIT_USAGE


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run("--debug", "validate", "--cluster", str(tmp_path / "nope.yaml"))
    assert result.exit_code == EXIT_CONFIG
    assert "Traceback" in result.stderr


def test_shell_completion_through_click() -> None:
    env = {"_PIKUBE_COMPLETE": "bash_complete", "COMP_WORDS": "pikube inv", "COMP_CWORD": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pikube"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, **env},
    )
    assert "inventory" in result.stdout


def test_console_script_runs_outside_click_runner(cluster_file: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pikube",
            "validate",
            "-c",
            str(cluster_file.parent / "missing.yaml"),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.startswith("Error: cluster file")


def test_cluster_file_before_the_command(cluster_file: Path) -> None:
    result = run("--cluster", str(cluster_file), "validate")
    assert result.exit_code == 0, result.stderr


def test_command_cluster_option_wins_over_the_group_one(cluster_file: Path, tmp_path: Path) -> None:
    result = run("--cluster", str(tmp_path / "absent.yaml"), "validate", "-c", str(cluster_file))
    assert result.exit_code == 0, result.stderr


def test_every_command_module_in_the_table_loads() -> None:
    """Each command named in --help imports and has help (a lost table entry is caught too)."""
    from pikube.cli.main import COMMANDS

    for name in ("init", "validate", "inventory", "status", "doctor", "up", "image", "flash"):
        assert name in COMMANDS
        result = run(name, "--help")
        assert result.exit_code == 0, (name, result.stderr)
