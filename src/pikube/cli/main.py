"""The ``pikube`` entry point: a lazily loaded command group and the one error wrapper."""

from __future__ import annotations

import importlib
import traceback
from typing import Any

import click

from pikube import __version__

# name -> ("module:attribute", short help). Modules are imported only when their command
# runs, so `pikube --help` and shell completion stay fast (no Ansible, pydantic or Jinja2).
COMMANDS: dict[str, tuple[str, str]] = {
    "init": ("pikube.cli.init:init", "Write a commented cluster.yaml to start from."),
    "validate": (
        "pikube.cli.validate:validate",
        "Check cluster.yaml; every problem with its line and a fix.",
    ),
    "inventory": ("pikube.cli.inventory:inventory", "Render the Ansible inventory and group_vars."),
    "vagrant": (
        "pikube.cli.vagrant:vagrant",
        "Rehearse on Vagrant VMs: host keys, inventory, machine plan.",
    ),
    "up": ("pikube.cli.up:up", "Provision the whole cluster (site playbook), then verify."),
    "status": (
        "pikube.cli.status:status",
        "Nodes reachable, OS, versions, Kubernetes Ready (--json).",
    ),
    "doctor": (
        "pikube.cli.status:doctor",
        "Find what breaks Kubernetes on Pis, each with its fix.",
    ),
    "image": (
        "pikube.cli.image:image",
        "The OS image catalog: list, fetch (cached, resumed), verify.",
    ),
    "flash": (
        "pikube.cli.flash:flash",
        "Write the image and each node's first-boot config to SD cards.",
    ),
    "build": (
        "pikube.cli.build:build",
        "Insert cards, power the Pis on: written, booted, provisioned, Ready.",
    ),
    "add-node": ("pikube.cli.day2:add_node", "Prepare and join a node added to cluster.yaml."),
    "remove-node": ("pikube.cli.day2:remove_node", "Drain, delete and reset one node."),
    "reset": ("pikube.cli.day2:reset", "Tear the cluster down to freshly prepared nodes."),
    "upgrade": ("pikube.cli.day2:upgrade", "Upgrade Kubernetes one minor, node by node."),
    "backup": (
        "pikube.cli.backup:backup",
        "Snapshot the cluster state to backups/ (--keep N, --schedule daily).",
    ),
    "restore": ("pikube.cli.backup:restore", "Bring the cluster back to a backup (typed confirm)."),
}

EXIT_CODES_HELP = (
    "Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid configuration, 4 flash refused, "
    "5 verification failed, 6 hosts unreachable, 7 control-plane quorum lost or at risk, "
    "130 interrupted."
)


class CommandError(click.ClickException):
    """A pikube error on its way out: `Error: what, where` + fix on stderr, its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file: Any = None) -> None:
        click.echo(f"Error: {self.message}", err=True)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, attr = entry[0].split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table, so listing commands imports nothing.
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context) -> Any:
        from pikube.errors import EXIT_INTERRUPTED, PikubeError

        try:
            return super().invoke(ctx)
        except PikubeError as err:
            if ctx.params.get("debug"):
                traceback.print_exc()
            raise CommandError(err.render(), err.exit_code) from err
        except KeyboardInterrupt:
            raise CommandError("interrupted", EXIT_INTERRUPTED) from None
        except (click.ClickException, click.exceptions.Exit):
            raise  # click.exceptions.Exit (e.g. from --help) is a RuntimeError: not an error
        except (OSError, RuntimeError, ValueError) as err:
            # An error pikube did not anticipate: still no traceback unless asked for.
            if ctx.params.get("debug"):
                raise
            raise CommandError(
                f"{type(err).__name__}: {err}\n  fix: rerun with --debug for the traceback "
                "and report it if the message does not tell you what to change",
                1,
            ) from err


def _ansible_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ansible-core")
    except PackageNotFoundError:
        return "not installed"


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(f"pikube {__version__}\nansible-core {_ansible_version()}")
    ctx.exit(0)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show pikube's and ansible-core's versions.",
)
@click.option(
    "--debug",
    is_flag=True,
    envvar="PIKUBE_DEBUG",
    help="Show tracebacks for errors (also PIKUBE_DEBUG=1).",
)
@click.option(
    "--cluster",
    "-c",
    metavar="FILE",
    envvar="PIKUBE_CLUSTER",
    show_envvar=True,
    help="The cluster file for the command [default: cluster.yaml].",
)
def cli(debug: bool, cluster: str | None) -> None:
    """pikube: turn a stack of Raspberry Pis into a Kubernetes cluster, and reset it again."""


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="pikube")
