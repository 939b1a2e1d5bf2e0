#!/usr/bin/env python3
"""Flash benchmark: pikube vs `xz -dc | dd bs=4M conv=fsync` vs `bmaptool copy`.

Builds (once, cached) a realistic 2 GiB Ubuntu-like Pi image: MBR, 256 MiB FAT32
`system-boot`, ext4 `writable` filled with ~600 MiB of real files copied from this machine's
/usr (about 30 % of the image), the rest free space; compressed with xz like the real
images. Then writes it to an image file and to a loop device with each tool, side by side
in one run: wall time, throughput (uncompressed image bytes per second), peak memory
(max RSS of each process, from wait4), with and without verification.

  .venv/bin/python bench/flash_bench.py [--size-gib 2] [--data-mib 600] [--repeat 1]

Needs root (loop devices) and: xz-utils, bmap-tools, fdisk, dosfstools, mtools, e2fsprogs.
Never run inside the tests: numbers, not assertions.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.piimage import build_pi_image, xz_image  # noqa: E402

MIB = 1 << 20
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pikube-bench"


@dataclass
class Run:
    tool: str
    target: str
    verify: bool
    seconds: float
    peak_kib: int  # largest RSS of any process in the pipeline
    cpu: float  # user + system CPU seconds of all processes in the pipeline
    written_kib: int  # blocks the target gained (allocated size)


def build_reference(size_gib: int, data_mib: int) -> tuple[Path, Path, Path]:
    """(raw, xz, bmap) of the reference image, cached across runs."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = CACHE / f"ref-{size_gib}g-{data_mib}m"
    raw, packed, bmap = Path(f"{stem}.img"), Path(f"{stem}.img.xz"), Path(f"{stem}.img.bmap")
    if packed.exists() and raw.exists() and bmap.exists():
        return raw, packed, bmap
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        tree = Path(tmp) / "root"
        copied = 0
        for source in ("/usr/lib", "/usr/share", "/usr/bin"):
            for folder, _, files in os.walk(source):
                for name in files:
                    src = Path(folder) / name
                    if src.is_symlink() or not src.is_file():
                        continue
                    size = src.stat().st_size
                    if copied + size > data_mib * MIB:
                        continue
                    dest = tree / src.relative_to("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dest)
                    copied += size
                if copied >= data_mib * MIB * 0.99:
                    break
        print(f"reference tree: {copied / MIB:.0f} MiB of files", file=sys.stderr)
        build_pi_image(raw, size=size_gib << 30, boot_size=256 * MIB, tree=tree)
    print("compressing the reference image (xz -6, once)...", file=sys.stderr)
    xz_image(raw, packed, level=6, threads=2)
    subprocess.run(["bmaptool", "create", "-o", str(bmap), str(raw)], check=True)
    return raw, packed, bmap


def timed(argv: list[str], rss_file: Path) -> list[str]:
    """Run under GNU time, which records the max RSS of exactly that process.

    (ru_maxrss from our own wait4 would include this script's memory: Linux carries the
    forking process's high-water mark across exec.)
    """
    return ["/usr/bin/time", "-f", "%M %U %S", "-o", str(rss_file), *argv]


def wait_all(procs: list[subprocess.Popen[bytes]], rss_files: list[Path]) -> tuple[int, float]:
    """Wait for every process; return the largest max RSS (KiB) and the total CPU seconds."""
    for proc in procs:
        proc.wait()
        if proc.returncode != 0:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise SystemExit(f"{proc.args} failed ({proc.returncode}): {err}")
    stats = [f.read_text().split()[-3:] for f in rss_files]
    return max(int(s[0]) for s in stats), sum(float(s[1]) + float(s[2]) for s in stats)


def allocated_kib(target: Path) -> int:
    return target.stat().st_blocks // 2


def fresh(path: Path, size: int) -> None:
    path.unlink(missing_ok=True)
    with path.open("wb") as handle:
        handle.truncate(size)


def drop_caches() -> None:
    subprocess.run(["sync"], check=True)
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def run_tool(
    tool: str, verify: bool, packed: Path, bmap: Path, dest: str, cluster: Path
) -> tuple[float, int, float]:
    work = cluster.parent
    rss = [work / "rss0", work / "rss1"]
    procs: list[subprocess.Popen[bytes]] = []
    start = time.monotonic()
    if tool == "xz>null":  # the floor: decompression alone
        procs = [
            subprocess.Popen(
                timed(["xz", "-dc", str(packed)], rss[0]),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        ]
    elif tool == "xz|dd":
        xz = subprocess.Popen(
            timed(["xz", "-dc", str(packed)], rss[0]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        dd = subprocess.Popen(
            timed(
                ["dd", "bs=4M", "iflag=fullblock", "conv=fsync", f"of={dest}", "status=none"],
                rss[1],
            ),
            stdin=xz.stdout,
            stderr=subprocess.PIPE,
        )
        assert xz.stdout is not None
        xz.stdout.close()
        procs = [xz, dd]
    elif tool == "bmaptool":
        argv = ["bmaptool", "-q", "copy", "--bmap", str(bmap), str(packed), dest]
        if not verify:
            argv.insert(3, "--no-verify")
        procs = [subprocess.Popen(timed(argv, rss[0]), stderr=subprocess.PIPE)]
    else:
        argv = [sys.executable, "-m", "pikube", "flash", "-c", str(cluster)]
        argv += ["--image", str(packed), "pi-w1"]
        if dest.startswith("/dev/"):
            argv += ["--device", dest, "--yes", "--allow-non-removable"]
        else:
            argv += ["--output", dest, "--force"]  # replaces the fresh file, as dd does
        if not verify:
            argv.append("--no-verify")
        procs = [subprocess.Popen(timed(argv, rss[0]), stderr=subprocess.PIPE)]
    peak, cpu = wait_all(procs, rss[: len(procs)])
    return time.monotonic() - start, peak, cpu


def cluster_file(folder: Path) -> Path:
    key = folder / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = folder / "cluster.yaml"
    path.write_text(
        "name: bench\ndistribution: kubeadm\n"
        "network: {subnet: 192.168.1.0/24, gateway: 192.168.1.1, dns: [192.168.1.1]}\n"
        f"ssh: {{user: ubuntu, public_key: {key}.pub, private_key: {key}}}\n"
        "nodes:\n  - {name: pi-cp1, ip: 192.168.1.101, role: control-plane}\n"
        "  - {name: pi-w1, ip: 192.168.1.102, role: worker}\n"
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gib", type=int, default=2)
    parser.add_argument("--data-mib", type=int, default=600)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--targets", default="file,loop")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (loop devices, dropping caches)")
    raw, packed, bmap = build_reference(args.size_gib, args.data_mib)
    size = raw.stat().st_size
    print(
        f"reference: {size / MIB:.0f} MiB image, {packed.stat().st_size / MIB:.0f} MiB xz, "
        f"{raw.stat().st_blocks * 512 / MIB:.0f} MiB allocated in the raw image",
        file=sys.stderr,
    )
    tools = [
        ("xz>null", False),
        ("xz|dd", False),
        ("bmaptool", False),
        ("bmaptool", True),
        ("pikube", False),
        ("pikube", True),
    ]
    results: list[Run] = []
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        work = Path(tmp)
        cluster = cluster_file(work)
        for _ in range(args.repeat):
            for target_kind in args.targets.split(","):
                for tool, verify in tools:
                    backing = work / "target.img"
                    fresh(backing, size)
                    drop_caches()
                    if target_kind == "loop":
                        dev = subprocess.run(
                            ["losetup", "--find", "--show", str(backing)],
                            capture_output=True,
                            text=True,
                            check=True,
                        ).stdout.strip()
                        try:
                            seconds, peak, cpu = run_tool(tool, verify, packed, bmap, dev, cluster)
                        finally:
                            subprocess.run(["losetup", "-d", dev], check=False)
                    else:
                        seconds, peak, cpu = run_tool(
                            tool, verify, packed, bmap, str(backing), cluster
                        )
                    run = Run(tool, target_kind, verify, seconds, peak, cpu, allocated_kib(backing))
                    results.append(run)
                    print(
                        f"  {target_kind:<4} {tool:<8} verify={'yes' if verify else 'no ':<3} "
                        f"{seconds:6.1f} s wall {cpu:6.1f} s CPU",
                        file=sys.stderr,
                    )
                    backing.unlink()
    report(results, size)
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


def report(results: list[Run], size: int) -> None:
    def best(tool: str, target: str, verify: bool) -> Run:
        runs = [r for r in results if (r.tool, r.target, r.verify) == (tool, target, verify)]
        return min(runs, key=lambda r: r.seconds)

    header = f"{'target':<6} {'tool':<9} {'verify':<6} {'wall s':>7} {'MiB/s':>7}"
    print(header + f" {'CPU s':>7} {'peak RSS MiB':>13} {'written MiB':>12}")
    keys = sorted(
        {(r.target, r.tool, r.verify) for r in results},
        key=lambda k: (k[0], ["xz>null", "xz|dd", "bmaptool", "pikube"].index(k[1]), k[2]),
    )
    for target, tool, verify in keys:
        r = best(tool, target, verify)
        print(
            f"{target:<6} {tool:<9} {'yes' if verify else 'no':<6} {r.seconds:7.1f} "
            f"{size / MIB / r.seconds:7.0f} {r.cpu:7.1f} {r.peak_kib / 1024:13.1f} "
            f"{r.written_kib / 1024:12.0f}"
        )
    print()
    for target in sorted({r.target for r in results}):
        dd = best("xz|dd", target, False).seconds
        for tool, verify in (("pikube", True), ("pikube", False), ("bmaptool", True)):
            try:
                r = best(tool, target, verify)
            except ValueError:
                continue
            mode = "verify" if verify else "no verify"
            ratio, cpu_ratio = dd / r.seconds, best("xz|dd", target, False).cpu / r.cpu
            print(
                f"{target}: xz|dd (no verify) / {tool} ({mode}): wall {ratio:.2f}x, "
                f"CPU {cpu_ratio:.2f}x"
            )


if __name__ == "__main__":
    main()
