"""``pikube build``: from a box of blank cards to a Ready cluster, resumable.

The build walks the nodes of the cluster file that are not yet part of the cluster through
six stages, recorded with their times in ``STATE/build.json`` (so an interrupted build
resumes where it stopped, and cards already written are not asked for again):

1. **card written**: a card inserted into any reader is noticed (``pikube.image.detect``),
   checked as ``pikube flash --device`` checks it, and written for the next node without a
   card (``pikube.image.cards``); cards inserted together are written together;
2. **booting**: the card is in the Pi, which is powered on;
3. **SSH up**: the node answers with the host key pinned when its card was written
   (``pikube.probe.boot``); a node that does not within the deadline is reported with the
   likely causes while the others go on;
4. **prepared**, 5. **joined**: the site playbook (run by the caller, ``provision``) got the
   node through node preparation and the bootstrap/join plays;
6. **Ready**: Kubernetes reports the node Ready (``pikube.probe.status``).

This module never prints: it reports through :class:`BuildView` and raises typed errors.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pikube.errors import EXIT_INTERRUPTED, ConfigError, HostsUnreachable, PikubeError, Problem
from pikube.invoker import hand_over

if TYPE_CHECKING:
    from pikube.config.model import Cluster, Node
    from pikube.image.cards import FlashOptions, ImageSource
    from pikube.image.detect import CardWatcher
    from pikube.image.session import FlashTarget

CARD_WRITTEN = "card written"
BOOTING = "booting"
SSH_UP = "SSH up"
PREPARED = "prepared"
JOINED = "joined"
READY = "Ready"
STAGES = (CARD_WRITTEN, BOOTING, SSH_UP, PREPARED, JOINED, READY)
STAGE_HEADERS = ("CARD", "BOOT", "SSH", "PREP", "JOIN", "READY")  # the board's columns
STATE_FILE = "build.json"
STATE_SCHEMA = 1
# Play names of the site playbooks -> the stage a host has reached when the play is over.
# A host finishing the play that prepares nodes is prepared; one finishing the bootstrap or
# join play is joined. Plays not listed here do not move a node.
PLAY_STAGES = (("prepare", PREPARED), ("bootstrap", JOINED), ("join", JOINED))
# Where `pikube build --until WHAT` stops, as the stage the nodes have then reached: every
# Pi booted (SSH up with its pinned key), or every node prepared (node preparation only,
# nothing of Kubernetes installed). Run again without --until, the build goes on from there.
UNTIL = {"booted": SSH_UP, "prepared": PREPARED}
POLL_S = 0.5  # between two looks at sysfs: a card is noticed within half a second
SETTLE_S = 2.0  # after a card appears, more may follow (several readers): wait this long


class BuildInterrupted(PikubeError):
    """Ctrl-C, SIGTERM or SIGHUP: what was recorded stays, the next run resumes."""

    exit_code = EXIT_INTERRUPTED


class BuildView(Protocol):
    """How a build shows itself (the CLI draws a board or prints lines)."""

    def stage(self, node: str, stage: str, note: str = "") -> None: ...

    def say(self, line: str) -> None: ...

    def write_progress(self, target: FlashTarget, phase: str, done: int, total: int) -> None: ...


# --- the state file ----------------------------------------------------------------------


@dataclass
class BuildState:
    """Per node, the stages reached (stage -> Unix time) and the card it was written to."""

    path: Path
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, state_dir: Path) -> BuildState:
        path = state_dir / STATE_FILE
        if not path.exists():
            return cls(path)
        try:
            data = json.loads(path.read_text())
            nodes = data["nodes"]
            if data.get("schema") != STATE_SCHEMA or not isinstance(nodes, dict):
                raise ValueError("unknown layout")
            for entry in nodes.values():
                if not isinstance(entry.get("stages"), dict):
                    raise ValueError("a node without stages")
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ConfigError(
                [
                    Problem(
                        "",
                        f"cannot read the build state: {err}",
                        fix=f"remove {path} to start the build from the first card again",
                        file=str(path),
                    )
                ]
            ) from None
        return cls(path, nodes)

    def save(self) -> None:
        """Atomically: an interrupted build leaves the old state or the new one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"schema": STATE_SCHEMA, "nodes": self.nodes}, indent=2, sort_keys=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".build.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
            os.replace(tmp, self.path)
            hand_over(self.path)  # under sudo, the state dir stays the user's
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def stages(self, node: str) -> dict[str, float]:
        stages: dict[str, float] = self.nodes.get(node, {}).get("stages", {})
        return stages

    def reached(self, node: str, stage: str) -> bool:
        return stage in self.stages(node)

    def reach(self, node: str, stage: str, when: float | None = None, **facts: str) -> None:
        entry = self.nodes.setdefault(node, {"stages": {}})
        entry["stages"][stage] = time.time() if when is None else when
        entry.update(facts)
        self.save()

    def forget_card(self, node: str) -> None:
        """``--reflash NODE``: its card is asked for (and its stages run) again."""
        if self.nodes.pop(node, None) is not None:
            self.save()

    def latest(self, node: str) -> str:
        """The furthest stage the node has reached ("" before its card is written)."""
        reached = [s for s in STAGES if s in self.stages(node)]
        return reached[-1] if reached else ""


# --- stages from the playbook's events ---------------------------------------------------


def stage_after_play(play: str) -> str | None:
    """The stage a host reaches by finishing the play named ``play`` (see PLAY_STAGES)."""
    lowered = play.lower()
    for word, stage in PLAY_STAGES:
        if word in lowered:
            return stage
    return None


@dataclass
class PlayTracker:
    """Turns the runner's events into stages: a host that got through a play without
    failing (or being unreachable) has reached that play's stage when the next play starts."""

    on_stage: Callable[[str, str], None]
    play: str = ""
    hosts: set[str] = field(default_factory=set)  # hosts seen in the current play
    stopped: set[str] = field(default_factory=set)  # failed or unreachable: never move

    def apply(self, event: Mapping[str, Any]) -> None:
        from pikube.runner.events import EVENT_MARKER, stops_host

        kind = event.get(EVENT_MARKER)
        if kind == "play_start":
            self._finish_play()
            self.play, self.hosts = str(event.get("play", "")), set()
        elif kind == "runner":
            host = str(event.get("host", ""))
            if host:
                self.hosts.add(host)
                if stops_host(event):
                    self.stopped.add(host)
        elif kind == "stats":
            self._finish_play()
            self.play = ""

    def _finish_play(self) -> None:
        stage = stage_after_play(self.play)
        if stage is None:
            return
        for host in sorted(self.hosts - self.stopped):
            self.on_stage(host, stage)


def stage_recorder(
    cluster: Cluster, state: BuildState, view: BuildView
) -> Callable[[str, str], None]:
    """``on_stage`` for a :class:`PlayTracker`: record the stage (for the next run) and
    show it; hosts that are not nodes of the cluster (localhost) are ignored."""
    names = {n.name for n in cluster.nodes}

    def reached(node: str, stage: str) -> None:
        if node not in names:
            return
        if not state.reached(node, stage):
            state.reach(node, stage)
        view.stage(node, stage)

    return reached


# --- the build ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildPlan:
    """What the user asked for (flags, once)."""

    options: FlashOptions
    dev_root: Path = Path("/dev")
    boot_timeout: float = 600.0
    cards_only: bool = False
    reflash: tuple[str, ...] = ()
    until: str | None = None  # a stage of UNTIL's: stop once every node has reached it


@dataclass(frozen=True)
class BuildSteps:
    """What the build asks of its caller: the image (fetched with a progress bar), the one
    question before cards are overwritten, the view, doctor's preflight and the playbook."""

    resolve_image: Callable[[], ImageSource]
    announce: Callable[[str], None]  # a line before the view opens
    confirm: Callable[[], None]  # raises FlashRefused unless the user agreed
    open_view: Callable[[], AbstractContextManager[BuildView]]
    preflight: Callable[[str], None] | None  # limit -> raises when a node would fail
    # limit, stages, view, and whether to stop after node preparation (--until prepared)
    provision: Callable[[str, PlayTracker, BuildView, bool], None]


def nodes_needing_cards(cluster: Cluster, state: BuildState, members: Iterable[str]) -> list[Node]:
    """The nodes not yet part of the cluster whose card has not been written, in file order."""
    joined = set(members)
    return [
        n for n in cluster.nodes if n.name not in joined and not state.reached(n.name, CARD_WRITTEN)
    ]


def write_inserted_cards(
    cluster: Cluster,
    state: BuildState,
    nodes: list[Node],
    image: ImageSource,
    options: FlashOptions,
    watcher: CardWatcher,
    view: BuildView,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Wait for a card per node, write it, record it; returns once every node has one.

    Each card inserted is given to the next node still without one; cards inserted within
    ``SETTLE_S`` of each other are written at the same time. A card that fails to write is
    asked for again (the same card, re-inserted, or another).
    """
    from pikube.image.cards import write_cards
    from pikube.image.session import FlashTarget

    waiting = list(nodes)
    while waiting:
        view.say(
            f"insert the card for {waiting[0].name} ({waiting[0].ip})"
            + (f", or up to {len(waiting)} cards in several readers" if len(waiting) > 1 else "")
        )
        batch: list[FlashTarget] = []
        settle_until: float | None = None
        while len(batch) < len(waiting) and (
            settle_until is None or time.monotonic() < settle_until
        ):
            for found in watcher.poll():
                if found.refused is not None:
                    view.say(f"not using {found.path}: {found.refused.render()}")
                    continue
                if len(batch) >= len(waiting) or found.device is None:
                    continue  # more cards than nodes: left alone
                node = waiting[len(batch)]
                target = FlashTarget(name=node.name, path=found.path, is_device=True)
                target.description = found.device.describe()
                view.say(f"{node.name}: card {target.description}")
                batch.append(target)
                settle_until = time.monotonic() + SETTLE_S
            sleep(POLL_S)
        result = write_cards(
            cluster, batch, image, options, progress=view.write_progress, on_start=lambda t: None
        )
        for target in result.complete:
            state.reach(target.name, CARD_WRITTEN, card=target.description)
            node = cluster.node(target.name)
            view.stage(target.name, CARD_WRITTEN)
            view.say(
                f"card for {target.name} written: label it {target.name}, put it in the Pi "
                f"that will be {target.name} ({node.ip}), connect the network and power it on"
            )
        if result.error is not None:
            for note in result.notes:
                view.say(note)
            if result.error.exit_code == EXIT_INTERRUPTED:
                raise result.error
            view.say(f"writing failed: {result.error.render()}; insert a card for it again")
            for target in batch:
                if target.report is None:
                    watcher.forget(Path(target.path).name)
        done = {t.name for t in result.complete}
        waiting = [n for n in waiting if n.name not in done]


def wait_for_boots(
    cluster: Cluster,
    state: BuildState,
    nodes: list[Node],
    timeout: float,
    view: BuildView,
) -> dict[str, str]:
    """Wait for each node's first boot (its pinned host key on SSH); the ones that never
    came up, with the reason last seen. Others go on while one is still waiting."""
    from pikube.probe.boot import wait_for_ssh
    from pikube.probe.status import ssh_target

    for node in nodes:
        if not state.reached(node.name, BOOTING):
            state.reach(node.name, BOOTING)
        view.stage(node.name, BOOTING)
    down: dict[str, str] = {}
    targets = {node.name: ssh_target(cluster, node) for node in nodes}
    for event in wait_for_ssh(targets, timeout):
        if event.state == "up":
            if not state.reached(event.node, SSH_UP):
                state.reach(event.node, SSH_UP)
            view.stage(event.node, SSH_UP)
        elif event.state == "waiting":
            view.stage(event.node, BOOTING, event.reason)
        else:
            down[event.node] = event.reason
            view.stage(event.node, BOOTING, f"not up after {timeout:.0f} s: {event.reason}")
    return down


def never_booted(down: Mapping[str, str], timeout: float) -> HostsUnreachable:
    from pikube.probe.boot import NEVER_UP_CAUSES

    listing = ", ".join(f"{name} ({reason})" for name, reason in sorted(down.items()))
    return HostsUnreachable(
        f"{len(down)} node(s) did not boot within {timeout:.0f} s: {listing}",
        fix="most likely one of: "
        + "; ".join(NEVER_UP_CAUSES)
        + ". Then run `pikube build` again: it resumes with the nodes that are missing",
    )


def registered_nodes(cluster: Cluster) -> set[str]:
    """The nodes Kubernetes already knows (none when the control plane does not answer)."""
    from pikube.probe.ssh import SshConnections
    from pikube.probe.status import kubernetes_view

    with SshConnections() as connections:
        _, _, kube_nodes = kubernetes_view(cluster, 15.0, connections)
    return set(kube_nodes)


def record_ready(
    cluster: Cluster, state: BuildState, view: BuildView, down: Iterable[str] = ()
) -> list[str]:
    """Ask Kubernetes which nodes are Ready; record them. Returns the ones that are not.

    A node in ``down`` (never booted from its new card) is left out: Kubernetes may still
    call it Ready from before, for a while."""
    from pikube.probe.ssh import SshConnections
    from pikube.probe.status import kubernetes_view

    with SshConnections() as connections:
        _, _, kube_nodes = kubernetes_view(cluster, 15.0, connections)
    missing = []
    for node in (n for n in cluster.nodes if n.name not in set(down)):
        kube = kube_nodes.get(node.name)
        if kube is not None and kube.ready:
            if not state.reached(node.name, READY):
                state.reach(node.name, READY)
            view.stage(node.name, READY)
        else:
            missing.append(node.name)
    return missing


def summary(cluster: Cluster, state: BuildState) -> dict[str, Any]:
    """The --json document's nodes: furthest stage and when each stage was reached."""
    return {
        node.name: {
            "address": str(node.ip),
            "stage": state.latest(node.name),
            "stages": {
                s: state.stages(node.name)[s] for s in STAGES if state.reached(node.name, s)
            },
            "card": state.nodes.get(node.name, {}).get("card"),
        }
        for node in cluster.nodes
    }


def part_of_cluster(cluster: Cluster, state: BuildState, reflash: Iterable[str]) -> list[str]:
    """Nodes the build leaves alone: Ready in an earlier build, or (a cluster provisioned
    before, its kubeconfig fetched) registered in Kubernetes, e.g. when a Pi was added to
    cluster.yaml; except those to write again (``--reflash``)."""
    members = [n.name for n in cluster.nodes if state.reached(n.name, READY)]
    kubeconfig = Path(str(cluster.state_dir)) / "kubeconfig"
    if kubeconfig.is_file() and len(members) < len(cluster.nodes):
        registered = registered_nodes(cluster) - set(members)
        members += [n.name for n in cluster.nodes if n.name in registered]
    return [name for name in members if name not in set(reflash)]


def run_build(cluster: Cluster, state: BuildState, plan: BuildPlan, steps: BuildSteps) -> None:
    """The whole build (module docstring); raises ``HostsUnreachable`` naming the Pis that
    never booted (after the others were provisioned), ``PikubeError`` when Kubernetes does
    not call every node Ready."""
    from pikube.image.cards import check_known_hosts
    from pikube.image.detect import CardWatcher

    members = part_of_cluster(cluster, state, plan.reflash)
    need = nodes_needing_cards(cluster, state, members)
    watcher = image = None
    if need:
        image = steps.resolve_image()
        check_known_hosts(cluster)
        # Watching starts before the question: a card inserted while it is asked is noticed.
        watcher = CardWatcher(
            image_size=image.size,
            allow_non_removable=plan.options.allow_non_removable,
            sys_root=plan.options.sys_root,
            proc_root=plan.options.proc_root,
            dev_root=plan.dev_root,
        )
        steps.announce(f"image: {image.label}; cards to write: {', '.join(n.name for n in need)}")
        steps.announce("insert cards only once asked: a card already in a reader is never touched")
        steps.confirm()
    with steps.open_view() as view:
        if watcher is not None and image is not None:
            write_inserted_cards(cluster, state, need, image, plan.options, watcher, view)
        if plan.cards_only:
            return
        booting = [
            n
            for n in cluster.nodes
            if n.name not in members and state.reached(n.name, CARD_WRITTEN)
        ]
        down = wait_for_boots(cluster, state, booting, plan.boot_timeout, view) if booting else {}
        if cluster.control_plane.name in down:
            raise never_booted(down, plan.boot_timeout)  # nothing to join the others to
        if plan.until == SSH_UP:
            if down:
                raise never_booted(down, plan.boot_timeout)
            return
        limit = ",".join(n.name for n in cluster.nodes if n.name not in down)
        if steps.preflight is not None:
            view.say("preflight: pikube doctor")
            steps.preflight(limit)
        tracker = PlayTracker(stage_recorder(cluster, state, view))
        steps.provision(limit, tracker, view, plan.until == PREPARED)
        if plan.until == PREPARED:
            if down:
                raise never_booted(down, plan.boot_timeout)
            return
        not_ready = record_ready(cluster, state, view, down)
    if down:
        raise never_booted(down, plan.boot_timeout)
    if not_ready:
        raise PikubeError(
            f"the playbook ran, but Kubernetes does not report {', '.join(not_ready)} Ready",
            fix="run `pikube status` in a minute; `pikube doctor` names what is missing",
        )
