"""A wheel built from the repository carries pikube's data and works outside the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("pikube-*.whl")
    return built


def test_wheel_contains_playbooks_roles_templates_and_images(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "pikube/_data/playbooks/ping.yml",
        "pikube/_data/templates/inventory/hosts.yml.j2",
        "pikube/_data/templates/cluster.yaml.j2",
        "pikube/_data/images/catalog.yaml",
    ):
        assert required in names
    assert any(n.startswith("pikube/_data/roles/") for n in names) or not any(
        (REPO / "roles").glob("pikube_*")
    )


def test_installed_wheel_works_outside_the_checkout(
    wheel: Path, tmp_path: Path, ssh_key: Path
) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "HOME": str(ssh_key.parent)}
    (ssh_key.parent / ".ssh").mkdir(exist_ok=True)
    for suffix in ("", ".pub"):
        copy = ssh_key.parent / ".ssh" / f"id_ed25519{suffix}"
        if not copy.exists():
            copy.write_bytes(Path(f"{ssh_key}{suffix}").read_bytes())
            copy.chmod(0o600)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import pikube, pikube.resources as r; print(pikube.__file__); print(r.data_root())",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    module_file, data_root = probe.stdout.split()
    assert module_file.startswith(str(target))
    assert data_root == str(target / "pikube" / "_data")
    for argv in (["init"], ["validate"], ["inventory"]):
        result = subprocess.run(
            [sys.executable, "-m", "pikube", *argv],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
    assert "pi-cp1" in result.stdout
