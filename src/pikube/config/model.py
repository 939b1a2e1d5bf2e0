"""The cluster model: the one source of truth read from ``cluster.yaml``.

Field-level rules live here (types, formats, choices); rules that relate several fields
(duplicates, subnets, overlaps, roles) live in ``pikube.config.checks`` so that every problem
in a file is reported in one pass.
"""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv4Network, IPv6Address
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from pikube.addons import ADDONS, lb_range_bounds
from pikube.config.pimodels import PI_MODELS
from pikube.distribution import (
    KUBEADM,
    MICROK8S,
    Distribution,
    DistributionName,
    PodNetworkName,
    Release,
    VersionError,
    by_version_key,
    distribution,
    vip_port,
)

# Every pattern is used with fullmatch: `re.match` with `$` also accepts a final "\n", and a
# name ending in a newline breaks every file it lands in (user-data, known_hosts, YAML).
HOSTNAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
# An addon and its optional argument (`metallb:10.64.140.43-10.64.140.49`): printable, no
# spaces or quotes, since it becomes one `microk8s enable` argument.
ADDON_RE = re.compile(r"[a-z0-9][a-z0-9-]*(:[A-Za-z0-9._/:,=@+-]+)?")
# Characters a URL pikube writes into apt.conf and sources.list may hold: RFC 3986's
# unreserved characters and the delimiters a repository path uses. No quotes (they end an
# apt.conf value), whitespace or newlines (they end a sources.list entry), `$` (apt expands
# $(ARCH)), `{`/`}` (template syntax), `@` (credentials), `?` and `#`.
URL_CHARS_RE = re.compile(r"[A-Za-z0-9._~:/\[\]+,;=%!-]+")
URL_HOST_RE = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
URL_PATH_RE = re.compile(r"(/[A-Za-z0-9._~:+,;=%!-]*)*")
KUBEADM_CONFIG_KINDS = (
    "InitConfiguration",
    "ClusterConfiguration",
    "JoinConfiguration",
    "KubeletConfiguration",
    "KubeProxyConfiguration",
)
DEFAULT_PACKAGE_REPO = "https://pkgs.k8s.io/core:/stable:"
DEFAULT_STATE_DIR = ".pikube"  # relative to the cluster file's folder
# Control-plane counts a cluster may have: etcd (kubeadm's stacked etcd) and dqlite (MicroK8s)
# work while a majority of their members is up, so 3 members survive one failure and 5 two; an
# even count adds a member without surviving one more failure (etcd FAQ, "Why an odd number of
# cluster members?"), and more than 5 slows every write down for nothing a homelab needs.
CONTROL_PLANE_COUNTS = (1, 3, 5)


def url_problem(value: str, *, path_allowed: bool) -> str | None:
    """Why ``value`` is not an http(s) URL safe to write into apt.conf and sources.list.

    None when it is: scheme http or https, a host name or IP address, an optional port, and
    (only where ``path_allowed``) a path; no credentials, query, fragment or other characters.
    """
    if not URL_CHARS_RE.fullmatch(value):
        bad = next((c for c in value if not URL_CHARS_RE.fullmatch(c)), "")
        return f"the character {bad!r} is not allowed in it" if bad else "it is empty"
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as err:
        return str(err)
    if parts.scheme not in ("http", "https"):
        return "the scheme must be http:// or https://"
    host = parts.netloc.rsplit(":", 1)[0] if port is not None else parts.netloc
    if host.startswith("["):
        try:
            IPv6Address(host[1:-1])
        except ValueError:
            return f"{host} is not an IPv6 address"
    elif not URL_HOST_RE.fullmatch(host):
        return f"{host or 'the host'} is not a host name or address"
    if port == 0:
        return "port 0 is not a port"
    if parts.netloc.endswith(":"):
        return "the port is missing after ':'"
    if not URL_PATH_RE.fullmatch(parts.path):
        return f"{parts.path} is not a URL path"
    if not path_allowed and parts.path not in ("", "/"):
        return "a proxy URL has no path"
    return None


def fail(message: str, fix: str) -> PydanticCustomError:
    """A field error that carries its own fix text through pydantic's error list."""
    return PydanticCustomError("pikube", "{message}", {"message": message, "fix": fix})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class Network(Section):
    subnet: IPv4Network
    gateway: IPv4Address
    dns: list[IPv4Address] = Field(min_length=1)
    domain: str | None = None
    # The control plane's virtual IP (keepalived + haproxy, roles/pikube_vip): a free address
    # of the subnet; required with more than one control plane.
    vip: IPv4Address | None = None
    # Addresses MetalLB (or MicroK8s' metallb) hands to LoadBalancer Services, FIRST-LAST or a
    # CIDR block: free addresses of the subnet (pikube.config.checks). The load-balancer addon
    # needs it.
    lb_range: str | None = None

    @field_validator("lb_range")
    @classmethod
    def _lb_range(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            lb_range_bounds(value)
        except ValueError as err:
            raise fail(
                f"{value!r} is not an address range ({err})",
                "write FIRST-LAST, e.g. lb_range: 192.168.1.240-192.168.1.250, or a CIDR block",
            ) from None
        return value

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and not all(HOSTNAME_RE.fullmatch(p) for p in value.split(".")):
            raise fail(
                f"{value!r} is not a valid DNS domain",
                "use lowercase labels of letters, digits and '-', e.g. home.lan",
            )
        return value


class Ssh(Section):
    user: str = "ubuntu"
    public_key: Path
    private_key: Path
    known_hosts: Path | None = None

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not USER_RE.fullmatch(value):
            raise fail(f"{value!r} is not a valid Linux user name", "use e.g. 'ubuntu' or 'pi'")
        return value


class Kubernetes(Section):
    version: str | None = None
    channel: str | None = None
    cni: PodNetworkName | None = None
    pod_cidr: IPv4Network | None = None
    service_cidr: IPv4Network | None = None
    addons: list[str] = Field(default_factory=list)
    kubeadm_config: dict[str, dict[str, Any]] = Field(default_factory=dict)
    package_repo: str = DEFAULT_PACKAGE_REPO

    # The version and the channel are each parsed by the one flavour they belong to.
    @field_validator("version", "channel")
    @classmethod
    def _release(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        try:
            return by_version_key(str(info.field_name)).parse(str(value)).text
        except VersionError as err:
            raise fail(err.message, err.fix) from None

    @field_validator("addons")
    @classmethod
    def _addons(cls, value: list[str]) -> list[str]:
        for addon in value:
            if not ADDON_RE.fullmatch(addon):
                raise fail(
                    f"{addon!r} is not an addon name",
                    "use " + ", ".join(ADDONS) + " (MicroK8s also takes its own, e.g. dns)",
                )
        return value

    @field_validator("kubeadm_config")
    @classmethod
    def _kubeadm_config(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for kind in value:
            if kind not in KUBEADM_CONFIG_KINDS:
                raise fail(
                    f"kubeadm_config has unknown kind {kind!r}",
                    "use one of " + ", ".join(KUBEADM_CONFIG_KINDS),
                )
        return value

    @field_validator("package_repo")
    @classmethod
    def _package_repo(cls, value: str) -> str:
        reason = url_problem(value, path_allowed=True)
        if reason:
            raise fail(
                f"{value!r} is not a repository URL: {reason}",
                f"use the pkgs.k8s.io base, {DEFAULT_PACKAGE_REPO}, or an http(s) mirror of it",
            )
        return value.rstrip("/")


class Node(Section):
    name: str
    ip: IPv4Address
    role: Literal["control-plane", "worker"]
    model: str | None = None
    mac: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HOSTNAME_RE.fullmatch(value):
            raise fail(
                f"{value!r} is not a valid hostname (RFC 1123)",
                "use at most 63 lowercase letters, digits and '-', starting and ending "
                "with a letter or digit, e.g. pi-worker-1",
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        if value is not None and value not in PI_MODELS:
            from difflib import get_close_matches

            close = get_close_matches(value, PI_MODELS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise fail(
                f"unknown Raspberry Pi model {value!r}",
                hint + "known models: " + ", ".join(PI_MODELS),
            )
        return value

    @field_validator("mac")
    @classmethod
    def _mac(cls, value: str | None) -> str | None:
        if value is None:
            return value
        normal = value.lower().replace("-", ":")
        if not MAC_RE.fullmatch(normal):
            raise fail(
                f"{value!r} is not a MAC address", "write six hex pairs, e.g. dc:a6:32:01:02:03"
            )
        return normal


class Cluster(Section):
    name: str
    distribution: DistributionName
    kubernetes: Kubernetes = Field(default_factory=Kubernetes)
    network: Network
    ssh: Ssh
    image: str = "ubuntu-24.04-server-arm64"
    apt_proxy: str | None = None
    timezone: str | None = None
    state_dir: Path | None = None
    nodes: list[Node] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not HOSTNAME_RE.fullmatch(value):
            raise fail(
                f"{value!r} is not a valid cluster name",
                "use lowercase letters, digits and '-', e.g. homelab",
            )
        return value

    @field_validator("apt_proxy")
    @classmethod
    def _apt_proxy(cls, value: str | None) -> str | None:
        reason = url_problem(value, path_allowed=False) if value is not None else None
        if reason:
            raise fail(
                f"{value!r} is not a proxy URL: {reason}",
                "write the caching proxy as http://HOST:PORT, e.g. http://192.168.1.10:3142",
            )
        return value.rstrip("/") if value else value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(value)
        except (ValueError, KeyError, OSError):
            raise fail(
                f"unknown time zone {value!r}", "use an IANA name such as Europe/Berlin or UTC"
            ) from None
        return value

    # -- derived values (the model stays the single source of truth) --------------------

    @property
    def control_plane(self) -> Node:
        """The bootstrap node: the first control plane in the file. It creates the cluster
        (kubeadm init, MicroK8s' first member, the VRRP master at first); the other control
        planes join it. Everything that needs "the first" asks this property, and the
        inventory lists the control planes in this order (pikube_control_plane_host)."""
        return self.control_planes[0]

    @property
    def control_planes(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "control-plane"]

    @property
    def workers(self) -> list[Node]:
        return [n for n in self.nodes if n.role == "worker"]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    @property
    def control_plane_endpoint(self) -> str:
        """HOST:PORT every client of the API uses: the kubeconfig, the joins, the kubelets.

        With network.vip, haproxy's port on the VIP (roles/pikube_vip); else the bootstrap
        node's API server.
        """
        if self.network.vip is not None:
            return f"{self.network.vip}:{vip_port()}"
        return f"{self.control_plane.ip}:{self.flavour.api_port}"

    @property
    def flavour(self) -> Distribution:
        """The cluster's ``Distribution``: everything that depends on the flavour asks it."""
        return distribution(self.distribution)

    @property
    def release(self) -> Release:
        """The version (kubeadm) or channel (MicroK8s) the cluster runs, or the default."""
        return self.flavour.release(self.kubernetes)

    @property
    def pod_cidr(self) -> IPv4Network:
        return self.kubernetes.pod_cidr or IPv4Network(self.flavour.default_pod_cidr)

    @property
    def service_cidr(self) -> IPv4Network:
        return self.kubernetes.service_cidr or IPv4Network(self.flavour.default_service_cidr)

    @property
    def kubernetes_version(self) -> str:
        """kubernetes.version, or kubeadm's default."""
        return KUBEADM.release(self.kubernetes).text

    @property
    def microk8s_channel(self) -> str:
        """kubernetes.channel, or MicroK8s' default."""
        return MICROK8S.release(self.kubernetes).text

    @property
    def cni(self) -> str:
        """The pod network's name (flannel unless kubernetes.cni says otherwise)."""
        return self.flavour.pod_network(self.kubernetes.cni).name

    @property
    def dns_domain(self) -> str | None:
        return self.network.domain


SECTIONS: dict[str, type[Section]] = {
    "": Cluster,
    "network": Network,
    "ssh": Ssh,
    "kubernetes": Kubernetes,
    "nodes": Node,
}
