"""MicroK8s `kubelite` stand-in: API server (standalone / first node) + kubelet heartbeat.

Real kubelite runs the apiserver, controller-manager, scheduler, kubelet and proxy in
one process (https://microk8s.io/docs/configuring-services). On a Raspberry Pi whose
kernel command line lacks `cgroup_enable=memory cgroup_memory=1` the kubelet inside it
fails to start (https://microk8s.io/docs/install-raspberry-pi); this stand-in reads the
lab's effective command line from /run/pikube-lab/cmdline and fails the same way.
"""

from __future__ import annotations

import contextlib
import sys
import threading

from . import apiserver, common, kubelet
from . import microk8s_dqlite as dqlite
from .microk8s import (
    api_port,
    data,
    is_worker,
    join_info,
    local_host,
    low_memory_guard,
    memory_cgroup_problem,
    version,
)

SEED = [
    (
        "apps",
        "daemonsets",
        "kube-system",
        {
            "metadata": {
                "name": "calico-node",
                "namespace": "kube-system",
                "labels": {"k8s-app": "calico-node"},
            },
            "spec": {
                "selector": {"matchLabels": {"k8s-app": "calico-node"}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "calico-node"}},
                    "spec": {
                        "containers": [
                            {"name": "calico-node", "image": "docker.io/calico/node:v3.28.1"}
                        ]
                    },
                },
            },
        },
    ),
    (
        "apps",
        "deployments",
        "kube-system",
        {
            "metadata": {
                "name": "calico-kube-controllers",
                "namespace": "kube-system",
                "labels": {"k8s-app": "calico-kube-controllers"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"k8s-app": "calico-kube-controllers"}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "calico-kube-controllers"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "calico-kube-controllers",
                                "image": "docker.io/calico/kube-controllers:v3.28.1",
                            }
                        ]
                    },
                },
            },
        },
    ),
    (
        "apps",
        "deployments",
        "kube-system",
        {
            "metadata": {
                "name": "coredns",
                "namespace": "kube-system",
                "labels": {"k8s-app": "kube-dns"},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"k8s-app": "kube-dns"}},
                "template": {
                    "metadata": {"labels": {"k8s-app": "kube-dns"}},
                    "spec": {
                        "containers": [{"name": "coredns", "image": "coredns/coredns:1.10.1"}]
                    },
                },
            },
        },
    ),
    (
        "",
        "services",
        "default",
        {
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver"},
            },
            "spec": {
                "clusterIP": "10.152.183.1",
                "ports": [{"name": "https", "port": 443, "protocol": "TCP"}],
            },
        },
    ),
]


def main() -> int:
    # run-kubelite-with-args: a worker runs kubelite without the control plane; otherwise the
    # low memory guard keeps it from starting at all (exit 0)
    if not is_worker() and low_memory_guard():
        print("kubelite will not run, memory guard is enabled", flush=True)
        return 0
    problem = memory_cgroup_problem()
    if problem:
        kubelet.klog(
            "E",
            '"Failed to start ContainerManager" err="system validation failed - Following Cgroup '
            'subsystem not mounted: [memory]"',
        )
        kubelet.klog(
            "E",
            f'"command failed" err="failed to run Kubelet: {problem} (kernel command line lacks '
            'cgroup_enable=memory cgroup_memory=1)"',
        )
        return 1
    common.start_watchdog()
    certs = data() / "certs"
    ji = join_info()
    labels = {"microk8s.io/cluster": "true"}
    if ji is None:
        # kubelite's API server starts once its datastore answers (k8s-dqlite, etcd here)
        common.wait_for(dqlite.healthy, 120, 0.5)
        s = apiserver.parse(["--from-args-file", str(data() / "args/kube-apiserver")])
        srv = apiserver.make_server(s)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        api = srv.RequestHandlerClass.api  # type: ignore[attr-defined]
        admin = apiserver.User("system:kube-controller-manager", ["system:masters"])
        for group, plural, ns, body in SEED:
            with contextlib.suppress(apiserver.HttpError):  # already there after a restart
                api.create(api.res_for(group, plural), ns, body, admin)
        server, ca = f"https://{local_host()}:{api_port()}", (certs / "ca.crt").read_bytes()
        labels["node.kubernetes.io/microk8s-controlplane"] = "microk8s-controlplane"
    else:
        server, ca = f"https://{ji['api']}", ji["ca"].encode()
        if ji["role"] == "worker":
            labels["node.kubernetes.io/microk8s-worker"] = "microk8s-worker"
        else:
            labels["node.kubernetes.io/microk8s-controlplane"] = "microk8s-controlplane"
    kubelet_config = data() / "credentials/kubelet.config"
    if ji is not None and ji["role"] == "worker" and kubelet_config.exists():
        # a worker's kubelet talks to its apiserver-proxy (create_worker_kubeconfigs)
        client = common.Client.from_kubeconfig(kubelet_config, timeout=5)
    else:
        client = common.Client(
            server,
            ca_pem=ca,
            cert_pem=(certs / "kubelet.crt").read_bytes(),
            key_pem=(certs / "kubelet.key").read_bytes(),
            timeout=5,
        )
    try:
        kubelet.serve_kubelet_ports(common.node_name())
    except OSError as e:
        return kubelet.fail(f"failed to run Kubelet: failed to listen on :10250: {e.strerror or e}")
    kubelet.heartbeat_loop(
        client,
        common.node_name(),
        common.default_ip(),
        version(),
        "unix:///var/snap/microk8s/common/run/containerd.sock",
        labels,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
