"""./try and ./test, the README's two commands: arguments, exit status, the one apt list.

They run for real here; they stay out of apt (skipped unless every package they would
install is present) and out of the lab (``./try`` is only given arguments it must refuse;
its whole flow runs in tests/fresh/test_fresh_machine.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def bash(script: str, path: str | None = None) -> str:
    """``script`` run with .ci/setup.sh's functions loaded; its stdout."""
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run(
        ["bash", "-c", f". .ci/setup.sh; {script}"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def listed(scope: str, path: str | None = None) -> list[str]:
    return bash(f"apt_packages {scope}", path).split()


def test_try_installs_the_labs_packages_and_test_every_listed_one() -> None:
    lines = [
        line.split("#")[0].split()
        for line in (REPO / "requirements-apt.txt").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    bare = [f for f in lines if not any(w.startswith("unless=") for w in f)]
    assert listed("try") == [f[0] for f in bare if f[1] == "try"]
    assert listed("test") == [f[0] for f in bare]
    assert {f[1] for f in lines} == {"try", "test"}


def test_a_package_is_skipped_when_its_command_is_on_path(tmp_path: Path) -> None:
    without = tmp_path / "without"
    with_kubectl = tmp_path / "with"
    for folder in (without, with_kubectl):
        folder.mkdir()
        for tool in ("bash", "cat", "dirname", "sed"):
            (folder / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    (with_kubectl / "kubectl").symlink_to(shutil.which("true") or "/usr/bin/true")
    assert "kubernetes-client" in listed("try", str(without))
    assert "kubernetes-client" not in listed("try", str(with_kubectl))


def everything_installed() -> bool:
    return bash("missing_packages $(apt_packages test)").strip() == ""


@pytest.mark.skipif(not everything_installed(), reason="./test would install Debian packages")
def test_test_passes_pytest_arguments_through_and_exits_with_pytests_status(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_good.py").write_text("def test_good():\n    assert True\n")
    (tmp_path / "test_bad.py").write_text("def test_bad():\n    assert False\n")
    env = {**os.environ, "PIKUBE_NEWEST": "0"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["./test", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), *args],
            cwd=REPO, env=env, capture_output=True, text=True, check=False,
        )  # fmt: skip

    good = run(str(tmp_path / "test_good.py"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "1 passed" in good.stdout
    assert "[3/3] tests (pytest" in good.stderr  # the phase line, with its time
    bad = run(str(tmp_path / "test_bad.py"), "-q")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "1 failed" in bad.stdout


@pytest.mark.parametrize(
    "args", [["--flavour", "k3s"], ["--flavour"], ["up"]], ids=["flavour", "no-value", "word"]
)
def test_try_refuses_unknown_arguments_with_exit_2_before_doing_anything(args: list[str]) -> None:
    proc = subprocess.run(["./try", *args], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert "[1/" not in proc.stderr  # no phase started
    assert "kubeadm" in proc.stderr  # says what it takes
