"""Import shim: the stand-ins live in tests/lab/standins (test-only code)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

LAB = Path(__file__).resolve().parents[1] / "lab"
if str(LAB) not in sys.path:
    sys.path.insert(0, str(LAB))

from standins import testing  # noqa: E402

reason = testing.missing_prerequisites()
requires_standin_prereqs = pytest.mark.skipif(reason is not None, reason=reason or "")
