"""kubeadm configuration API: strict decoding of the multi-document config file.

Field trees follow the published references:
https://kubernetes.io/docs/reference/config-api/kubeadm-config.v1beta3/
https://kubernetes.io/docs/reference/config-api/kubeadm-config.v1beta4/
https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/
https://kubernetes.io/docs/reference/config-api/kube-proxy-config.v1alpha1/
A value of ANY accepts any content (maps of flags, free-form structures).
"""

from __future__ import annotations

from typing import Any

ANY: dict[str, Any] = {}
LIST = "list"  # marker: ("list", schema) is a list of schema

_TOKEN = {
    "token": ANY,
    "description": ANY,
    "ttl": ANY,
    "expires": ANY,
    "usages": ANY,
    "groups": ANY,
}
_TAINT = {"key": ANY, "value": ANY, "effect": ANY, "timeAdded": ANY}
_ARG = {"name": ANY, "value": ANY}
_ENV = ANY
_VOLUME = {"name": ANY, "hostPath": ANY, "mountPath": ANY, "readOnly": ANY, "pathType": ANY}
_ENDPOINT = {"advertiseAddress": ANY, "bindPort": ANY}
_PATCHES = {"directory": ANY}


def _nodereg(v4: bool) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": ANY,
        "criSocket": ANY,
        "taints": (LIST, _TAINT),
        "kubeletExtraArgs": (LIST, _ARG) if v4 else ANY,
        "ignorePreflightErrors": ANY,
        "imagePullPolicy": ANY,
    }
    if v4:
        d["imagePullSerial"] = ANY
    return d


def _component(v4: bool) -> dict[str, Any]:
    d: dict[str, Any] = {"extraArgs": (LIST, _ARG) if v4 else ANY, "extraVolumes": (LIST, _VOLUME)}
    if v4:
        d["extraEnvs"] = _ENV
    return d


def _etcd(v4: bool) -> dict[str, Any]:
    local: dict[str, Any] = {
        "imageRepository": ANY,
        "imageTag": ANY,
        "dataDir": ANY,
        "extraArgs": (LIST, _ARG) if v4 else ANY,
        "serverCertSANs": ANY,
        "peerCertSANs": ANY,
    }
    if v4:
        local["extraEnvs"] = _ENV
    return {
        "local": local,
        "external": {"endpoints": ANY, "caFile": ANY, "certFile": ANY, "keyFile": ANY},
    }


_TIMEOUTS = {
    k: ANY
    for k in (
        "controlPlaneComponentHealthCheck",
        "kubeletHealthCheck",
        "kubernetesAPICall",
        "etcdAPICall",
        "tlsBootstrap",
        "discovery",
        "upgradeManifests",
    )
}
_META = {"apiVersion": ANY, "kind": ANY}


def _schemas() -> dict[tuple[str, str], dict[str, Any]]:
    s: dict[tuple[str, str], dict[str, Any]] = {}
    for ver, v4 in (("kubeadm.k8s.io/v1beta3", False), ("kubeadm.k8s.io/v1beta4", True)):
        init: dict[str, Any] = {
            **_META,
            "bootstrapTokens": (LIST, _TOKEN),
            "nodeRegistration": _nodereg(v4),
            "localAPIEndpoint": _ENDPOINT,
            "certificateKey": ANY,
            "skipPhases": ANY,
            "patches": _PATCHES,
        }
        api_server = {**_component(v4), "certSANs": ANY}
        cluster: dict[str, Any] = {
            **_META,
            "etcd": _etcd(v4),
            "networking": {"serviceSubnet": ANY, "podSubnet": ANY, "dnsDomain": ANY},
            "kubernetesVersion": ANY,
            "controlPlaneEndpoint": ANY,
            "apiServer": api_server,
            "controllerManager": _component(v4),
            "scheduler": _component(v4),
            "dns": {"imageRepository": ANY, "imageTag": ANY},
            "certificatesDir": ANY,
            "imageRepository": ANY,
            "featureGates": ANY,
            "clusterName": ANY,
        }
        discovery: dict[str, Any] = {
            "bootstrapToken": {
                "token": ANY,
                "apiServerEndpoint": ANY,
                "caCertHashes": ANY,
                "unsafeSkipCAVerification": ANY,
            },
            "file": {"kubeConfigPath": ANY},
            "tlsBootstrapToken": ANY,
        }
        join: dict[str, Any] = {
            **_META,
            "nodeRegistration": _nodereg(v4),
            "caCertPath": ANY,
            "discovery": discovery,
            "controlPlane": {"localAPIEndpoint": _ENDPOINT, "certificateKey": ANY},
            "skipPhases": ANY,
            "patches": _PATCHES,
        }
        if v4:
            init.update(dryRun=ANY, timeouts=_TIMEOUTS)
            join.update(dryRun=ANY, timeouts=_TIMEOUTS)
            cluster["dns"]["disabled"] = ANY
            cluster.update(
                proxy={"disabled": ANY},
                encryptionAlgorithm=ANY,
                certificateValidityPeriod=ANY,
                caCertificateValidityPeriod=ANY,
            )
            s[(ver, "ResetConfiguration")] = {
                **_META,
                "cleanupTmpDir": ANY,
                "certificatesDir": ANY,
                "criSocket": ANY,
                "dryRun": ANY,
                "force": ANY,
                "ignorePreflightErrors": ANY,
                "skipPhases": ANY,
                "unmountFlags": ANY,
            }
            s[(ver, "UpgradeConfiguration")] = {
                **_META,
                "apply": ANY,
                "node": ANY,
                "plan": ANY,
                "diff": ANY,
                "timeouts": _TIMEOUTS,
            }
        else:
            discovery["timeout"] = ANY
            api_server["timeoutForControlPlane"] = ANY
        s[(ver, "InitConfiguration")] = init
        s[(ver, "ClusterConfiguration")] = cluster
        s[(ver, "JoinConfiguration")] = join
    kubelet_fields = [
        "enableServer",
        "staticPodPath",
        "podLogsDir",
        "syncFrequency",
        "fileCheckFrequency",
        "httpCheckFrequency",
        "staticPodURL",
        "staticPodURLHeader",
        "address",
        "port",
        "readOnlyPort",
        "tlsCertFile",
        "tlsPrivateKeyFile",
        "tlsCipherSuites",
        "tlsMinVersion",
        "rotateCertificates",
        "serverTLSBootstrap",
        "authentication",
        "authorization",
        "registryPullQPS",
        "registryBurst",
        "eventRecordQPS",
        "eventBurst",
        "enableDebuggingHandlers",
        "enableContentionProfiling",
        "healthzPort",
        "healthzBindAddress",
        "oomScoreAdj",
        "clusterDomain",
        "clusterDNS",
        "streamingConnectionIdleTimeout",
        "nodeStatusUpdateFrequency",
        "nodeStatusReportFrequency",
        "nodeLeaseDurationSeconds",
        "imageMinimumGCAge",
        "imageMaximumGCAge",
        "imageGCHighThresholdPercent",
        "imageGCLowThresholdPercent",
        "volumeStatsAggPeriod",
        "kubeletCgroups",
        "systemCgroups",
        "cgroupRoot",
        "cgroupsPerQOS",
        "cgroupDriver",
        "cpuManagerPolicy",
        "cpuManagerPolicyOptions",
        "cpuManagerReconcilePeriod",
        "memoryManagerPolicy",
        "topologyManagerPolicy",
        "topologyManagerScope",
        "topologyManagerPolicyOptions",
        "qosReserved",
        "runtimeRequestTimeout",
        "hairpinMode",
        "maxPods",
        "podCIDR",
        "podPidsLimit",
        "resolvConf",
        "runOnce",
        "cpuCFSQuota",
        "cpuCFSQuotaPeriod",
        "nodeStatusMaxImages",
        "maxOpenFiles",
        "contentType",
        "kubeAPIQPS",
        "kubeAPIBurst",
        "serializeImagePulls",
        "maxParallelImagePulls",
        "evictionHard",
        "evictionSoft",
        "evictionSoftGracePeriod",
        "evictionPressureTransitionPeriod",
        "evictionMaxPodGracePeriod",
        "evictionMinimumReclaim",
        "podsPerCore",
        "enableControllerAttachDetach",
        "protectKernelDefaults",
        "makeIPTablesUtilChains",
        "iptablesMasqueradeBit",
        "iptablesDropBit",
        "featureGates",
        "failSwapOn",
        "memorySwap",
        "containerLogMaxSize",
        "containerLogMaxFiles",
        "containerLogMaxWorkers",
        "containerLogMonitorInterval",
        "configMapAndSecretChangeDetectionStrategy",
        "systemReserved",
        "kubeReserved",
        "reservedSystemCPUs",
        "showHiddenMetricsForVersion",
        "systemReservedCgroup",
        "kubeReservedCgroup",
        "enforceNodeAllocatable",
        "allowedUnsafeSysctls",
        "volumePluginDir",
        "providerID",
        "kernelMemcgNotification",
        "logging",
        "enableSystemLogHandler",
        "enableSystemLogQuery",
        "shutdownGracePeriod",
        "shutdownGracePeriodCriticalPods",
        "shutdownGracePeriodByPodPriority",
        "crashLoopBackOff",
        "reservedMemory",
        "enableProfilingHandler",
        "enableDebugFlagsHandler",
        "seccompDefault",
        "memoryThrottlingFactor",
        "registerWithTaints",
        "registerNode",
        "tracing",
        "localStorageCapacityIsolation",
        "containerRuntimeEndpoint",
        "imageServiceEndpoint",
        "failCgroupV1",
        "userNamespaces",
        "singleProcessOOMKill",
    ]
    s[("kubelet.config.k8s.io/v1beta1", "KubeletConfiguration")] = {
        **_META,
        **{f: ANY for f in kubelet_fields},
    }
    proxy_fields = [
        "featureGates",
        "clientConnection",
        "hostnameOverride",
        "bindAddress",
        "healthzBindAddress",
        "metricsBindAddress",
        "bindAddressHardFail",
        "enableProfiling",
        "showHiddenMetricsForVersion",
        "mode",
        "nftables",
        "winkernel",
        "detectLocalMode",
        "detectLocal",
        "clusterCIDR",
        "nodePortAddresses",
        "oomScoreAdj",
        "configSyncPeriod",
        "portRange",
        "logging",
    ]
    s[("kubeproxy.config.k8s.io/v1alpha1", "KubeProxyConfiguration")] = {
        **_META,
        **{f: ANY for f in proxy_fields},
        "iptables": {
            "masqueradeBit": ANY,
            "masqueradeAll": ANY,
            "localhostNodePorts": ANY,
            "syncPeriod": ANY,
            "minSyncPeriod": ANY,
        },
        "ipvs": {
            "syncPeriod": ANY,
            "minSyncPeriod": ANY,
            "scheduler": ANY,
            "excludeCIDRs": ANY,
            "strictARP": ANY,
            "tcpTimeout": ANY,
            "tcpFinTimeout": ANY,
            "udpTimeout": ANY,
        },
        "conntrack": {
            "maxPerCore": ANY,
            "min": ANY,
            "tcpEstablishedTimeout": ANY,
            "tcpCloseWaitTimeout": ANY,
            "tcpBeLiberal": ANY,
            "udpTimeout": ANY,
            "udpStreamTimeout": ANY,
        },
    }
    return s


SCHEMAS = _schemas()
SCHEME_FILE = {
    "kubeadm.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/apis/kubeadm/scheme/scheme.go:31",
    "kubelet.config.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/componentconfigs/scheme.go:28",
    "kubeproxy.config.k8s.io": "k8s.io/kubernetes/cmd/kubeadm/app/componentconfigs/scheme.go:28",
}


class ConfigError(Exception):
    pass


def unknown_fields(doc: Any, schema: Any, prefix: str = "") -> list[str]:
    if schema is ANY or not isinstance(schema, dict | tuple):
        return []
    if isinstance(schema, tuple):
        if not isinstance(doc, list):
            return []
        out: list[str] = []
        for i, item in enumerate(doc):
            out += unknown_fields(item, schema[1], f"{prefix.rstrip('.')}[{i}].")
        return out
    if not isinstance(doc, dict):
        return []
    out = []
    for k, v in doc.items():
        if k not in schema:
            out.append(f"{prefix}{k}")
        else:
            out += unknown_fields(v, schema[k], f"{prefix}{k}.")
    return out


def type_errors(doc: Any, schema: Any, prefix: str = "") -> list[str]:
    """Fields declared as lists (v1beta4 extraArgs, taints, ...) given as a mapping or scalar."""
    if schema is ANY or not isinstance(schema, dict | tuple):
        return []
    if isinstance(schema, tuple):
        if doc is not None and not isinstance(doc, list):
            item = "v1beta4.Arg" if schema[1] is _ARG else "struct"
            return [f"{prefix.rstrip('.')} of type []{item}"]
        out: list[str] = []
        for i, item_doc in enumerate(doc or []):
            out += type_errors(item_doc, schema[1], f"{prefix.rstrip('.')}[{i}].")
        return out
    if not isinstance(doc, dict):
        return []
    out = []
    for k, v in doc.items():
        if k in schema:
            out += type_errors(v, schema[k], f"{prefix}{k}.")
    return out


def gvk_repr(api_version: str, kind: str) -> str:
    group, _, version = api_version.rpartition("/")
    return f'schema.GroupVersionKind{{Group:"{group}", Version:"{version}", Kind:"{kind}"}}'


def load_documents(text: str, kubeadm_minor: int) -> dict[str, dict[str, Any]]:
    """Parse and strictly validate a kubeadm config file; returns {kind: document}."""
    import yaml

    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise ConfigError(f"error converting YAML to JSON: {e}") from e
    out: dict[str, dict[str, Any]] = {}
    for d in docs:
        if not isinstance(d, dict):
            raise ConfigError("couldn't decode the configuration: expected a YAML mapping")
        api_version, kind = str(d.get("apiVersion", "")), str(d.get("kind", ""))
        if not api_version or not kind:
            raise ConfigError(
                f"invalid configuration for GroupVersionKind {gvk_repr(api_version, kind)}: "
                "kind and apiVersion is mandatory information that must be specified"
            )
        group = api_version.rpartition("/")[0]
        schema = SCHEMAS.get((api_version, kind))
        if api_version == "kubeadm.k8s.io/v1beta4" and kubeadm_minor < 31:
            schema = None
        if api_version in ("kubeadm.k8s.io/v1beta1", "kubeadm.k8s.io/v1beta2"):
            raise ConfigError(
                f'your configuration file uses an old API spec: "{api_version}" (kind: "{kind}"). '
                "Please use kubeadm v1.22 instead and run 'kubeadm config migrate --old-config "
                "old.yaml --new-config new.yaml', which will write the new, similar spec using a "
                "newer API version."
            )
        if schema is None:
            where = SCHEME_FILE.get(group, SCHEME_FILE["kubeadm.k8s.io"])
            raise ConfigError(
                f'no kind "{kind}" is registered for version "{api_version}" in scheme "{where}"'
            )
        wrong = type_errors(d, schema)
        if wrong:
            raise ConfigError(
                f"error unmarshaling JSON: while decoding JSON: json: cannot unmarshal object into "
                f"Go struct field {kind}.{wrong[0]}"
            )
        bad = unknown_fields(d, schema)
        if bad:
            detail = ", ".join(f'unknown field "{b}"' for b in bad)
            raise ConfigError(
                f"error unmarshaling configuration {gvk_repr(api_version, kind)}: "
                f"strict decoding error: {detail}"
            )
        if kind in out:
            raise ConfigError(f"duplicate {kind} in the configuration file")
        out[kind] = d
    return out


def kubelet_extra_args(nodereg: dict[str, Any]) -> dict[str, str]:
    raw = nodereg.get("kubeletExtraArgs") or {}
    if isinstance(raw, list):
        return {str(a.get("name")): str(a.get("value")) for a in raw}
    return {str(k): str(v) for k, v in raw.items()}
