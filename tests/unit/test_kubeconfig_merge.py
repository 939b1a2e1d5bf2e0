"""The module pikube_kubeconfig_merge merges a cluster's kubeconfig into the admin machine's
kubeconfig, on real files: others' entries kept, same names replaced, mode 0600, atomic, and
a malformed existing file refused untouched with an error that quotes none of its content."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pikube.resources import data_path
from tests.cni import plugin_module

module = plugin_module("pikube_kubeconfig_merge")
BIN = Path(sys.executable).parent
KEY = "LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0tc2VjcmV0"  # stands for a client key


def kubeconfig(name: str, server: str, key: str = KEY) -> dict[str, Any]:
    """A kubeconfig as pikube_kubeconfig writes it: one cluster, user and context."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": f"{name}-admin", "user": {"client-key-data": key}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": f"{name}-admin"}}],
        "current-context": name,
        "preferences": {},
    }


def write(path: Path, data: object, mode: int = 0o600) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    path.chmod(mode)
    return path


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def names(data: dict[str, Any], key: str) -> list[str]:
    return [e["name"] for e in data[key]]


@pytest.fixture
def fetched(tmp_path: Path) -> Path:
    return write(tmp_path / "state" / "kubeconfig", kubeconfig("pi", "https://10.77.52.11:6443"))


def test_no_existing_file_gets_the_cluster_in_a_private_file_and_folder(
    fetched: Path, tmp_path: Path
) -> None:
    dest = tmp_path / "home" / ".kube" / "config"
    assert module.merge_kubeconfig(fetched, dest) is True
    expected = {k: v for k, v in load(fetched).items() if k != "preferences"}
    assert load(dest) == expected
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert stat.S_IMODE(dest.parent.stat().st_mode) == 0o700
    assert os.listdir(dest.parent) == ["config"]  # no temporary file left behind


def test_other_clusters_are_kept_and_their_current_context_too(
    fetched: Path, tmp_path: Path
) -> None:
    other = kubeconfig("work", "https://k8s.example:6443", key="other-key")
    other["extensions"] = [{"name": "x", "extension": {"a": 1}}]
    dest = write(tmp_path / "config", other)
    assert module.merge_kubeconfig(fetched, dest) is True
    result = load(dest)
    assert names(result, "clusters") == ["work", "pi"]
    assert names(result, "users") == ["work-admin", "pi-admin"]
    assert names(result, "contexts") == ["work", "pi"]
    assert result["current-context"] == "work"  # the user's choice stays
    assert result["clusters"][0] == other["clusters"][0]
    assert result["users"][0]["user"]["client-key-data"] == "other-key"
    assert result["extensions"] == other["extensions"]


def test_same_named_entries_are_replaced_not_doubled(fetched: Path, tmp_path: Path) -> None:
    old = kubeconfig("pi", "https://10.0.0.1:6443", key="old-key")
    old["clusters"].insert(0, {"name": "work", "cluster": {"server": "https://w:6443"}})
    dest = write(tmp_path / "config", old)
    assert module.merge_kubeconfig(fetched, dest) is True
    result = load(dest)
    assert names(result, "clusters") == ["work", "pi"]
    assert result["clusters"][1]["cluster"]["server"] == "https://10.77.52.11:6443"
    assert names(result, "users") == ["pi-admin"]
    assert result["users"][0]["user"]["client-key-data"] == KEY


def test_a_file_without_current_context_gets_the_new_one(fetched: Path, tmp_path: Path) -> None:
    other = kubeconfig("work", "https://w:6443")
    del other["current-context"]
    dest = write(tmp_path / "config", other)
    module.merge_kubeconfig(fetched, dest)
    assert load(dest)["current-context"] == "pi"


def test_a_second_merge_changes_nothing_and_does_not_rewrite(fetched: Path, tmp_path: Path) -> None:
    dest = tmp_path / "config"
    assert module.merge_kubeconfig(fetched, dest) is True
    inode = dest.stat().st_ino
    assert module.merge_kubeconfig(fetched, dest) is False
    assert dest.stat().st_ino == inode


def test_a_loose_mode_is_fixed_to_0600(fetched: Path, tmp_path: Path) -> None:
    dest = tmp_path / "config"
    module.merge_kubeconfig(fetched, dest)
    dest.chmod(0o644)
    assert module.merge_kubeconfig(fetched, dest) is True
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_check_mode_writes_nothing(fetched: Path, tmp_path: Path) -> None:
    dest = write(tmp_path / "config", kubeconfig("work", "https://w:6443"))
    before = dest.read_bytes()
    assert module.merge_kubeconfig(fetched, dest, check_mode=True) is True
    assert dest.read_bytes() == before
    missing = tmp_path / "not-fetched-yet"  # check mode did not write the fetched file
    assert module.merge_kubeconfig(missing, tmp_path / "new", check_mode=True) is True
    assert not (tmp_path / "new").exists()


def test_a_symlinked_kubeconfig_keeps_its_link(fetched: Path, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "kubeconfig", kubeconfig("work", "https://w:6443"))
    link = tmp_path / "config"
    link.symlink_to(real)
    module.merge_kubeconfig(fetched, link)
    assert link.is_symlink()
    assert names(load(real), "contexts") == ["work", "pi"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"clusters:\n- name: a\n  user: {{client-key-data: {KEY}\n", "is not valid YAML"),
        (f"- {KEY}\n", "is not a kubeconfig (a YAML mapping"),
        (f"clusters: {KEY}\n", "clusters is not a list of named entries"),
        (f"users:\n- user: {{client-key-data: {KEY}}}\n", "users is not a list of named entries"),
    ],
)
def test_a_malformed_existing_kubeconfig_is_refused_untouched(
    fetched: Path, tmp_path: Path, text: str, message: str
) -> None:
    dest = write(tmp_path / "config", text, mode=0o644)
    with pytest.raises(module.KubeconfigMergeError) as caught:
        module.merge_kubeconfig(fetched, dest)
    assert message in str(caught.value)
    assert str(dest) in str(caught.value)
    assert KEY not in str(caught.value)  # the error quotes no content: it may be a key
    assert dest.read_text() == text  # not overwritten
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert sorted(os.listdir(tmp_path)) == ["config", "state"]  # no temporary file either


def test_the_role_merges_through_ansible_and_prints_no_key(tmp_path: Path) -> None:
    """pikube_kubeconfig run by ansible-playbook with pikube's ansible.cfg (repo runs find the
    module by its short name, as collection roles do): merged, idempotent, no key in output."""
    admin = kubeconfig("kubernetes", "https://127.0.0.1:6443")
    dest = write(tmp_path / "home" / ".kube" / "config", kubeconfig("work", "https://w:6443"))
    playbook = tmp_path / "play.yml"
    playbook.write_text(
        yaml.safe_dump(
            [
                {
                    "hosts": "localhost",
                    "connection": "local",
                    "gather_facts": False,
                    "roles": [
                        {
                            "role": "pikube_kubeconfig",
                            "pikube_kubeconfig_content": yaml.safe_dump(admin),
                            "pikube_kubeconfig_dest": str(tmp_path / "state" / "kubeconfig"),
                            "pikube_kubeconfig_server": "https://10.77.52.11:6443",
                            "pikube_kubeconfig_context": "pi",
                            "pikube_kubeconfig_merge": True,
                            "pikube_kubeconfig_merge_path": str(dest),
                        }
                    ],
                }
            ]
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env |= {"ANSIBLE_CONFIG": str(data_path("ansible.cfg")), "ANSIBLE_NOCOLOR": "1"}
    argv = [str(BIN / "ansible-playbook"), "-i", "localhost,", "-v", str(playbook)]
    argv += ["-e", f"ansible_python_interpreter={sys.executable}"]  # as implicit localhost
    # First run: the state folder and the kubeconfig (one task), then the merge.
    for run, changed in ((1, 2), (2, 0)):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, (run, proc.stdout[-3000:], proc.stderr[-3000:])
        assert f"changed={changed} " in proc.stdout, (run, proc.stdout[-2000:])
        assert KEY not in proc.stdout + proc.stderr
    result = load(dest)
    assert names(result, "contexts") == ["work", "pi"]
    assert result["clusters"][1]["cluster"]["server"] == "https://10.77.52.11:6443"
    assert result["users"][1]["user"]["client-key-data"] == KEY


def merged_pair(tmp_path: Path) -> Path:
    """~/.kube/config after pikube merged cluster pi into a file holding cluster work."""
    dest = write(tmp_path / "config", kubeconfig("work", "https://w:6443", key="other-key"))
    module.merge_kubeconfig(write(tmp_path / "pi.yml", kubeconfig("pi", "https://p:6443")), dest)
    return dest


def test_removing_a_context_drops_its_cluster_and_user_and_keeps_the_others(
    tmp_path: Path,
) -> None:
    dest = merged_pair(tmp_path)
    data = load(dest)
    data["current-context"] = "pi"
    write(dest, data, mode=0o644)
    assert module.remove_context(dest, "pi") is True
    result = load(dest)
    assert names(result, "clusters") == ["work"]
    assert names(result, "users") == ["work-admin"]
    assert names(result, "contexts") == ["work"]
    assert result["users"][0]["user"]["client-key-data"] == "other-key"
    assert result["current-context"] == ""  # it pointed at the removed context
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["config", "pi.yml"]  # no temporary file left


def test_removing_keeps_the_users_current_context_and_what_other_contexts_use(
    tmp_path: Path,
) -> None:
    dest = merged_pair(tmp_path)
    data = load(dest)
    shared = {"cluster": "pi", "user": "pi-admin", "namespace": "apps"}
    data["contexts"].append({"name": "pi-apps", "context": shared})
    write(dest, data)
    assert module.remove_context(dest, "pi") is True
    result = load(dest)
    assert result["current-context"] == "work"
    assert names(result, "contexts") == ["work", "pi-apps"]
    assert names(result, "clusters") == ["work", "pi"]  # pi-apps still uses them
    assert names(result, "users") == ["work-admin", "pi-admin"]


def test_removing_what_is_not_there_changes_and_writes_nothing(tmp_path: Path) -> None:
    dest = merged_pair(tmp_path)
    assert module.remove_context(dest, "pi") is True
    inode, before = dest.stat().st_ino, dest.read_bytes()
    assert module.remove_context(dest, "pi") is False
    assert (dest.stat().st_ino, dest.read_bytes()) == (inode, before)
    assert module.remove_context(tmp_path / "missing", "pi") is False
    assert not (tmp_path / "missing").exists()


def test_removing_in_check_mode_writes_nothing(tmp_path: Path) -> None:
    dest = merged_pair(tmp_path)
    before = dest.read_bytes()
    assert module.remove_context(dest, "pi", check_mode=True) is True
    assert dest.read_bytes() == before


@pytest.mark.parametrize(
    "text",
    [
        f"contexts:\n- name: pi\n  user: {{client-key-data: {KEY}\n",
        f"- {KEY}\n",
        f"users:\n- user: {{client-key-data: {KEY}}}\ncontexts: [{{name: pi}}]\n",
    ],
)
def test_removing_from_a_malformed_kubeconfig_is_refused_untouched(
    tmp_path: Path, text: str
) -> None:
    dest = write(tmp_path / "config", text, mode=0o644)
    with pytest.raises(module.KubeconfigMergeError) as caught:
        module.remove_context(dest, "pi")
    assert str(dest) in str(caught.value)
    assert KEY not in str(caught.value)
    assert dest.read_text() == text
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    assert os.listdir(tmp_path) == ["config"]


def reset_kubeconfig_play(tmp_path: Path) -> Path:
    """reset.yml's play on the admin machine, verbatim, for an inventory of localhost alone
    (the plays before it reset real nodes)."""
    plays = yaml.safe_load(data_path("playbooks", "reset.yml").read_text())
    (play,) = [
        p for p in plays if p.get("name") == "Remove the fetched kubeconfig on the admin machine"
    ]
    path = tmp_path / "reset_admin.yml"
    path.write_text(yaml.safe_dump([play]))
    return path


def test_reset_drops_the_cluster_from_the_merged_kubeconfig_through_ansible(
    tmp_path: Path,
) -> None:
    """reset.yml's play removes the fetched file and the cluster's context from the merged
    kubeconfig (shared entries kept), is idempotent, prints no key, and stops on a malformed
    merged file, leaving it as it was."""
    dest = merged_pair(tmp_path)
    fetched = write(tmp_path / "state" / "kubeconfig", kubeconfig("pi", "https://p:6443"))
    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[cluster]\nlocalhost ansible_connection=local\n[control_plane]\nlocalhost\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env |= {"ANSIBLE_CONFIG": str(data_path("ansible.cfg")), "ANSIBLE_NOCOLOR": "1"}
    argv = [str(BIN / "ansible-playbook"), "-i", str(inventory), "-v"]
    argv += [
        str(reset_kubeconfig_play(tmp_path)),
        "-e",
        f"ansible_python_interpreter={sys.executable}",
    ]
    argv += ["-e", f"pikube_kubeconfig={fetched}", "-e", f"pikube_kubeconfig_merge_path={dest}"]
    argv += ["-e", "pikube_kubeconfig_merge=true", "-e", "pikube_cluster_name=pi"]
    for run, changed in ((1, 2), (2, 0)):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        assert proc.returncode == 0, (run, proc.stdout[-3000:], proc.stderr[-3000:])
        assert f"changed={changed} " in proc.stdout, (run, proc.stdout[-2000:])
        assert KEY not in proc.stdout + proc.stderr
    assert not fetched.exists()
    result = load(dest)
    assert names(result, "contexts") == ["work"]
    assert names(result, "clusters") == ["work"]
    assert names(result, "users") == ["work-admin"]
    malformed = f"clusters: {KEY}\ncontexts: [{{name: pi}}]\n"
    write(dest, malformed, mode=0o644)
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode != 0
    assert "clusters is not a list of named entries" in proc.stdout + proc.stderr
    assert KEY not in proc.stdout + proc.stderr
    assert dest.read_text() == malformed
