"""The ``pikube`` entry point: a lazily loaded command group and the one error wrapper."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from pikube import __version__

# name -> "module:attribute"; modules are imported only when their command runs, so that
# `pikube --help` and shell completion stay fast (no Ansible, pydantic or Jinja2 import).
COMMANDS: dict[str, str] = {
    "init": "pikube.cli.init:init",
    "validate": "pikube.cli.validate:validate",
    "inventory": "pikube.cli.inventory:inventory",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        command: click.Command = getattr(importlib.import_module(module_name), attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help comes from the table below, so listing commands imports nothing.
        rows = [(name, HELP.get(name, "")) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


HELP: dict[str, str] = {
    "init": "Write a commented cluster.yaml to start from.",
    "validate": "Check cluster.yaml; every problem with its line and a fix.",
    "inventory": "Render the Ansible inventory and group_vars.",
}


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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
def cli(debug: bool) -> None:
    """pikube: turn a stack of Raspberry Pis into a Kubernetes cluster, and reset it again.

    Exit codes: 0 ok, 1 failure, 2 usage, 3 invalid configuration, 4 flash refused,
    5 verification failed, 6 hosts unreachable, 130 interrupted.
    """


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn every pikube error into `Error: ...` and its exit code."""
    from pikube.errors import EXIT_INTERRUPTED, EXIT_USAGE, PikubeError

    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("PIKUBE_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=args, prog_name="pikube", standalone_mode=False)
    except PikubeError as err:
        if debug:
            raise
        click.echo(f"Error: {err.render()}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code if err.exit_code else EXIT_USAGE)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("\nInterrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    sys.exit(0)


def run_command(*args: Any) -> None:  # pragma: no cover - convenience for python -m
    main(list(args))
