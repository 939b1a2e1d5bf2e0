"""Options and helpers shared by commands."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

from pikube.errors import PikubeError

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from pikube.config.model import Cluster
    from pikube.runner.events import RunResult

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CLUSTER_FILE = "cluster.yaml"


def _cluster_from_group(ctx: click.Context, _param: click.Parameter, value: Path | None) -> Path:
    """A command's own --cluster wins; else `pikube --cluster FILE` (or $PIKUBE_CLUSTER)."""
    if value is not None:
        return value
    root = ctx.find_root().params.get("cluster")
    return Path(root) if root else Path(DEFAULT_CLUSTER_FILE)


def cluster_option(func: F) -> F:
    """``--cluster FILE`` on every command (also before it: ``pikube --cluster FILE up``).

    Default ./cluster.yaml, or $PIKUBE_CLUSTER.
    """
    return click.option(
        "--cluster",
        "-c",
        "cluster_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        callback=_cluster_from_group,
        help=f"The cluster file [default: {DEFAULT_CLUSTER_FILE}, or $PIKUBE_CLUSTER].",
    )(func)


def load(cluster_file: Path) -> Cluster:
    from pikube.config import load_cluster

    return load_cluster(cluster_file)


def info(message: str) -> None:
    """Progress and status for people: stderr, so stdout stays data."""
    click.echo(message, err=True)


# --- commands that run a playbook ------------------------------------------------------------

JSON_SCHEMA = 1  # of the --json document of up and the day-2 commands (README: "--json")
OUTCOME = "pikube.run_outcome"  # click context meta key: what run_site recorded


@dataclass(frozen=True)
class RunFlags:
    """The options every playbook command shares (declared once, by :func:`run_options`)."""

    check: bool = False
    diff: bool = False
    tags: str | None = None
    verbose: int = 0
    limit: str | None = None
    json: bool = False
    skip_tags: str | None = None  # not an option of its own: `build --until prepared` sets it


@dataclass(frozen=True)
class RunOutcome:
    """What one command's playbook run produced, for the --json document."""

    command: str
    result: RunResult
    kubeconfig: Path | None = None


def record_outcome(outcome: RunOutcome) -> None:
    """Keep the run's outcome for the --json document written when the command ends."""
    click.get_current_context().meta[OUTCOME] = outcome


def run_document(flags: RunFlags, outcome: RunOutcome, error: PikubeError | None) -> dict[str, Any]:
    """The --json document: per-host counts, failures with their fix, where things are."""
    from pikube.runner.events import COLUMNS

    result = outcome.result
    fix = (error.fix or "") if error is not None else ""
    return {
        "schema": JSON_SCHEMA,
        "command": outcome.command,
        "ok": error is None,
        "exit_code": error.exit_code if error is not None else 0,
        "check": flags.check,
        "run_dir": result.run_dir,
        "kubeconfig": str(outcome.kubeconfig) if outcome.kubeconfig else None,
        "hosts": {
            host: {c: getattr(stats, c) for c in COLUMNS}
            for host, stats in sorted(result.hosts.items())
        },
        "failures": [
            {
                "host": f.host,
                "task": f.task,
                "status": f.status,
                "message": f.msg,
                "fix": fix,
            }
            for _, f in sorted(result.failures.items())
        ],
        "error": None if error is None else {"message": error.what, "fix": fix},
    }


def print_run_document(flags: RunFlags, error: PikubeError | None) -> None:
    """The one JSON document on stdout, when a playbook ran (else stdout stays empty)."""
    outcome = click.get_current_context().meta.get(OUTCOME)
    if outcome is not None:
        click.echo(json.dumps(run_document(flags, outcome, error), indent=2, sort_keys=True))


def run_options(*, limit: bool = True) -> Callable[[F], F]:
    """``--check --diff --tags -v [--limit] --json`` for a command that runs a playbook.

    The command receives them as one ``flags: RunFlags`` argument. With ``--json`` the run's
    result is printed as one JSON document on stdout when the command ends, also when it
    fails (the exit code stays the same).
    """
    options = [
        click.option(
            "--check",
            is_flag=True,
            help="Dry run: report what would change, change nothing (no confirmation asked).",
        ),
        click.option("--diff", is_flag=True, help="Show file changes."),
        click.option(
            "--tags", "-t", metavar="TAGS", help="Only these parts (prepare, control_plane, ...)."
        ),
        click.option("-v", "--verbose", count=True, help="More Ansible output (-vv, -vvv)."),
    ]
    if limit:
        options.append(
            click.option(
                "--limit",
                "-l",
                metavar="NODES",
                help="Only these nodes (comma-separated).",
                shell_complete=complete_node_list,
            )
        )
    options.append(
        click.option(
            "--json",
            "json_output",
            is_flag=True,
            help="Print the run's result as JSON on stdout (schema in the README).",
        )
    )

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def command(
            *args: Any,
            check: bool,
            diff: bool,
            tags: str | None,
            verbose: int,
            json_output: bool,
            limit: str | None = None,
            **kwargs: Any,
        ) -> Any:
            flags = RunFlags(check, diff, tags, verbose, limit, json_output)
            try:
                returned = func(*args, flags=flags, **kwargs)
            except PikubeError as err:
                if flags.json:
                    print_run_document(flags, err)
                raise
            if flags.json:
                print_run_document(flags, None)
            return returned

        for option in reversed(options):
            command = option(command)
        return cast(F, command)

    return decorate


# --- shell completion ------------------------------------------------------------------------


def cluster_file_for_completion(ctx: click.Context) -> Path:
    """The cluster file a command line names so far: its --cluster, pikube's, or the default."""
    own = ctx.params.get("cluster_file")
    if own:
        return Path(own)
    root = ctx.find_root().params.get("cluster")  # also $PIKUBE_CLUSTER
    return Path(root) if root else Path(DEFAULT_CLUSTER_FILE)


def node_names_for_completion(ctx: click.Context) -> list[str]:
    """Node names in the cluster file; none when it is missing or unreadable (never raises).

    The file is only parsed as YAML, not validated, so completion works while it is being
    edited; names that are not valid hostnames are left out (they never reach the shell).
    """
    try:
        import yaml

        from pikube.config.model import HOSTNAME_RE

        path = cluster_file_for_completion(ctx)
        with path.open(encoding="utf-8") as stream:
            data = yaml.safe_load(stream)
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, list):
            return []
        names = [n.get("name") for n in nodes if isinstance(n, dict)]
        return [n for n in names if isinstance(n, str) and HOSTNAME_RE.fullmatch(n)]
    except Exception:  # completion must never fail the shell: no names instead
        return []


def complete_node_name(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Shell completion for a NODE argument (``pikube flash pi-<TAB>``)."""
    from click.shell_completion import CompletionItem

    value = ctx.params.get(param.name or "")
    typed = value if isinstance(value, tuple) else ()  # NODE... arguments: each name once
    return [
        CompletionItem(n)
        for n in node_names_for_completion(ctx)
        if n.startswith(incomplete) and n not in typed
    ]


def complete_node_list(
    ctx: click.Context, _param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Completion for ``--limit a,b,<TAB>``: the last name, after the ones already typed."""
    from click.shell_completion import CompletionItem

    done, _, last = incomplete.rpartition(",")
    typed = set(done.split(",")) if done else set()
    prefix = done + "," if done else ""
    return [
        CompletionItem(prefix + n)
        for n in node_names_for_completion(ctx)
        if n.startswith(last) and n not in typed
    ]
