"""Wait for just-flashed nodes to boot: each must answer on SSH with its pinned host key, and
its first boot must be over (cloud-init no longer running).

A first boot of Ubuntu on a Pi takes minutes (cloud-init, host keys, a resize of the root
file system). ``wait_for_ssh`` polls every node in its own thread with the probes' login
(``check_first_boot_done``: host key pinned, the same key and agent as Ansible; then
cloud-init no longer running) and yields an event whenever a node comes up or its reason for
not answering changes, so the CLI can show each node as it arrives.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace

from pikube.probe.ssh import ProbeError, SshTarget, check_first_boot_done

DEFAULT_WAIT_BOOT_S = 600  # a Pi 3 with a slow card needs ~5 min for its first boot
POLL_INTERVAL_S = 3.0  # between two attempts on one node
NEVER_UP_CAUSES = (
    "the Pi is not powered (red LED off) or its supply is too weak",
    "the network cable is out or the port is dead (no link LEDs)",
    "the SD card is not seated, or was not flashed by `pikube flash` for this node",
    "the address in the cluster file is not the one the node has",
)


@dataclass(frozen=True)
class BootEvent:
    """``state``: ``waiting`` (with the current reason), ``up``, or ``down`` (gave up)."""

    node: str
    state: str
    elapsed: float  # seconds since the wait began
    reason: str = ""
    fix: str = ""


def wait_for_ssh(
    targets: Mapping[str, SshTarget],
    timeout: float = DEFAULT_WAIT_BOOT_S,
    interval: float = POLL_INTERVAL_S,
    check: Callable[[SshTarget], None] = check_first_boot_done,
) -> Iterator[BootEvent]:
    """Poll every target until it logs in or ``timeout`` s have passed; yield its events.

    Ends after one ``up`` or ``down`` event per node. An attempt gets at most the time left
    as its SSH timeout (at least 1 s), so the wait ends within seconds of the deadline.
    """
    start = time.monotonic()
    deadline = start + timeout
    events: queue.Queue[BootEvent] = queue.Queue()
    stop = threading.Event()

    def watch(name: str, target: SshTarget) -> None:
        last = ""
        while not stop.is_set():
            left = deadline - time.monotonic()
            try:
                check(replace(target, timeout=max(1.0, min(target.timeout, left))))
            except ProbeError as err:
                now = time.monotonic()
                if err.reason != last:
                    last = err.reason
                    events.put(BootEvent(name, "waiting", now - start, last, err.fix))
                if now >= deadline:
                    events.put(BootEvent(name, "down", now - start, last, err.fix))
                    return
                stop.wait(min(interval, deadline - now))
                continue
            events.put(BootEvent(name, "up", time.monotonic() - start))
            return

    threads = [
        threading.Thread(target=watch, args=item, name=f"wait-boot-{item[0]}", daemon=True)
        for item in targets.items()
    ]
    for thread in threads:
        thread.start()
    pending = set(targets)
    try:
        while pending:
            event = events.get()
            if event.state != "waiting":
                pending.discard(event.node)
            yield event
    finally:
        stop.set()  # a consumer that stops early (Ctrl-C) ends the pollers' sleeps
