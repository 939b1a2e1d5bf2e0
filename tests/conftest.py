"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.factories import make_key_pair

# Fixtures for images, flashing and cloud-init (pi_image, ...).
pytest_plugins = ("tests.image_support",)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ed25519 key pair shared by the session (private key path)."""
    return make_key_pair(tmp_path_factory.mktemp("keys"))
