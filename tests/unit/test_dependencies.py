"""pikube's ansible-core range: the releases still maintained, and one floor everywhere."""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]

# ansible-core's release matrix (docs.ansible.com, "Ansible-core support matrix"): a release
# is maintained until its end of life. Update this table when a release ends or a new one comes.
MAINTAINED = {"2.19": "May 2027", "2.20": "Nov 2027", "2.21": "May 2028"}
ENDED = {"2.17": "May 2026", "2.18": "Nov 2026"}


def ansible_core() -> Requirement:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    (spec,) = [r for r in map(Requirement, project["dependencies"]) if r.name == "ansible-core"]
    return spec


def floor(requirement: Requirement) -> Version:
    (lower,) = [s for s in requirement.specifier if s.operator == ">="]
    return Version(lower.version)


def test_ansible_core_range_admits_every_maintained_release_and_no_ended_one() -> None:
    spec = ansible_core().specifier
    for release in MAINTAINED:
        assert spec.contains(f"{release}.0") and spec.contains(f"{release}.99"), release
    for release in ENDED:
        assert not spec.contains(f"{release}.99"), f"{release} ended in {ENDED[release]}"
    assert floor(ansible_core()) == min(Version(r) for r in MAINTAINED)


def test_every_role_declares_the_same_minimum_ansible_as_pyproject() -> None:
    metas = [*REPO.glob("roles/*/meta/main.yml"), *REPO.glob("tests/lab/molecule/**/meta/main.yml")]
    assert metas
    wanted = floor(ansible_core())
    for meta in metas:
        declared = yaml.safe_load(meta.read_text())["galaxy_info"]["min_ansible_version"]
        assert Version(str(declared)) == wanted, meta.relative_to(REPO)
