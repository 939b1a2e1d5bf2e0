"""cluster.yaml and known_hosts are untrusted: never evaluated, checked for every file a value
lands in, read with bounds, and refused with a located error (exit 3), never a traceback."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from pikube.config import load_cluster, parse_cluster
from pikube.config.known_hosts import check_known_hosts
from pikube.config.load import MAX_CLUSTER_FILE_BYTES
from pikube.config.model import Cluster, Kubernetes, Node, Section, Ssh
from pikube.config.yamlpos import MAX_DEPTH
from pikube.errors import EXIT_CONFIG, ConfigError, Problem
from pikube.inventory import render_inventory
from tests.factories import base_cluster, edited, line_of, write_cluster

ANSIBLE_BIN = Path(sys.executable).parent
TEMPLATE = "{{ lookup('pipe', 'touch ran') }}"


@pytest.fixture
def valid(ssh_key: Path) -> dict[str, Any]:
    data = base_cluster(ssh_key)
    data["kubernetes"]["kubeadm_config"] = {"ClusterConfiguration": {"clusterName": "homelab"}}
    data["network"]["domain"] = "home.lan"
    data["apt_proxy"] = "http://192.168.1.10:3142"
    data["nodes"][1]["mac"] = "dc:a6:32:01:02:03"
    return data


def problems_for(tmp_path: Path, data: dict[str, Any] | str) -> tuple[list[Problem], str]:
    path = write_cluster(tmp_path, data)
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    assert caught.value.exit_code == EXIT_CONFIG
    return caught.value.problems, path.read_text()


def at(problems: list[Problem], path: str) -> list[Problem]:
    return [p for p in problems if p.path == path]


# -- one rule for every string: no template syntax, no control characters ----------------


def _leaf_paths(model: type[BaseModel], prefix: tuple[str | int, ...] = ()) -> Iterator[tuple]:
    """Every place a scalar can sit in a cluster file, from the model's own fields.

    A field added to the model is walked here without touching this test.
    """
    for name, field in model.model_fields.items():
        yield from _paths_of(field.annotation, (*prefix, name))


def _paths_of(annotation: Any, path: tuple[str | int, ...]) -> Iterator[tuple]:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        yield from _paths_of(args[0], path)
    elif origin is list:
        yield from _paths_of(args[0], (*path, 0))
    elif origin is dict:
        # kubeadm_config: a kind, then free-form settings; keys are values too.
        yield (*path, "ClusterConfiguration", "apiServer", "certSANs", 0)
        yield (*path, "ClusterConfiguration", TEMPLATE)
    elif isinstance(annotation, type) and issubclass(annotation, Section):
        yield from _leaf_paths(annotation, path)
    else:
        yield path


MODEL_PATHS = sorted(set(_leaf_paths(Cluster)), key=str)


def _set(data: dict[str, Any], path: tuple, value: Any) -> None:
    target: Any = data
    for part, following in itertools.pairwise(path):
        if isinstance(target, list):
            target = target[part]
            continue
        if part not in target or not isinstance(target[part], dict | list):
            target[part] = [] if isinstance(following, int) else {}
        target = target[part]
    last = path[-1]
    if isinstance(target, list):
        target[last:] = [value]
    elif last == TEMPLATE:
        target[TEMPLATE] = "x"
    else:
        target[last] = value


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def test_the_model_walk_reaches_every_section() -> None:
    dotted = {_dotted(p) for p in MODEL_PATHS}
    assert {"name", "apt_proxy", "ssh.user", "nodes[0].mac", "network.dns[0]"} <= dotted
    assert "kubernetes.addons[0]" in dotted and "state_dir" in dotted
    assert any(p.startswith("kubernetes.kubeadm_config.ClusterConfiguration.{{") for p in dotted)


@pytest.mark.parametrize("path", MODEL_PATHS, ids=_dotted)
def test_every_string_of_the_model_refuses_template_syntax(
    tmp_path: Path, valid: dict[str, Any], path: tuple
) -> None:
    data = edited(valid)
    _set(data, path, TEMPLATE)
    problems, text = problems_for(tmp_path, data)
    found = at(problems, _dotted(path))
    assert found, f"nothing reported at {_dotted(path)}: {problems}"
    assert len(found) == 1, "the template rule answers alone for its value"
    assert "template syntax '{{'" in found[0].message
    assert "never evaluates templates" in found[0].fix
    assert found[0].line == line_of(text, "lookup")


@pytest.mark.parametrize("opener", ["{%", "{#"])
def test_statement_and_comment_openers_are_refused_too(
    tmp_path: Path, valid: dict[str, Any], opener: str
) -> None:
    data = edited(
        valid, **{"kubernetes.kubeadm_config.ClusterConfiguration.clusterName": f"a{opener}b"}
    )
    problems, _ = problems_for(tmp_path, data)
    assert (
        "template syntax"
        in at(problems, "kubernetes.kubeadm_config.ClusterConfiguration.clusterName")[0].message
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("nodes.1.name", "pi-w1\n"),
        ("name", "homelab\n"),
        ("ssh.user", "ubuntu\n"),
        ("nodes.1.mac", "dc:a6:32:01:02:03\n"),
        ("network.domain", "home.lan\n"),
        ("kubernetes.version", "1.31\n"),
        ("apt_proxy", "http://192.168.1.10:3142\n"),
        ("kubernetes.kubeadm_config.ClusterConfiguration.clusterName", "a\nb"),
        ("nodes.1.name", "pi-w1\t"),
    ],
)
def test_a_control_character_anywhere_is_refused(
    tmp_path: Path, valid: dict[str, Any], field: str, value: str
) -> None:
    problems, _ = problems_for(tmp_path, edited(valid, **{field: value}))
    dotted = _dotted(tuple(int(p) if p.isdigit() else p for p in field.split(".")))
    (problem,) = at(problems, dotted)
    assert "control character" in problem.message


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (Node, "name", "pi-w1\n"),
        (Node, "mac", "dc:a6:32:01:02:03\n"),
        (Ssh, "user", "ubuntu\n"),
        (Kubernetes, "version", "1.31\n"),
        (Kubernetes, "channel", "1.31/stable\n"),
        (Kubernetes, "addons", ["dns\n"]),
        (Cluster, "name", "homelab\n"),
    ],
)
def test_format_patterns_match_the_whole_value(
    valid: dict[str, Any], model: type[BaseModel], field: str, value: Any
) -> None:
    """`re.match(r"^...$")` accepts a final newline; each field's own check must not."""
    data: dict[str, Any] = {
        Node: {"name": "pi-w1", "ip": "192.168.1.2", "role": "worker"},
        Ssh: dict(valid["ssh"]),
        Kubernetes: {},
        Cluster: edited(valid),
    }[model]
    data[field] = value
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    assert [e["loc"][0] for e in caught.value.errors()] == [field]


# -- values that land in apt.conf and sources.list are URLs and nothing else ---------------


@pytest.mark.parametrize(
    "value",
    [
        'http://h";APT::Update::Pre-Invoke{"touch${IFS}pwned";};"',
        "http://user:pw@192.168.1.10:3142",
        "http://192.168.1.10:99999",
        "http://192.168.1.10:",
        "http://bad_host:3142",
        "http://192.168.1.10:3142?x=1",
    ],
)
def test_apt_proxy_must_be_a_plain_proxy_url(
    tmp_path: Path, valid: dict[str, Any], value: str
) -> None:
    problems, _ = problems_for(tmp_path, edited(valid, apt_proxy=value))
    (problem,) = at(problems, "apt_proxy")
    assert "is not a proxy URL" in problem.message
    assert "http://HOST:PORT" in problem.fix


@pytest.mark.parametrize(
    "value",
    [
        'https://pkgs.k8s.io/core:/stable:"',
        "https://mirror.lan/$(ARCH)/",
        "file:///srv/mirror",
        "https://user@mirror.lan/k8s",
        "https://mirror.lan/k8s#frag",
    ],
)
def test_package_repo_must_be_an_http_url(
    tmp_path: Path, valid: dict[str, Any], value: str
) -> None:
    problems, _ = problems_for(tmp_path, edited(valid, **{"kubernetes.package_repo": value}))
    (problem,) = at(problems, "kubernetes.package_repo")
    assert "is not a repository URL" in problem.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("apt_proxy", "http://proxy.lan:3142/"),
        ("apt_proxy", "http://[fd00::1]:3142"),
        ("apt_proxy", "https://192.168.1.10"),
        ("kubernetes.package_repo", "https://pkgs.k8s.io/core:/stable:"),
        ("kubernetes.package_repo", "http://10.77.1.1:8080/core:/stable:/"),
    ],
)
def test_real_urls_are_accepted(
    tmp_path: Path, valid: dict[str, Any], field: str, value: str
) -> None:
    load_cluster(write_cluster(tmp_path, edited(valid, **{field: value})))


# -- the file itself: size, kind, aliases, depth --------------------------------------------


def test_a_billion_laughs_is_refused_at_its_first_alias(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    bomb = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    bomb += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 12)]
    text = yaml.safe_dump(valid, sort_keys=False).replace(
        "kubeadm_config:\n",
        "kubeadm_config:\n    ClusterConfiguration:\n      x:\n"
        + "".join(f"        {line}\n" for line in bomb)
        + "    InitConfiguration: {}\n",
        1,
    )
    problems, text = problems_for(tmp_path, text)
    (problem,) = problems
    assert "YAML alias *a0 is not allowed" in problem.message
    assert problem.line == line_of(text, "*a0")
    assert "anchors and aliases" in problem.fix


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    problems, _ = problems_for(tmp_path, "name: &n\n  self: *n\n")
    assert "YAML alias *n" in problems[0].message
    assert problems[0].line == 2


@pytest.mark.parametrize("shape", ["[", "{a: "])
def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path, shape: str) -> None:
    closing = {"[": "]", "{a: ": "}"}[shape]
    depth = 5000
    text = "name: homelab\nkubernetes:\n  kubeadm_config:\n    ClusterConfiguration: "
    text += shape * depth + "1" + closing * depth + "\n"
    problems, _ = problems_for(tmp_path, text)
    assert f"nests deeper than {MAX_DEPTH} levels" in problems[0].message
    assert problems[0].line == 4


def test_a_cluster_file_larger_than_the_cap_is_refused(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    text = yaml.safe_dump(valid) + "#" * MAX_CLUSTER_FILE_BYTES + "\n"
    problems, _ = problems_for(tmp_path, text)
    assert f"larger than {MAX_CLUSTER_FILE_BYTES // 1024} KiB" in problems[0].message


def test_dev_zero_is_refused_without_reading_it() -> None:
    with pytest.raises(ConfigError) as caught:
        load_cluster(Path("/dev/zero"))
    assert "is a device, not a regular file" in caught.value.render()


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_cluster(tmp_path)
    assert "is a folder, not a regular file" in caught.value.render()


def test_a_fifo_is_refused_without_waiting_for_a_writer(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    fifo = tmp_path / "cluster.yaml"
    os.mkfifo(fifo)
    text = yaml.safe_dump(valid).encode()

    def writer() -> None:  # a blocking read would get a valid file and pass
        try:
            with open(fifo, "wb") as handle:
                handle.write(text)
        except OSError:
            pass

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConfigError) as caught:
            load_cluster(fifo)
        assert "is a FIFO (named pipe), not a regular file" in caught.value.render()
    finally:
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # releases the writer
        thread.join()
        os.close(reader)


def test_a_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_cluster(path)
    assert "is not UTF-8 text" in caught.value.render()


# -- state_dir -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_dir", "message"),
    [
        ("/etc", "state_dir /etc is a system folder"),
        ("/etc/pikube", "is inside the system folder /etc"),
        ("/usr/local/pikube", "is inside the system folder /usr"),
        ("/", "state_dir / is a system folder"),
        ("/var", "state_dir /var is a system folder"),
    ],
)
def test_state_dir_is_never_a_system_folder(
    tmp_path: Path, valid: dict[str, Any], state_dir: str, message: str
) -> None:
    problems, _ = problems_for(tmp_path, edited(valid, state_dir=state_dir))
    (problem,) = at(problems, "state_dir")
    assert message in problem.message


def test_state_dir_through_a_symlink_into_etc_is_refused(
    tmp_path: Path, valid: dict[str, Any]
) -> None:
    (tmp_path / "link").symlink_to("/etc")
    problems, _ = problems_for(tmp_path, edited(valid, state_dir="link"))
    assert "system folder" in at(problems, "state_dir")[0].message


def test_state_dir_that_is_a_file_is_refused(tmp_path: Path, valid: dict[str, Any]) -> None:
    (tmp_path / "state").write_text("not a folder\n")
    problems, text = problems_for(tmp_path, edited(valid, state_dir="state"))
    (problem,) = at(problems, "state_dir")
    assert problem.message.endswith("state is a file, not a folder")
    assert problem.line == line_of(text, "state_dir:")
    problems, _ = problems_for(tmp_path, edited(valid, state_dir="state/below"))
    assert "cannot be created" in at(problems, "state_dir")[0].message


def test_the_default_state_dir_is_checked_too(tmp_path: Path, valid: dict[str, Any]) -> None:
    (tmp_path / ".pikube").write_text("")
    problems, _ = problems_for(tmp_path, valid)
    assert "is a file, not a folder" in at(problems, "state_dir")[0].message


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to make a folder owned by another user")
def test_state_dir_owned_by_another_user_is_refused(
    tmp_path: Path, valid: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUDO_UID", raising=False)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 4242, 4242)
    problems, _ = problems_for(tmp_path, edited(valid, state_dir="theirs"))
    assert "belongs to another user (uid 4242)" in at(problems, "state_dir")[0].message
    monkeypatch.setenv("SUDO_UID", "4242")  # `sudo pikube` by its owner
    load_cluster(write_cluster(tmp_path, edited(valid, state_dir="theirs")))


# -- known_hosts ----------------------------------------------------------------------------


def _known_hosts_line(ssh_key: Path) -> str:
    key_type, blob = Path(f"{ssh_key}.pub").read_text().split()[:2]
    return f"pi-cp1,192.168.1.101 {key_type} {blob}"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("pi-cp1 ssh-ed25519 !!!notbase64", "is not valid base64"),
        ("pi-cp1 ssh-ed25519", "needs host names, a key type and a key"),
        ("@bogus pi-cp1 ssh-ed25519 AAAA", "unknown marker '@bogus'"),
        ("pi-cp1 ssh-rsa {blob}", "does not decode to a ssh-rsa key (its blob says ssh-ed25519)"),
        ("pi\x00cp1 ssh-ed25519 {blob}", "control character"),
        ("pi-cp1 ssh/ed25519 {blob}", "not an SSH key type"),
    ],
)
def test_a_malformed_known_hosts_line_is_a_located_error(
    tmp_path: Path, valid: dict[str, Any], ssh_key: Path, line: str, message: str
) -> None:
    blob = Path(f"{ssh_key}.pub").read_text().split()[1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"# pinned by pikube\n{_known_hosts_line(ssh_key)}\n\n{line.format(blob=blob)}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_cluster(write_cluster(tmp_path, edited(valid, **{"ssh.known_hosts": "known_hosts"})))
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(known_hosts), 4)
    assert message in problem.message
    assert "ssh-keygen -R HOST" in problem.fix
    assert caught.value.exit_code == EXIT_CONFIG


def test_a_well_formed_known_hosts_is_accepted(tmp_path: Path, ssh_key: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    hashed = "|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|aGFzaGhhc2hoYXNoaGFzaGhhc2g="
    line = _known_hosts_line(ssh_key)
    key = line.split(" ", 1)[1]
    known_hosts.write_text(
        f"{line}\n[10.0.0.1]:2222 {key} a comment\n{hashed} {key}\n@cert-authority *.lan {key}\n"
    )
    check_known_hosts(known_hosts)
    check_known_hosts(tmp_path / "absent")  # pikube creates it when pinning the first key


def test_a_known_hosts_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "known_hosts")
    with pytest.raises(ConfigError) as caught:
        check_known_hosts(tmp_path / "known_hosts")
    assert "is a FIFO (named pipe)" in caught.value.render()


# -- the rendered inventory: Ansible never evaluates a value --------------------------------


def test_ansible_never_evaluates_a_value_from_the_cluster(
    tmp_path: Path, ssh_key: Path, valid: dict[str, Any]
) -> None:
    """Values validation cannot see (paths under the cluster file's folder) or that bypass
    it (a model built in code) still reach Ansible as data, not as templates."""
    folder = tmp_path / "{{ lookup('pipe', 'touch ran-path') }}"
    folder.mkdir()
    data = edited(valid)
    del data["kubernetes"]["kubeadm_config"]
    cluster = load_cluster(write_cluster(folder, data))
    assert "{{" in str(cluster.state_dir)
    kubeadm_config = {"ClusterConfiguration": {"clusterName": TEMPLATE.replace("ran", "ran-kc")}}
    cluster = cluster.model_copy(
        update={
            "kubernetes": cluster.kubernetes.model_copy(update={"kubeadm_config": kubeadm_config})
        }
    )
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(render_inventory(cluster))
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(
        [
            str(ANSIBLE_BIN / "ansible"),
            "-i",
            str(inventory),
            "pi-cp1",
            "-c",
            "local",
            "-m",
            "ansible.builtin.debug",
            "-a",
            "msg={{ [pikube_state_dir, pikube_kubeconfig, ansible_ssh_common_args,"
            " pikube_kubeadm_config] }}",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "true"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lookup('pipe', 'touch ran-path')" in result.stdout
    assert "lookup('pipe', 'touch ran-kc')" in result.stdout
    assert list(work.iterdir()) == [], "Ansible ran a command from a value"


def test_pikube_own_expression_stays_evaluable(tmp_path: Path, valid: dict[str, Any]) -> None:
    text = render_inventory(parse_cluster(yaml.safe_dump(valid), base_dir=tmp_path))
    assert 'pikube_node_iface: "{{ ansible_facts' in text
    assert ": !unsafe" not in text  # no value of this cluster holds a '{'
