"""Raspberry Pi models pikube knows: memory and CPU, for the control-plane minimum checks."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PiModel:
    id: str
    description: str
    memory_mb: int
    cpus: int
    arch: str = "arm64"


PI_MODELS: dict[str, PiModel] = {
    m.id: m
    for m in (
        PiModel("pizero2w", "Raspberry Pi Zero 2 W (512 MB)", 512, 4),
        PiModel("pi3a-plus", "Raspberry Pi 3 Model A+ (512 MB)", 512, 4),
        PiModel("pi3b", "Raspberry Pi 3 Model B (1 GB)", 1024, 4),
        PiModel("pi3b-plus", "Raspberry Pi 3 Model B+ (1 GB)", 1024, 4),
        PiModel("pi4-1gb", "Raspberry Pi 4 Model B (1 GB)", 1024, 4),
        PiModel("pi4-2gb", "Raspberry Pi 4 Model B (2 GB)", 2048, 4),
        PiModel("pi4-4gb", "Raspberry Pi 4 Model B (4 GB)", 4096, 4),
        PiModel("pi4-8gb", "Raspberry Pi 4 Model B (8 GB)", 8192, 4),
        PiModel("pi400", "Raspberry Pi 400 (4 GB)", 4096, 4),
        PiModel("cm4-1gb", "Compute Module 4 (1 GB)", 1024, 4),
        PiModel("cm4-2gb", "Compute Module 4 (2 GB)", 2048, 4),
        PiModel("cm4-4gb", "Compute Module 4 (4 GB)", 4096, 4),
        PiModel("cm4-8gb", "Compute Module 4 (8 GB)", 8192, 4),
        PiModel("pi5-2gb", "Raspberry Pi 5 (2 GB)", 2048, 4),
        PiModel("pi5-4gb", "Raspberry Pi 5 (4 GB)", 4096, 4),
        PiModel("pi5-8gb", "Raspberry Pi 5 (8 GB)", 8192, 4),
        PiModel("pi5-16gb", "Raspberry Pi 5 (16 GB)", 16384, 4),
    )
}
