"""Download the wheels the GPU check needs and the GPU machine lacks, to carry them there.

The GPU machine (python3 3.12, x86-64 Linux) installs nothing from a registry; it has torch,
Triton, numpy, scipy, OpenCV, pytest and hypothesis but not the benchmark anchors and test
oracles below. ``python -m benchmarks.gpu_wheels`` downloads their wheels for CPython 3.12
manylinux x86-64, without dependencies, into the ignored folder ``.gpuwheels/`` and checks
the folder stays under 40 MiB (the working tree copied to that machine is at most 64 MiB, the
repository included). The device command (``python -m benchmarks.gpu_check --plan``)
installs them with ``pip install --no-index --no-deps --target <tmp>`` onto ``PYTHONPATH``.
Nothing else in the project reads that folder.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = os.path.join(REPO, ".gpuwheels")
LIMIT_BYTES = 40 * 2**20
# (requirement, what needs it). No dependencies are resolved: each package's own
# requirements are either on the machine (torch, numpy, scipy, packaging) or listed here.
WHEELS: tuple[tuple[str, str], ...] = (
    ("PyWavelets>=1.4", "wavelet oracle (tests), ptwt's dependency"),
    ("ptwt>=0.1.8", "wavelet anchor (ops stage)"),
    ("pytorch_wavelets>=1.3", "wavelet anchor (ops stage)"),
    ("setuptools<81", "pytorch_wavelets imports pkg_resources; a 3.12 venv has no setuptools"),
    ("kornia>=0.7", "pyramid anchor (ops stage)"),
    ("kornia_rs", "kornia's dependency"),
    ("monai>=1.3", "tiling anchor (ops stage) and oracle (tests)"),
)
PLATFORM = ("--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
            "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_17_x86_64",
            "--platform", "manylinux_2_28_x86_64")


def folder_bytes(folder: str = FOLDER) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)
               if f.endswith(".whl"))


def download(folder: str = FOLDER) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
           *PLATFORM, "--dest", folder, *[req for req, _ in WHEELS]]
    subprocess.run(cmd, check=True)
    return sorted(f for f in os.listdir(folder) if f.endswith(".whl"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_wheels",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--dest", default=FOLDER, help="folder for the wheels (default .gpuwheels/)")
    p.add_argument("--check", action="store_true", help="download nothing; check the folder")
    args = p.parse_args(argv)
    names = (sorted(f for f in os.listdir(args.dest) if f.endswith(".whl"))
             if args.check else download(args.dest))
    size = folder_bytes(args.dest)
    for n in names:
        print(f"  {os.path.getsize(os.path.join(args.dest, n)) / 2**20:6.2f} MiB  {n}")
    print(f"{len(names)} wheels, {size / 2**20:.1f} MiB in {args.dest} (limit "
          f"{LIMIT_BYTES / 2**20:.0f} MiB)")
    wanted = {req.split(">")[0].split("<")[0].split("=")[0].lower().replace("-", "_")
              for req, _ in WHEELS}
    have = {n.split("-")[0].lower() for n in names}
    missing = sorted(w for w in wanted if w not in have)
    if missing:
        print(f"missing wheels: {missing}; run without --check to download them")
        return 1
    if size >= LIMIT_BYTES:
        print(f"{args.dest} holds {size / 2**20:.1f} MiB, over the 40 MiB the copied working "
              "tree can spare; drop a package from WHEELS or pin a smaller version")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
