"""Children that a test interrupts with SIGINT, as Ctrl-C would.

A shell's background job (`pytest ... &` in a script, or CI started that way) runs with
SIGINT ignored, every child inherits that, and Python then installs no KeyboardInterrupt
handler: a test's SIGINT would be lost and the child would run on. ``interruptible`` (a
``preexec_fn``) gives the child the default disposition back, so the test proves what a
user's Ctrl-C does however the test run itself was started."""

from __future__ import annotations

import signal


def interruptible() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
