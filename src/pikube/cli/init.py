"""``pikube init``."""

from __future__ import annotations

from pathlib import Path

import click

from pikube.cli.common import cluster_option, info
from pikube.distribution import DISTRIBUTIONS, KUBEADM
from pikube.errors import PikubeError

KEY_CANDIDATES = ("id_ed25519", "id_ecdsa", "id_rsa")


def render_cluster_template(name: str, distribution: str, private_key: str) -> str:
    """The commented example cluster file ``pikube init`` writes."""
    from pikube.templating import render

    return render(
        "cluster.yaml.j2",
        name=name,
        distribution=distribution,
        flavour=DISTRIBUTIONS[distribution],
        private_key=private_key,
        public_key=private_key + ".pub",
    )


def find_ssh_key(home: Path) -> str | None:
    for candidate in KEY_CANDIDATES:
        if (home / ".ssh" / candidate).is_file() and (home / ".ssh" / f"{candidate}.pub").is_file():
            return f"~/.ssh/{candidate}"
    return None


@click.command()
@cluster_option
@click.option("--name", default="homelab", show_default=True, help="Cluster name.")
@click.option(
    "--distribution",
    type=click.Choice(list(DISTRIBUTIONS)),
    default=KUBEADM.name,
    show_default=True,
    help="Kubernetes flavour.",
)
@click.option("--force", is_flag=True, help="Overwrite an existing cluster file.")
def init(cluster_file: Path, name: str, distribution: str, force: bool) -> None:
    """Write a commented cluster.yaml to start from."""
    if cluster_file.exists() and not force:
        raise PikubeError(
            f"{cluster_file} already exists",
            where=str(cluster_file.resolve()),
            fix="edit it, choose another --cluster FILE, or pass --force",
        )
    key = find_ssh_key(Path.home())
    text = render_cluster_template(name, distribution, key or "~/.ssh/id_ed25519")
    cluster_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cluster_file.with_name(f".{cluster_file.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(cluster_file)
    info(f"wrote {cluster_file}: edit the nodes and network, then run `pikube validate`")
    if key is None:
        info("no SSH key found in ~/.ssh: create one with `ssh-keygen -t ed25519`")
