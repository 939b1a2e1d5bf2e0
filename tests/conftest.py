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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` run only with PIKUBE_SLOW=1 (the documented slow-tier switch)."""
    import os

    if os.environ.get("PIKUBE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow tier: set PIKUBE_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
