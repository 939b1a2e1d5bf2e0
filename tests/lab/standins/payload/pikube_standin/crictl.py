"""crictl stand-in (cri-tools): version and empty listings.

Contract: https://kubernetes.io/docs/tasks/debug/debug-cluster/crictl/ . The lab
runs no containers for Kubernetes, so every listing is empty.
"""

from __future__ import annotations

import sys

from . import common


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    version = common.installed_version("cri-tools")
    words = [a for a in args if not a.startswith("-")]
    if "--version" in args or "-v" in args:
        print(f"crictl version v{version}")
        return 0
    cmd = words[0] if words else ""
    quiet = "-q" in args or "--quiet" in args
    if cmd == "version":
        print(
            "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  "
            "unknown\nRuntimeApiVersion:  v1"
        )
    elif cmd in ("ps", "pods", "images", "img"):
        if not quiet:
            print(
                {
                    "ps": "CONTAINER           IMAGE               CREATED             STATE      "
                    "         NAME"
                    "                ATTEMPT             POD ID              POD",
                    "pods": "POD ID              CREATED             STATE               NAME"
                    "                NAMESPACE           ATTEMPT             RUNTIME",
                }.get(cmd, "IMAGE               TAG                 IMAGE ID            SIZE")
            )
    elif cmd in ("rm", "rmp", "stopp", "stop", "rmi"):
        return 0
    elif cmd == "info":
        print(
            '{"status": {"conditions": [{"type": "RuntimeReady", "status": true}, '
            '{"type": "NetworkReady", "status": true}]}}'
        )
    else:
        print(f'crictl stand-in: command "{cmd}" is not modelled', file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
