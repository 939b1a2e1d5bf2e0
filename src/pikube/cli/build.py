"""``pikube build``: insert cards, power the Pis on, get a Ready cluster (``pikube.build``).

This module parses, asks once, draws the board (or prints lines) and prints the JSON
document; the stages, the state file and the order of things are ``pikube.build``'s.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from pikube.build import UNTIL
from pikube.cli.common import RunFlags, cluster_option, complete_node_name, info, load
from pikube.cli.flash import card_options, image_options
from pikube.cli.up import skip_doctor_option
from pikube.distribution import FLAVOUR_PACKAGES_TAG, PREPARE_TAG, SITE_PLAYBOOK
from pikube.errors import PikubeError
from pikube.probe.boot import DEFAULT_WAIT_BOOT_S

if TYPE_CHECKING:
    from rich.console import Console

    from pikube.build import BuildState, BuildSteps, BuildView, PlayTracker
    from pikube.config.model import Cluster
    from pikube.image.session import FlashTarget
    from pikube.runner.board import StageRow

BUILD_JSON_SCHEMA = 1  # of the --json document (README: "pikube build")


class BuildBoard:
    """The build's view: a live board on a terminal, one line per change otherwise."""

    def __init__(self, cluster: Cluster, state: BuildState, console: Console) -> None:
        from pikube.build import STAGES
        from pikube.runner.board import StageRow

        self.started = time.time()
        self.lock = threading.Lock()  # writers and SSH pollers report from their threads
        self.console = console
        self.live: Any = None
        self.rows: dict[str, StageRow] = {}
        self.last: dict[str, tuple[str, str]] = {}
        self.written: dict[tuple[str, str], int] = {}  # bytes per (node, phase)
        for node in cluster.nodes:
            reached = {s: t for s, t in state.stages(node.name).items() if s in STAGES}
            self.rows[node.name] = StageRow(address=str(node.ip), reached=dict(reached))
            self.started = min([self.started, *reached.values()])

    def stage(self, node: str, stage: str, note: str = "") -> None:
        with self.lock:
            row = self.rows[node]
            if stage and stage not in row.reached:
                row.reached[stage] = time.time()
            row.note = note
            row.failed = note.startswith("not up after") or note.startswith("failed")
        if self.live is None and self.last.get(node) != (stage, note) and stage:
            self.last[node] = (stage, note)
            info(f"{node}: {stage}" + (f" ({note})" if note else ""))

    def say(self, line: str) -> None:
        if self.live is not None:
            self.live.console.print(line, markup=False, highlight=False)
        else:
            info(line)

    def write_progress(self, target: FlashTarget, phase: str, done: int, total: int) -> None:
        """Writing a card: its percentage in the node's note (the board has no bars)."""
        with self.lock:
            key = (target.name, phase)
            self.written[key] = self.written.get(key, 0) + done
            percent = min(100, self.written[key] * 100 // total) if total else 0
            self.rows[target.name].note = f"{phase} {percent}%"

    def frame(self) -> Any:
        from pikube.build import STAGE_HEADERS, STAGES
        from pikube.runner.board import render_stage_board

        with self.lock:
            return render_stage_board(
                "pikube build", STAGES, STAGE_HEADERS, self.rows, self.started, time.time()
            )

    @contextmanager
    def playbook_progress(self, tracker: PlayTracker) -> Iterator[tuple[Any, Any]]:
        """``(on_event, on_output)`` for the site playbook: ``tracker`` moves the stages."""
        from pikube.cli.board import show_event
        from pikube.runner.board import notable_line

        def on_event(event: dict[str, Any]) -> None:
            tracker.apply(event)
            if self.live is None:
                show_event(event)
            else:
                line = notable_line(event)
                if line is not None:
                    self.say(line)

        yield on_event, self.say


@contextmanager
def build_view(cluster: Cluster, state: BuildState) -> Iterator[BuildBoard]:
    from pikube.cli.board import stderr_console, wants_board

    console = stderr_console()
    board = BuildBoard(cluster, state, console)
    if not wants_board(console):
        yield board
        return
    from rich.live import Live

    with Live(
        console=console,
        get_renderable=board.frame,
        refresh_per_second=4,
        redirect_stdout=False,  # stdout carries data (--json), never the board
        redirect_stderr=False,
    ) as live:
        board.live = live
        try:
            yield board
        finally:
            board.live = None


@click.command()
@cluster_option
@image_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask before overwriting inserted cards.")
@click.option(
    "--reflash",
    multiple=True,
    metavar="NODE",
    shell_complete=complete_node_name,
    help="Ask for NODE's card and write it again, although it was written (repeatable).",
)
@card_options
@click.option(
    "--boot-timeout",
    type=click.FloatRange(min=1),
    default=DEFAULT_WAIT_BOOT_S,
    show_default=True,
    metavar="SECONDS",
    help="How long a Pi may take to answer on SSH after its card is written.",
)
@click.option("--cards-only", is_flag=True, help="Write the cards, then stop.")
@click.option(
    "--until",
    type=click.Choice(list(UNTIL)),
    help="Stop once every Pi has booted (answers SSH with its pinned host key) or is "
    "prepared (node preparation done, nothing of Kubernetes installed yet); run `pikube "
    "build` again to go on.",
)
@skip_doctor_option
@click.option("--json", "as_json", is_flag=True, help="Print the build's result as JSON.")
@click.option("--dev-root", type=click.Path(path_type=Path), default="/dev", hidden=True)
def build(
    cluster_file: Path,
    image_ref: str | None,
    catalog_file: Path | None,
    cache_dir: Path | None,
    yes: bool,
    reflash: tuple[str, ...],
    allow_non_removable: bool,
    no_verify: bool,
    boot_timeout: float,
    cards_only: bool,
    until: str | None,
    skip_doctor: bool,
    as_json: bool,
    sys_root: Path,
    proc_root: Path,
    dev_root: Path,
) -> None:
    """From blank SD cards to a Ready cluster: for each node not yet in the cluster, insert
    a card (noticed by itself; several readers write several at once), put it in its Pi and
    power it on; pikube waits for each Pi's first boot (its pinned host key), runs `up`, and
    ends when every node is Ready.

    Interrupted, it resumes where it stopped; cards already written are not asked for again
    (--reflash NODE to redo one). Exit 6 names the Pis that never booted (the others are
    provisioned), with the likely causes.
    """
    from pikube.build import BuildInterrupted, BuildPlan, BuildState, run_build, summary
    from pikube.cli.up import kubeconfig_path
    from pikube.image.cards import FlashOptions, flash_session
    from pikube.image.flash import check_tools

    with flash_session():
        check_tools()  # a missing tool found after writing would leave half a card
        cluster = load(cluster_file)
        unknown = [n for n in reflash if n not in {node.name for node in cluster.nodes}]
        if unknown:
            listing = ", ".join(n.name for n in cluster.nodes)
            raise click.UsageError(
                f"no node {', '.join(map(repr, unknown))} in {cluster_file} (nodes: {listing})",
            )
        state = BuildState.load(Path(str(cluster.state_dir)))
        for name in reflash:
            state.forget_card(name)
        plan = BuildPlan(
            options=FlashOptions(
                verify=not no_verify,
                parallel=True,
                allow_non_removable=allow_non_removable,
                sys_root=sys_root,
                proc_root=proc_root,
            ),
            dev_root=dev_root,
            boot_timeout=boot_timeout,
            cards_only=cards_only,
            reflash=reflash,
            until=UNTIL[until] if until else None,
        )
        steps = build_steps(cluster, state, image_ref, catalog_file, cache_dir, yes, skip_doctor)
        error: PikubeError | None = None
        try:
            run_build(cluster, state, plan, steps)
            if cards_only:
                info("cards written: put each in its Pi, power them on, run `pikube build` again")
            elif until:
                info(f"every node is {until}: run `pikube build` again to go on")
            else:
                kubeconfig = kubeconfig_path(cluster)
                info(f"every node is Ready: kubectl --kubeconfig {kubeconfig} get nodes")
        except PikubeError as err:
            error = err
            raise
        except KeyboardInterrupt:
            error = BuildInterrupted(
                "interrupted", fix="run `pikube build` again: it resumes where it stopped"
            )
            raise error from None
        finally:
            if as_json:
                document = {
                    "schema": BUILD_JSON_SCHEMA,
                    "command": "build",
                    "ok": error is None,
                    "exit_code": 0 if error is None else error.exit_code,
                    "error": None if error is None else {"message": error.what, "fix": error.fix},
                    "nodes": summary(cluster, state),
                }
                click.echo(json.dumps(document, indent=2, sort_keys=True))


def build_steps(
    cluster: Cluster,
    state: BuildState,
    image_ref: str | None,
    catalog_file: Path | None,
    cache_dir: Path | None,
    yes: bool,
    skip_doctor: bool,
) -> BuildSteps:
    """What ``pikube.build.run_build`` asks of the CLI: image, question, view, playbook."""
    from pikube.build import BuildSteps
    from pikube.cli.flash import confirm_overwrite, resolve_image
    from pikube.cli.up import preflight, run_site

    def confirm() -> None:
        if not yes:
            confirm_overwrite(
                "every card inserted for these nodes",
                where="pikube build",
                fix="answer y to let the build write the cards you insert (or pass --yes)",
            )

    def provision(limit: str, tracker: PlayTracker, view: BuildView, prepare_only: bool) -> None:
        assert isinstance(view, BuildBoard)  # noqa: S101 - open_view made it
        # --until prepared: the play that prepares nodes, without the flavour's packages.
        only = RunFlags(tags=PREPARE_TAG, skip_tags=FLAVOUR_PACKAGES_TAG)
        run_site(
            cluster,
            command="build",
            playbook=SITE_PLAYBOOK,
            flags=only if prepare_only else RunFlags(),
            limit=limit,
            progress=lambda: view.playbook_progress(tracker),
        )

    return BuildSteps(
        resolve_image=lambda: resolve_image(image_ref, cluster, catalog_file, cache_dir),
        announce=info,
        confirm=confirm,
        open_view=lambda: build_view(cluster, state),
        preflight=None if skip_doctor else (lambda limit: preflight(cluster, limit)),
        provision=provision,
    )
