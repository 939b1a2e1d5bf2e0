"""Several flashes at once: open the checked targets, write them (one after another or in
parallel), stop them all on Ctrl-C/SIGTERM/SIGHUP, and report what each one became.

The CLI has run every check (``pikube.image.device``, ``pikube.image.output``,
``pikube.image.flash.check_image``) and rendered each node's first-boot files; this module
only writes, and never prints: it calls back for progress and returns per-target results,
the notes a person needs about incomplete targets, and the error to exit with.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pikube.errors import EXIT_INTERRUPTED, PikubeError

if TYPE_CHECKING:
    from pikube.hostkeys import HostKey
    from pikube.image.catalog import BootLayout
    from pikube.image.flash import FlashReport
    from pikube.image.output import OutputFile


class FlashInterrupted(PikubeError):
    exit_code = EXIT_INTERRUPTED


@dataclass
class FlashTarget:
    """One node's card or image file, from the checks to the result."""

    name: str  # the node
    path: str  # what the user passed
    is_device: bool
    description: str = ""
    files: dict[str, str] = field(default_factory=dict)  # first-boot files
    keys: list[HostKey] = field(default_factory=list)  # the host keys in those files
    handle: BinaryIO | None = None
    write_path: str = ""  # the device, or the temporary file next to --output
    output: OutputFile | None = None  # --output: locked name + its temporary file
    report: FlashReport | None = None
    error: BaseException | None = None
    started: bool = False  # writing has begun: the target is no longer what it was


# (target, phase, bytes just done, phase total)
TargetProgress = Callable[[FlashTarget, str, int, int], None]


def open_target(target: FlashTarget, size: int, *, force: bool) -> None:
    """Open a checked device exclusively, or lock an output and create its partial file."""
    from pikube.image.device import open_exclusive
    from pikube.image.output import open_output

    if target.is_device:
        fd = open_exclusive(target.path)
        target.write_path = target.path
        target.handle = os.fdopen(fd, "r+b", buffering=0)
        return
    target.output = open_output(Path(target.path), size, force=force)
    target.write_path = str(target.output.partial)
    target.handle = target.output.handle


def flash_targets(
    targets: list[FlashTarget],
    image: Path,
    layout: BootLayout,
    size: int,
    *,
    verify: bool,
    parallel: bool,
    force: bool,
    progress: TargetProgress,
    on_start: Callable[[FlashTarget], None],
) -> None:
    """Open and write every target; complete outputs are renamed into place.

    Each target ends with ``report`` (complete) or ``error`` set; a Ctrl-C (or SIGTERM,
    SIGHUP: :func:`pikube.image.flash.interrupt_on_signals`) stops every writer at its next
    chunk. Outputs that did not complete are removed; the targets are closed.
    """
    opened: list[FlashTarget] = []
    try:
        for target in targets:
            open_target(target, size, force=force)
            opened.append(target)
        _write_all(
            targets,
            image,
            layout,
            verify=verify,
            parallel=parallel,
            progress=progress,
            on_start=on_start,
        )
        for target in targets:
            if target.report is not None and target.output is not None:
                target.output.commit()
    finally:
        for target in opened:
            if target.output is not None:
                target.output.close()  # removes the partial file unless committed
            elif target.handle:
                target.handle.close()


def _write_all(
    targets: list[FlashTarget],
    image: Path,
    layout: BootLayout,
    *,
    verify: bool,
    parallel: bool,
    progress: TargetProgress,
    on_start: Callable[[FlashTarget], None],
) -> None:
    from pikube.image.flash import flash_image, shared_chunks

    cancel = threading.Event()
    # In parallel, the image is decoded once and the same chunks go to every card.
    shared = shared_chunks(image, len(targets)) if parallel and len(targets) > 1 else None

    def work(target: FlashTarget, index: int) -> None:
        def phase_progress(phase: str, done: int, total: int) -> None:
            if not target.started:  # the first call comes once writing has begun
                target.started = True
                on_start(target)
            if cancel.is_set():
                raise FlashInterrupted("interrupted")
            progress(target, phase, done, total)

        assert target.handle is not None  # noqa: S101 - opened by open_target
        stream = None if shared is None else shared.stream(index)
        try:
            target.report = flash_image(
                image,
                target.handle,
                target.write_path,
                sparse_target=not target.is_device,
                layout=layout,
                boot_files=target.files,
                verify=verify,
                progress=phase_progress,
                chunks=stream,
            )
        except BaseException as err:  # reported per target
            target.error = err
        finally:
            if stream is not None:
                stream.close()  # the other cards no longer wait for this one

    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=len(targets) if parallel else 1, thread_name_prefix="pikube-flash"
    )
    futures: list[concurrent.futures.Future[None]] = []
    try:
        for index, target in enumerate(targets):
            futures.append(pool.submit(work, target, index))
        while not all(f.done() for f in futures):
            concurrent.futures.wait(futures, timeout=0.2)
    except KeyboardInterrupt:
        cancel.set()  # each writer stops at its next chunk
        for future in futures:
            future.cancel()
        while not all(f.done() for f in futures):
            with contextlib.suppress(KeyboardInterrupt):  # a second Ctrl-C: still wait
                concurrent.futures.wait(futures, timeout=0.2)
        for target in targets:
            if target.report is None and target.error is None:
                target.error = KeyboardInterrupt()
    finally:
        pool.shutdown(wait=True)
        if shared is not None:
            shared.join()


def incomplete_notes(targets: list[FlashTarget]) -> list[str]:
    """What became of each target that did not complete, for people."""
    notes = []
    for target in targets:
        if target.report is not None:
            continue
        if not target.started:
            notes.append(f"{target.name}: {target.path} was not touched")
        elif target.is_device:
            reason = target.error.render() if isinstance(target.error, PikubeError) else "stopped"
            notes.append(
                f"{target.name}: {target.path} is INCOMPLETE ({reason.splitlines()[0]}): "
                "its partition table was cleared first and is written last, so it will not "
                "boot or mount; flash it again"
            )
        else:
            notes.append(f"{target.name}: {target.path} was not written (partial file removed)")
    return notes


def failure(targets: list[FlashTarget]) -> PikubeError | None:
    """The error to exit with: the first target's that failed (interrupted: exit 130)."""
    failed = [t for t in targets if t.error is not None]
    if not failed:
        return None
    first = failed[0].error
    if isinstance(first, KeyboardInterrupt):
        return FlashInterrupted("interrupted", fix="run the same pikube flash command again")
    if isinstance(first, PikubeError):
        return first
    error = PikubeError(f"flashing {failed[0].path} failed: {first}")
    error.__cause__ = first
    return error
