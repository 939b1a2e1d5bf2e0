"""Fixtures of the emulated-Pi tier: the cached image, the lab bridge, one booted card.

The tier is slow (minutes) and needs root, QEMU and binfmt: it runs only with PIKUBE_SLOW=1.
Every fixture that creates something removes it in its finalizer, failure or not.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulated_pi import harness, image

TOOLS = ("qemu-system-aarch64", "debootstrap", "mcopy", "mkfs.vfat", "sfdisk", "mke2fs")
TIMINGS: dict[str, float] = {}


def _skip_reason() -> str | None:
    if os.environ.get("PIKUBE_SLOW") != "1":
        return "emulated Pi tier: set PIKUBE_SLOW=1 to run it (takes 10-30 minutes)"
    if os.geteuid() != 0:
        return "emulated Pi tier needs root (bridge, tap, debootstrap)"
    missing = [tool for tool in TOOLS if not shutil.which(tool)]
    if missing:
        return (
            f"emulated Pi tier needs {', '.join(missing)}: apt-get install qemu-system-arm "
            "qemu-user-static binfmt-support debootstrap mtools dosfstools fdisk xz-utils "
            "apt-cacher-ng"
        )
    if not Path("/usr/libexec/qemu-binfmt/aarch64-binfmt-P").exists() and not shutil.which(
        "qemu-aarch64-static"
    ):
        return "emulated Pi tier needs qemu-user-static (arm64 binaries through binfmt_misc)"
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    reason = _skip_reason()
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here) and reason:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def _teardown_on_sigterm() -> Iterator[None]:
    """SIGTERM (a CI timeout, `kill`) ends the run like Ctrl-C: the finalizers stop QEMU and
    delete the namespace instead of the process dying with them left behind."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def apt_proxy() -> Iterator[None]:
    """The host's shared apt-cacher-ng (image build and node prep), stopped with its last user."""
    with harness.acng_user():
        yield


@pytest.fixture(scope="module", params=list(image.VARIANTS))
def variant(request: pytest.FixtureRequest) -> image.Variant:
    """The emulated OS: Ubuntu's Pi server image or Raspberry Pi OS Lite (``-k raspios``)."""
    return image.VARIANTS[request.param]


@pytest.fixture(scope="module")
def pi_image(apt_proxy: None, variant: image.Variant) -> Path:
    """The variant's cached arm64 Pi image (built first when its recipe changed).

    PIKUBE_EMU_IMAGE_UBUNTU=PATH (or _RASPIOS) uses that .img/.img.xz instead (e.g. while a
    rebuild runs).
    """
    given = os.environ.get(f"PIKUBE_EMU_IMAGE_{variant.name.upper()}")
    if given:
        return Path(given)
    started = time.monotonic()
    path = image.ensure_image(variant)
    TIMINGS[f"{variant.name}: image (build or cache hit)"] = time.monotonic() - started
    return path


@pytest.fixture(scope="session")
def emu_lab(tmp_path_factory: pytest.TempPathFactory, apt_proxy: None) -> Iterator[harness.Lab]:
    """Namespace pkl6-emu: bridge (10.77.6.1/24), tap, apt proxy forwarder, NTP; removed after."""
    work = tmp_path_factory.mktemp("emulated-pi")
    with harness.lab(work) as the_lab:
        yield the_lab


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("emulated Pi timings")
        for what, seconds in TIMINGS.items():
            terminalreporter.write_line(f"{what}: {seconds:.0f} s")
