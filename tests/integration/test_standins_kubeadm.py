"""kubeadm + kubelet stand-ins keep kubeadm's contract (init, token, join, reset, upgrade)."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _standins import requires_standin_prereqs, testing

pytestmark = requires_standin_prereqs
FakeNode = testing.FakeNode
JOIN_RE = re.compile(
    r"^kubeadm join (\S+) --token ([a-z0-9]{6}\.[a-z0-9]{16}) "
    r"--discovery-token-ca-cert-hash (sha256:[0-9a-f]{64}) $"
)


# A document kubeadm has no scheme for: `kubeadm init` skips it with a warning (common.go).
UNRELATED_DOCUMENT = "---\napiVersion: notes.example.com/v1\nkind: Note\ntext: hello\n"


@pytest.fixture()
def node(tmp_path: Path) -> Iterator[FakeNode]:
    n = FakeNode(tmp_path, "cp1", "127.0.2.1", port=testing.free_port("127.0.2.1"))
    yield n
    n.cleanup()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    base = tmp_path_factory.mktemp("kubeadm")
    cp = FakeNode(
        base,
        "cp1",
        "127.0.3.1",
        port=testing.free_port("127.0.3.1"),
        extra_env={"PIKUBE_STANDIN_KEY_ALGO": "rsa"},
    )  # kubeadm's default key type
    config = testing.init_config(cp) + UNRELATED_DOCUMENT
    with testing.initialised_cluster(cp, config) as cluster:
        yield cluster


def new_worker(cluster: dict[str, object], name: str, ip: str) -> FakeNode:
    w = FakeNode(cluster["base"], name, ip, port=0)  # type: ignore[arg-type]
    cluster["nodes"].append(w)  # type: ignore[attr-defined]
    return w


def join_command(cp: FakeNode, *args: str) -> re.Match[str]:
    r = cp.kubeadm("token", "create", "--print-join-command", *args)
    assert r.returncode == 0, r.stderr
    m = JOIN_RE.match(r.stdout.rstrip("\n"))
    assert m, f"not the real join command form: {r.stdout!r}"
    return m


# --------------------------------------------------------------------------- config + preflight
def test_config_validate_rejects_unknown_config_field(node: FakeNode, tmp_path: Path) -> None:
    """`kubeadm config validate` decodes strictly (common.go ValidateConfig, strictErrors)."""
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(testing.init_config(node, extra_cluster="  timeoutForControlPlane: 4m0s\n"))
    r = node.kubeadm("config", "validate", "--config", str(cfg))
    assert r.returncode == 1
    assert 'strict decoding error: unknown field "apiServer.timeoutForControlPlane"' in r.stderr, (
        r.stderr
    )
    assert 'Kind:"ClusterConfiguration"' in r.stderr


def test_init_refuses_a_quoted_bind_port(node: FakeNode, tmp_path: Path) -> None:
    """bindPort is an int32: '6443' fails kubeadm's decoding before anything is written."""
    cfg = tmp_path / "quoted.yaml"
    cfg.write_text(
        testing.init_config(node).replace(f"bindPort: {node.port}", f"bindPort: '{node.port}'")
    )
    r = node.kubeadm("init", "--config", str(cfg))
    assert r.returncode == 1
    assert (
        "json: cannot unmarshal string into Go struct field APIEndpoint.localAPIEndpoint.bindPort"
        " of type int32"
    ) in r.stderr, r.stderr
    assert not (node.root / "etc/kubernetes/pki/ca.crt").exists()


def test_v1beta3_accepts_timeout_for_control_plane(node: FakeNode, tmp_path: Path) -> None:
    cfg = tmp_path / "v3.yaml"
    cfg.write_text(
        testing.init_config(
            node, api="kubeadm.k8s.io/v1beta3", extra_cluster="  timeoutForControlPlane: 4m0s\n"
        )
    )
    r = node.kubeadm("config", "validate", "--config", str(cfg))
    assert r.returncode == 0, r.stderr


def test_kubeadm_130_does_not_know_v1beta4(node: FakeNode, tmp_path: Path) -> None:
    cfg = tmp_path / "v4.yaml"
    cfg.write_text(testing.init_config(node))
    r = node.kubeadm("init", "--config", str(cfg), env={"PIKUBE_STANDIN_VERSION": "1.30.14"})
    assert r.returncode == 1
    assert (
        'no kind "InitConfiguration" is registered for version "kubeadm.k8s.io/v1beta4"' in r.stderr
    )


def test_preflight_reports_swap_forwarding_and_runtime(node: FakeNode, tmp_path: Path) -> None:
    (node.proc / "swaps").write_text(
        (node.proc / "swaps").read_text() + "/swapfile  file  102396  0  -2\n"
    )
    (node.proc / "sys/net/ipv4/ip_forward").write_text("0\n")
    node.stop_cri()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(testing.init_config(node))
    r = node.kubeadm("init", "--config", str(cfg))
    assert r.returncode == 1
    assert "[ERROR Swap]: running with swap on is not supported. Please disable swap" in r.stderr
    assert (
        "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: /proc/sys/net/ipv4/ip_forward "
        "contents are "
        "not set to 1"
    ) in r.stderr
    assert "[ERROR CRI]: container runtime is not running" in r.stderr
    assert "--ignore-preflight-errors" in r.stderr
    assert not (node.root / "etc/kubernetes/admin.conf").exists()
    r2 = node.kubeadm("init", "--config", str(cfg), "--ignore-preflight-errors=Swap,CRI")
    assert "[WARNING Swap]" in r2.stderr and "[ERROR Swap]" not in r2.stderr
    assert "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]" in r2.stderr and r2.returncode == 1


def test_kubelet_without_kubeconfig_exits_1_like_the_real_one(node: FakeNode) -> None:
    r = node.run("kubelet")
    assert r.returncode == 1
    assert (
        "failed to load kubelet config file" in r.stderr and "no such file or directory" in r.stderr
    )


def test_version_short() -> None:
    r = subprocess.run(
        [testing.PYTHON, "-m", "pikube_standin.kubeadm", "version", "-o", "short"],
        env={"PYTHONPATH": str(testing.PAYLOAD), "PIKUBE_STANDIN_VERSION": "1.30.14"},
        capture_output=True,
        text=True,
    )
    assert r.stdout == "v1.30.14\n"


# --------------------------------------------------------------------------- init
def test_init_creates_ca_admin_conf_and_never_prints_the_token(cluster: dict[str, object]) -> None:
    res: subprocess.CompletedProcess[str] = cluster["init"]  # type: ignore[assignment]
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    assert res.returncode == 0, res.stderr
    assert "Your Kubernetes control-plane has initialized successfully!" in res.stdout
    assert not re.search(r"[a-z0-9]{6}\.[a-z0-9]{16}", res.stdout + res.stderr)
    pki = cp.root / "etc/kubernetes/pki"
    ca = subprocess.run(
        [
            "openssl",
            "x509",
            "-in",
            str(pki / "ca.crt"),
            "-noout",
            "-subject",
            "-ext",
            "basicConstraints",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "CN = kubernetes" in ca and "CA:TRUE" in ca
    sans = subprocess.run(
        ["openssl", "x509", "-in", str(pki / "apiserver.crt"), "-noout", "-ext", "subjectAltName"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for san in (
        "DNS:cp1",
        "DNS:cp.lab.example",
        "IP Address:127.0.3.1",
        "IP Address:10.99.0.1",
        "IP Address:10.96.0.1",
        "DNS:kubernetes.default.svc.cluster.local",
    ):
        assert san in sans
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(pki / "ca.crt"), str(pki / "apiserver.crt")],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0
    assert (cp.root / "etc/kubernetes/admin.conf").stat().st_mode & 0o077 == 0
    nodes = cp.kubectl("get", "nodes", "-o", "name")
    assert nodes.stdout.strip() == "node/cp1", nodes.stderr


def test_init_skips_unrelated_documents_with_a_warning(cluster: dict[str, object]) -> None:
    res = cluster["init"]
    assert res.returncode == 0, res.stderr  # type: ignore[attr-defined]
    assert (
        "[config] WARNING: Ignored configuration document with GroupVersionKind "
        "notes.example.com/v1, Kind=Note"
    ) in res.stderr  # type: ignore[attr-defined]


def test_second_init_is_refused(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    cfg = Path(cluster["base"]) / "init.yaml"  # type: ignore[arg-type]
    r = cp.kubeadm("init", "--config", str(cfg))
    assert r.returncode == 1
    assert f"[ERROR Port-{cp.port}]: Port {cp.port} is in use" in r.stderr
    assert (
        "[ERROR FileAvailable--etc-kubernetes-manifests-kube-apiserver.yaml]: "
        "/etc/kubernetes/manifests/kube-apiserver.yaml already exists"
    ) in r.stderr


# --------------------------------------------------------------------------- tokens + join
def test_token_create_prints_real_join_command_with_ca_pin(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    assert m.group(1) == f"{cp.ip}:{cp.port}"
    # the command from the kubeadm docs for computing the pin, run independently with openssl
    pub = subprocess.run(
        ["openssl", "x509", "-pubkey", "-in", str(cp.root / "etc/kubernetes/pki/ca.crt")],
        capture_output=True,
        check=True,
    ).stdout
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, capture_output=True, check=True
    ).stdout
    digest = subprocess.run(
        ["sha256sum"], input=der, capture_output=True, check=True
    ).stdout.split()[0]
    assert m.group(3) == "sha256:" + digest.decode()
    listing = cp.kubeadm("token", "list")
    tid = m.group(2).split(".")[0]
    assert tid in listing.stdout and m.group(2) not in listing.stdout


def test_join_with_wrong_token_fails(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "wbad1", "127.0.3.11")
    r = w.kubeadm(
        "join",
        m.group(1),
        "--token",
        "abcdef.0123456789abcdef",
        "--discovery-token-ca-cert-hash",
        m.group(3),
    )
    assert r.returncode == 1
    assert (
        'could not find a JWS signature in the cluster-info ConfigMap for token ID "abcdef"'
        in r.stderr
    )
    wrong_secret = m.group(2).split(".")[0] + ".0123456789abcdef"
    r = w.kubeadm(
        "join", m.group(1), "--token", wrong_secret, "--discovery-token-ca-cert-hash", m.group(3)
    )
    assert r.returncode == 1
    assert "failed to verify JWS signature of received cluster info object" in r.stderr
    assert not (w.root / "etc/kubernetes/kubelet.conf").exists()


def test_join_with_wrong_ca_pin_fails(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "wbad2", "127.0.3.12")
    r = w.kubeadm(
        "join",
        m.group(1),
        "--token",
        m.group(2),
        "--discovery-token-ca-cert-hash",
        "sha256:" + "0" * 64,
    )
    assert r.returncode == 1
    assert (
        "cluster CA found in cluster-info ConfigMap is not trusted: none of the public keys"
        in r.stderr
    )
    assert not (w.root / "etc/kubernetes/kubelet.conf").exists()


def test_join_without_pin_is_refused(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "wbad3", "127.0.3.13")
    r = w.kubeadm("join", m.group(1), "--token", m.group(2))
    assert (
        r.returncode == 1
        and "using token-based discovery without caCertHashes can be unsafe" in r.stderr
    )


def test_join_with_expired_token_fails(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp, "--ttl", "1s")
    tid = m.group(2).split(".")[0]
    # the token cleaner removes the expired token; wait for that to be observable
    assert testing.wait_until(lambda: tid not in cp.kubeadm("token", "list").stdout)
    w = new_worker(cluster, "wbad4", "127.0.3.14")
    r = w.kubeadm(
        "join", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)
    )
    assert r.returncode == 1
    assert (
        f'could not find a JWS signature in the cluster-info ConfigMap for token ID "{tid}"'
        in r.stderr
    )


def test_join_succeeds_registers_node_and_refuses_second_join(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "w1", "127.0.3.21")
    r = w.kubeadm(
        "join", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)
    )
    assert r.returncode == 0, r.stderr
    assert "This node has joined the cluster" in r.stdout
    assert (w.root / "etc/kubernetes/kubelet.conf").exists()
    assert (w.root / "etc/kubernetes/pki/ca.crt").read_bytes() == (
        cp.root / "etc/kubernetes/pki/ca.crt"
    ).read_bytes()
    got = cp.kubectl("get", "node", "w1", "-o", "jsonpath={.status.nodeInfo.kubeletVersion}")
    assert got.stdout == "v1.31.13", got.stderr
    again = w.kubeadm(
        "join", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)
    )
    assert again.returncode == 1
    assert (
        "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]: /etc/kubernetes/kubelet.conf already "
        "exists" in again.stderr
    )
    assert "[ERROR Port-10250]: Port 10250 is in use" in again.stderr  # the running kubelet
    # the same name from another machine is refused while the node is Ready
    assert cp.kubectl("wait", "--for=condition=Ready", "node/w1", "--timeout=60s").returncode == 0
    twin = FakeNode(Path(cluster["base"]) / "twin", "w1", "127.0.3.22", port=0)  # type: ignore[arg-type]
    cluster["nodes"].append(twin)  # type: ignore[attr-defined]
    r3 = twin.kubeadm(
        "join", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)
    )
    assert (
        r3.returncode == 1
        and 'a Node with name "w1" and status "Ready" already exists' in r3.stderr
    )


def test_join_config_file(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "w2", "127.0.3.23")
    cfg = w.dir / "join.yaml"
    cfg.write_text(f"""apiVersion: kubeadm.k8s.io/v1beta4
kind: JoinConfiguration
discovery:
  bootstrapToken:
    apiServerEndpoint: {m.group(1)}
    token: {m.group(2)}
    caCertHashes: [{m.group(3)}]
nodeRegistration:
  name: w2
""")
    r = w.kubeadm("join", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert cp.kubectl("get", "node", "w2").returncode == 0


def test_reset_undoes_join_and_node_goes_not_ready(cluster: dict[str, object]) -> None:
    cp: FakeNode = cluster["cp"]  # type: ignore[assignment]
    m = join_command(cp)
    w = new_worker(cluster, "w3", "127.0.3.24")
    assert (
        w.kubeadm(
            "join", m.group(1), "--token", m.group(2), "--discovery-token-ca-cert-hash", m.group(3)
        ).returncode
        == 0
    )
    assert cp.kubectl("wait", "--for=condition=Ready", "node/w3", "--timeout=60s").returncode == 0
    refused = w.kubeadm("reset", input="")
    assert refused.returncode == 1 and "won't proceed" in refused.stderr
    assert (w.root / "etc/kubernetes/kubelet.conf").exists()
    r = w.kubeadm("reset", "-f")
    assert r.returncode == 0, r.stderr
    assert not (w.root / "etc/kubernetes/kubelet.conf").exists()
    assert not any((w.root / "etc/kubernetes/pki").iterdir())
    assert not any((w.root / "var/lib/kubelet").iterdir())
    waited = cp.kubectl("wait", "--for=condition=Ready=Unknown", "node/w3", "--timeout=60s")
    assert waited.returncode == 0, waited.stderr
    # after reset the node can join again
    m2 = join_command(cp)
    again = w.kubeadm(
        "join", m2.group(1), "--token", m2.group(2), "--discovery-token-ca-cert-hash", m2.group(3)
    )
    assert again.returncode == 0, again.stderr


def test_reset_on_control_plane_stops_the_api(tmp_path: Path) -> None:
    cp = FakeNode(tmp_path, "solo", "127.0.2.9", port=testing.free_port("127.0.2.9"))
    try:
        cfg = tmp_path / "init.yaml"
        cfg.write_text(testing.init_config(cp))
        assert cp.kubeadm("init", "--config", str(cfg)).returncode == 0
        assert cp.kubectl("get", "--raw", "/readyz").stdout == "ok"
        admin = tmp_path / "admin.conf"
        admin.write_bytes((cp.root / "etc/kubernetes/admin.conf").read_bytes())
        assert cp.kubeadm("reset", "-f").returncode == 0
        assert not (cp.root / "etc/kubernetes/admin.conf").exists()
        assert not any((cp.root / "etc/kubernetes/manifests").iterdir())
        assert not any((cp.root / "var/lib/etcd").iterdir())
        assert cp.kubectl("get", "--raw", "/readyz", kubeconfig=admin, timeout=30).returncode != 0
        # and it can be initialised again
        assert cp.kubeadm("init", "--config", str(cfg)).returncode == 0
    finally:
        cp.cleanup()


# --------------------------------------------------------------------------- upgrade
def test_upgrade_plan_and_apply_one_minor(tmp_path: Path) -> None:
    cp = FakeNode(
        tmp_path,
        "up",
        "127.0.2.10",
        port=testing.free_port("127.0.2.10"),
        extra_env={"PIKUBE_STANDIN_VERSION": "1.30.14"},
    )
    try:
        cfg = tmp_path / "init.yaml"
        cfg.write_text(
            testing.init_config(cp, api="kubeadm.k8s.io/v1beta3").replace("v1.31.13", "v1.30.14")
        )
        r = cp.kubeadm("init", "--config", str(cfg))
        assert r.returncode == 0, r.stderr
        old = cp.kubeadm("upgrade", "apply", "v1.31.13", "-y")
        assert old.returncode == 1 and "Upgrade kubeadm first" in old.stderr
        new = {"PIKUBE_STANDIN_VERSION": "1.31.13"}
        plan = cp.kubeadm("upgrade", "plan", env=new)
        assert plan.returncode == 0, plan.stderr
        assert "kubeadm upgrade apply v1.31.13" in plan.stdout and "v1.30.14" in plan.stdout
        too_far = cp.kubeadm("upgrade", "apply", "v1.32.0", "-y", env=new)
        assert too_far.returncode == 1 and "higher than the kubeadm version" in too_far.stderr
        unconfirmed = cp.kubeadm("upgrade", "apply", "v1.31.13", input="", env=new)
        assert unconfirmed.returncode == 1
        ok = cp.kubeadm("upgrade", "apply", "v1.31.13", "-y", env=new)
        assert ok.returncode == 0, ok.stderr
        assert (
            '[upgrade/successful] SUCCESS! Your cluster was upgraded to "v1.31.13". Enjoy!'
            in ok.stdout
        )
        ver = cp.kubectl("version")
        assert 'GitVersion:"v1.31.13"' in ver.stdout.split("Server Version")[1]
        # the kubelet reports its own package version until it is upgraded and restarted
        assert (
            cp.kubectl(
                "get", "node", "up", "-o", "jsonpath={.status.nodeInfo.kubeletVersion}"
            ).stdout
            == "v1.30.14"
        )
        node_up = cp.kubeadm("upgrade", "node", env=new)
        assert node_up.returncode == 0 and "successfully updated" in node_up.stdout
        cp.env["PIKUBE_STANDIN_VERSION"] = "1.31.13"
        cp.service("start", "kubelet")
        assert testing.wait_until(
            lambda: (
                cp.kubectl(
                    "get", "node", "up", "-o", "jsonpath={.status.nodeInfo.kubeletVersion}"
                ).stdout
                == "v1.31.13"
            )
        )
        again = cp.kubeadm("upgrade", "plan", env=new)
        assert "up-to-date" in again.stdout
    finally:
        cp.cleanup()
