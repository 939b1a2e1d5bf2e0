"""Lab nodes ready for the pikube_vip role: each one runs the lab's Kubernetes API emulator
(tests/lab/standins, TLS with a real CA) as its "API server" on :6443, so haproxy's TLS
/healthz checks and keepalived's health script meet a real TLS server; the cluster gets a
VIP address in the lab subnet and a VRRP password file. Shared by tests/integration/
test_vip_lab.py and the role's molecule scenario (roles/pikube_vip/molecule/default), which
runs it as::

    python -m tests.lab.standins.vip --name LAB --subnet SUBNET --group-vars FILE --work DIR
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

from pikube.vrrp import ensure_auth_pass
from tests.lab import Lab

PAYLOAD = Path(__file__).resolve().parent / "payload/pikube_standin"
API_PORT = 6443

# The stand-in API server on each node: the lab's API emulator with a serving certificate for
# the node's address and the VIP, signed by one CA (as kubeadm's apiserver certificate is).
# Written straight into the node's disk and started with systemctl: no SSH run needed.
STANDIN_LIB = "/usr/lib/pikube-vip-standin"
STANDIN_PKI = "/etc/pikube-vip-standin"
STANDIN_UNIT = """[Service]
Environment=PYTHONPATH={lib}
ExecStart=/usr/bin/python3 -m pikube_standin.apiserver --secure-port={port} \\
  --advertise-address={ip} \\
  --tls-cert-file={pki}/apiserver.crt --tls-private-key-file={pki}/apiserver.key \\
  --client-ca-file={pki}/ca.crt --standin-state-file=/var/lib/pikube-vip-standin/state.json
StateDirectory=pikube-vip-standin
"""


@dataclass(frozen=True)
class VipSetup:
    vip: str
    ca: Path  # the stand-in API servers' CA certificate, to verify TLS through the VIP
    auth_pass_file: Path


def vip_address(lab: Lab) -> str:
    """The VIP: a free address in the lab subnet (lab nodes take the low ones)."""
    return str(IPv4Network(lab.subnet).network_address + 100)


def start_standin_apiserver(
    lab: Lab, node: str, ip: str, vip: str, ca_crt: bytes, ca_key: bytes
) -> None:
    """The lab's API emulator as this node's API server on :6443, and the apt proxy that
    pikube's node prep would have configured (the role installs through it)."""
    from tests.lab.core import _write_inside
    from tests.lab.standins.payload.pikube_standin import pki

    crt, key = pki.issue(
        ca_crt, ca_key, "kube-apiserver", sans=[ip, vip, "127.0.0.1"], server=True, client=False
    )
    unit = STANDIN_UNIT.format(lib=STANDIN_LIB, port=API_PORT, ip=ip, pki=STANDIN_PKI)
    files = {
        f"{STANDIN_PKI}/ca.crt": (ca_crt, 0o644),
        f"{STANDIN_PKI}/apiserver.crt": (crt, 0o644),
        f"{STANDIN_PKI}/apiserver.key": (key, 0o600),
        "/etc/systemd/system/pikube-vip-standin-apiserver.service": (unit.encode(), 0o644),
        "/etc/apt/apt.conf.d/81pikube-proxy": (
            f'Acquire::http::Proxy "{lab.apt_proxy}";\n'.encode(),
            0o644,
        ),
    }
    # The whole package: the API server imports its siblings (storage, addon_controllers, ...),
    # and a list of some of them broke when it gained one.
    for module in sorted(PAYLOAD.glob("*.py")):
        files[f"{STANDIN_LIB}/pikube_standin/{module.name}"] = (module.read_bytes(), 0o644)
    root = lab.node_dir(node) / "merged"
    for where, (data, mode) in files.items():
        _write_inside(root, where, data, mode)
    lab.exec(node, ["systemctl", "daemon-reload"], check=True)
    lab.exec(node, ["systemctl", "start", "pikube-vip-standin-apiserver"], check=True)


def prepare(lab: Lab, group_vars: Path, work: Path) -> VipSetup:
    """Stand-in API servers on every node of the running ``lab``; the VIP and the VRRP password
    file (in ``work``/state) appended to pikube's rendered ``group_vars`` (cluster.yml)."""
    from tests.lab.standins.payload.pikube_standin import pki

    vip = vip_address(lab)
    auth_pass_file = ensure_auth_pass(work / "state")
    with group_vars.open("a") as handle:
        handle.write(f"\npikube_vip_address: {json.dumps(vip)}\n")
        handle.write(f"pikube_vip_auth_pass_file: {json.dumps(str(auth_pass_file))}\n")
    pki_dir = work / "pki"
    pki_dir.mkdir(exist_ok=True)
    ca_crt, ca_key = pki.make_ca()
    (pki_dir / "ca.crt").write_bytes(ca_crt)
    for spec in lab.nodes():
        start_standin_apiserver(lab, spec.name, spec.ip, vip, ca_crt, ca_key)
    return VipSetup(vip=vip, ca=pki_dir / "ca.crt", auth_pass_file=auth_pass_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the running lab's name")
    parser.add_argument("--subnet", required=True, help="the running lab's subnet")
    parser.add_argument("--group-vars", type=Path, required=True, help="pikube's cluster.yml")
    parser.add_argument("--work", type=Path, required=True, help="folder for CA and password")
    args = parser.parse_args()
    setup = prepare(Lab(args.name, args.subnet), args.group_vars, args.work)
    print(json.dumps({"vip": setup.vip, "ca": str(setup.ca)}))


if __name__ == "__main__":
    main()
