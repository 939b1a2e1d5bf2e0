"""The harness tells a guest reboot from a power-off by QEMU's word, not by the console.

Two bare-metal payloads for the raspi3b machine do what Linux's bcm2835 watchdog driver
(drivers/watchdog/bcm2835_wdt.c) does to restart or to halt a Pi: write the PM_RSTC full-reset
configuration, the halt first marking RSTS with partition 63 (0x555). They print nothing, as
Raspberry Pi OS prints nothing of its reboot on the serial console. Runs in seconds, but needs
QEMU, so it sits with the emulated-Pi tier.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.emulated_pi import harness

# aarch64, loaded by QEMU's -kernel at the raspi3b entry point (llvm-mc -show-encoding):
#   movz x1, #0x3f10, lsl #16     PM block, 0x3f100000
#   movz w2, #0x5a00, lsl #16     PM password ...
#   movk w2, #0x0555              ... | partition 63: halt        (power-off only)
#   str  w2, [x1, #0x20]          PM_RSTS                         (power-off only)
#   movz w2, #0x5a00, lsl #16
#   movk w2, #0x0020              ... | full reset
#   str  w2, [x1, #0x1c]          PM_RSTC
#   b    .
SET_BASE = bytes.fromhex("01e2a7d2")
HALT_MARK = bytes.fromhex("0240ab52 a2aa8072 222000b9")
RESET = bytes.fromhex("0240ab52 02048072 221c00b9 00000014")
PAYLOADS = {"reboot": SET_BASE + RESET, "poweroff": SET_BASE + HALT_MARK + RESET}


def run_payload(tmp_path: Path, code: bytes) -> harness.Boot:
    kernel = tmp_path / "payload.bin"
    kernel.write_bytes(code)
    console = tmp_path / "console.log"
    qmp = tmp_path / "qmp.sock"
    argv = [*harness.qemu_machine_argv(qmp), "-kernel", str(kernel), "-serial", f"file:{console}"]
    boot = harness.Boot(1, "", console, time.monotonic())
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    boot.qmp = harness.QmpWatch(qmp, proc)
    boot.qmp.start()
    try:
        boot.exit_code = proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    boot.qmp.join(timeout=10)
    return boot


@pytest.mark.parametrize(("payload", "reason", "rebooted"), [
    ("reboot", "guest-reset", True),
    ("poweroff", "guest-shutdown", False),
])  # fmt: skip
def test_a_silent_guest_reset_is_a_reboot_and_a_halt_is_not(
    tmp_path: Path, payload: str, reason: str, rebooted: bool
) -> None:
    boot = run_payload(tmp_path, PAYLOADS[payload])
    assert boot.exit_code == 0
    assert boot.console_text() == ""  # nothing for the console check to go by
    assert boot.qmp is not None and boot.qmp.error is None
    assert boot.qmp.reason == reason
    assert boot.rebooted is rebooted
