"""pikube's roles and playbooks as the Ansible collection pikube.cluster (galaxy.yml), and the
facts the collection repeats from pyproject.toml: version, license, ansible-core range."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

import pikube
from tests.collection import (
    BIN,
    REPO,
    ansible_env,
    build_collection,
    doc_examples,
    galaxy,
    install_collection,
)

# sha256 of the Apache License 2.0 text as published at https://www.apache.org/licenses/LICENSE-2.0.txt
# (and shipped by Debian as /usr/share/common-licenses/Apache-2.0).
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
# What a collection is made of (ansible-galaxy adds MANIFEST.json and FILES.json).
COLLECTION_PARTS = {
    "MANIFEST.json",
    "FILES.json",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "meta",
    "docs",
    "playbooks",
    "plugins",
    "roles",
}


def pyproject() -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((REPO / "pyproject.toml").read_text())
    return data


def ansible_core_range() -> SpecifierSet:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    (spec,) = (
        Requirement(dep).specifier
        for dep in project["dependencies"]
        if Requirement(dep).name == "ansible-core"
    )
    return spec


def role_metas() -> dict[str, dict[str, object]]:
    return {
        path.parent.parent.name: yaml.safe_load(path.read_text())["galaxy_info"]
        for path in sorted((REPO / "roles").glob("*/meta/main.yml"))
    }


def test_license_file_is_the_apache_2_0_text_every_manifest_declares() -> None:
    assert hashlib.sha256((REPO / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    assert pyproject()["project"]["license"] == "Apache-2.0"  # type: ignore[index]
    assert galaxy()["license"] == ["Apache-2.0"]
    assert {role: meta["license"] for role, meta in role_metas().items()} == {
        role: "Apache-2.0" for role in role_metas()
    }


def test_collection_version_is_pikubes_version() -> None:
    assert galaxy()["version"] == pikube.__version__


def test_collection_requires_the_ansible_core_range_pyproject_installs() -> None:
    runtime = yaml.safe_load((REPO / "meta" / "runtime.yml").read_text())
    assert SpecifierSet(runtime["requires_ansible"]) == ansible_core_range()
    # Each role's min_ansible_version is the range's lower bound.
    (lower,) = (s.version for s in ansible_core_range() if s.operator == ">=")
    assert {role: meta["min_ansible_version"] for role, meta in role_metas().items()} == {
        role: lower for role in role_metas()
    }


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The archive built from the repository, and the folder it was installed to."""
    archive = build_collection(tmp_path_factory.mktemp("build"))
    collections_path = tmp_path_factory.mktemp("collections")
    return archive, install_collection(archive, collections_path)


def test_collection_archive_holds_only_the_collection(collection: tuple[Path, Path]) -> None:
    archive, _ = collection
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {name.split("/")[0] for name in names} == COLLECTION_PARTS
    roles = sorted(p.name for p in (REPO / "roles").iterdir() if p.is_dir())
    for role in roles:
        assert f"roles/{role}/tasks/main.yml" in names
        assert f"roles/{role}/meta/argument_specs.yml" in names
        assert f"roles/{role}/README.md" in names
    for playbook in (REPO / "playbooks").glob("*.yml"):
        assert f"playbooks/{playbook.name}" in names
    assert "meta/runtime.yml" in names
    assert "docs/ansible.md" in names
    # the collection's modules are in, found by the roles' tasks under their short names
    modules = sorted(p.name for p in (REPO / "plugins" / "modules").glob("*.py"))
    assert modules and all(f"plugins/modules/{m}" in names for m in modules)
    # the CLI's own callback, molecule scenarios and the Python package stay out
    outside = [n for n in names if not n.startswith("plugins/modules/")]
    assert not [n for n in outside if "callback_plugins" in n or "/molecule" in n or ".py" in n]


def test_an_unpacked_sdist_builds_the_same_collection(
    collection: tuple[Path, Path], tmp_path: Path
) -> None:
    """docs/ansible.md says the collection builds from a checkout or an unpacked sdist."""
    subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(tmp_path)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    (sdist,) = tmp_path.glob("pikube-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (source,) = (tmp_path / "unpacked").iterdir()
    from_sdist = build_collection(tmp_path / "out", source)
    archive, _ = collection
    with tarfile.open(archive) as ours, tarfile.open(from_sdist) as theirs:
        assert sorted(theirs.getnames()) == sorted(ours.getnames())


def test_every_playbook_is_a_collection_playbook_whose_roles_resolve_inside_it(
    collection: tuple[Path, Path], tmp_path: Path
) -> None:
    """`ansible-playbook pikube.cluster.NAME` works for every playbook with nothing but the
    installed collection: playbook names are valid collection names (no hyphens) and the
    roles they name are found in the collection, not through a roles path into a checkout."""
    _, installed = collection
    names = sorted(p.stem for p in (installed / "playbooks").glob("*.yml"))
    assert names == sorted(p.stem for p in (REPO / "playbooks").glob("*.yml"))
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    node-1:\n")
    proc = subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "--syntax-check",
            "-i",
            str(inventory),
            *(f"pikube.cluster.{name}" for name in names),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,  # never the checkout, whose ansible.cfg points at ./roles
        env=ansible_env(installed.parents[2]),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in names:
        assert f"playbooks/{name}.yml" in proc.stdout


def test_documented_example_playbooks_resolve_against_the_installed_collection(
    collection: tuple[Path, Path], tmp_path: Path
) -> None:
    """docs/ansible.md's playbooks, written to a user's folder, pass `--syntax-check` with
    nothing but the collection: its playbook imports by name and its roles by FQCN."""
    _, installed = collection
    examples = doc_examples()
    assert set(examples) == {"site.yml", "prepare.yml"}
    for name, text in examples.items():
        (tmp_path / name).write_text(text)
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(
        "all:\n  children:\n    cluster:\n      children:\n        control_plane:\n"
    )
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), *examples],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=ansible_env(installed.parents[2]),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def role_task_files_playbook(role_prefix: str) -> str:
    """One play importing each tasks file of every role (static: every task gets parsed)."""
    plays = [
        {
            "name": f"{role.name} {tasks.stem}",
            "hosts": "all",
            "gather_facts": False,
            "tasks": [
                {
                    "ansible.builtin.import_role": {
                        "name": f"{role_prefix}{role.name}",
                        "tasks_from": tasks.stem,
                    }
                }
            ],
        }
        for role in sorted((REPO / "roles").iterdir())
        for tasks in sorted((role / "tasks").glob("*.yml"))
    ]
    return yaml.safe_dump(plays, sort_keys=False)


def test_every_module_a_role_uses_resolves_in_the_collection_and_the_checkout(
    collection: tuple[Path, Path], tmp_path: Path
) -> None:
    """The roles call the collection's own modules (plugins/modules) by short name: the
    installed collection finds them as its roles' own, a checkout through ansible.cfg's
    library (pikube's runs). --syntax-check fails on a task whose module is not found."""
    _, installed = collection
    inventory = tmp_path / "hosts.yml"
    inventory.write_text("all:\n  hosts:\n    node-1:\n")
    user = tmp_path / "collection.yml"
    user.write_text(role_task_files_playbook("pikube.cluster."))
    checkout = tmp_path / "checkout.yml"
    checkout.write_text(role_task_files_playbook(""))
    runs = {
        user: ansible_env(installed.parents[2]),
        checkout: {
            **{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        },
    }
    for playbook, env in runs.items():
        proc = subprocess.run(
            [str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(playbook)],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=env,
        )
        assert proc.returncode == 0, (playbook.name, proc.stdout + proc.stderr)
