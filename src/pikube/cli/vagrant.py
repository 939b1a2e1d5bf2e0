"""``pikube vagrant``: what the top-level Vagrantfile builds its rehearsal VMs from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from pikube.cli.common import cluster_option, info, load


@click.command()
@cluster_option
@click.option(
    "--plan-only",
    is_flag=True,
    help="Print the plan without creating host keys or writing the inventory.",
)
def vagrant(cluster_file: Path, plan_only: bool) -> None:
    """Prepare a rehearsal on Vagrant VMs and print the machine plan (JSON).

    The Vagrantfile runs this on every `vagrant` command. It creates each node's SSH host
    key (once) under the state dir, pins the keys in the cluster's known_hosts, renders the
    inventory the VMs are provisioned with (the Pis' inventory plus pikube_node_is_vm), and
    prints one machine per node: name, address, group, memory, CPUs, host key.
    """
    from pikube.hostkeys import ensure_host_keys, host_key_dir, node_known_hosts, pin_known_hosts
    from pikube.inventory import write_files
    from pikube.inventory.vagrant import render_vagrant_inventory_files, render_vagrant_plan

    cluster = load(cluster_file)
    plan = render_vagrant_plan(cluster, file=str(cluster_file))
    if not plan_only:
        state_dir = Path(str(cluster.state_dir))
        pins = []
        for machine in plan["machines"]:
            folder = host_key_dir(state_dir, machine["name"])
            created = not folder.is_dir()
            keys = ensure_host_keys(state_dir, machine["name"])
            if created:
                info(f"created SSH host keys for {machine['name']} in {folder}")
            pins += node_known_hosts(machine["name"], machine["ip"], keys)
        pinned = pin_known_hosts(Path(plan["known_hosts"]), pins)
        for name in dict.fromkeys(host.names[0] for host in pinned):
            info(f"pinned host keys of {name} in {plan['known_hosts']}")
        write_files(render_vagrant_inventory_files(cluster), Path(plan["inventory"]))
    # Vagrant's Ansible provisioner runs `ansible` and `ansible-playbook` from PATH: point
    # it at the ones installed with pikube (a venv or pipx install need not be on PATH).
    bin_dir = Path(sys.executable).parent
    plan["ansible_bin_dir"] = str(bin_dir) if (bin_dir / "ansible-playbook").is_file() else None
    click.echo(json.dumps(plan, indent=2, sort_keys=True))
