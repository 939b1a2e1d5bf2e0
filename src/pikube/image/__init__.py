"""OS images: catalog, verified downloads, block maps, safe streaming writes to SD cards."""

from __future__ import annotations
