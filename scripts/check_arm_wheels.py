#!/usr/bin/env python3
"""Does every package a board installs have a wheel for ARM boards? (`make check-arm`)

For each line of a lock file (default requirements-board.lock) and each board platform, ask pip
to download that exact version as a binary wheel (`pip download --only-binary=:all: --no-deps
--platform …`) for CPython 3.11 on glibc 2.17–2.36 (Raspberry Pi OS 12 "bookworm" and Debian 12
ship glibc 2.36 and Python 3.11). A pure-Python package passes with its `py3-none-any` wheel; a
package with only a source distribution, or no wheel for the platform, fails and is named.

Run where PyPI is reachable (CI's set-up is; the tests are not): downloads go to pip's cache,
so a second run takes seconds. Writes a JSON report (--report) and exits 1 on any miss,
except the armv7 gaps recorded below (docs/board.md, "Board images"): PyPI has no 32-bit ARM
wheel for numpy, HiGHS, coincurve, ckzg, bitarray, cffi, regex or pycryptodome, all of which
a board imports, so 32-bit images are not supported from PyPI (piwheels would fill the gaps,
but cannot be reached from here to check). The check still fails on any new armv7 gap, and on
a recorded one that closes, so the documentation stays true.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GLIBC_MINORS = range(17, 37)  # manylinux_2_17 … manylinux_2_36 (bookworm's glibc)
PLATFORMS = {
    # 64-bit: Raspberry Pi OS (64-bit), Debian arm64, Ubuntu Server on Pi 3/4/5, Zero 2 W.
    "aarch64": [f"manylinux_2_{m}_aarch64" for m in GLIBC_MINORS] + ["manylinux2014_aarch64"],
    # 32-bit: Raspberry Pi OS (32-bit, armhf), boards with an ARMv7 core (Pi 2, BeagleBone).
    "armv7l": [f"manylinux_2_{m}_armv7l" for m in GLIBC_MINORS] + ["manylinux2014_armv7l"],
}


# armv7: no wheel on PyPI for these exact versions (checked 2026-12-05).
KNOWN_GAPS = {
    "armv7l": {
        "bitarray", "cffi", "ckzg", "coincurve", "highspy", "numpy", "pycryptodome", "regex",
    },
}  # fmt: skip


def locked(path: Path) -> list[str]:
    return [
        line.strip()
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def download(requirement: str, arch: str, directory: Path) -> tuple[str, str, str | None]:
    """(requirement, arch, the wheel's file name or None)."""
    target = directory / arch
    platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
         "--no-deps", "--only-binary=:all:", "--python-version", "3.11", "--implementation",
         "cp", "--abi", "cp311", "--abi", "abi3", "--abi", "none", *platforms,
         "--dest", str(target), requirement],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0:
        return requirement, arch, None
    name = requirement.split("==")[0].lower().replace("-", "_")
    found = [p.name for p in target.glob("*.whl") if p.name.lower().startswith(name)]
    return requirement, arch, found[0] if found else "(downloaded)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements-board.lock")
    parser.add_argument("--arch", action="append", choices=sorted(PLATFORMS))
    parser.add_argument("--report", type=Path, default=ROOT / "bench/results/arm_wheels.json")
    args = parser.parse_args()
    arches = args.arch or sorted(PLATFORMS)
    requirements = locked(args.lock)
    with tempfile.TemporaryDirectory(prefix="meterchain-arm-") as tmp:
        jobs = [(r, a) for a in arches for r in requirements]
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(lambda job: download(*job, Path(tmp)), jobs))
    report: dict[str, dict[str, str | None]] = {arch: {} for arch in arches}
    for requirement, arch, wheel in results:
        report[arch][requirement] = wheel
    missing = {
        arch: sorted(r for r, w in found.items() if w is None) for arch, found in report.items()
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(
        json.dumps({"lock": str(args.lock.name), "wheels": report, "missing": missing}, indent=2)
        + "\n"
    )
    failed = False
    for arch in arches:
        pure = sum(1 for w in report[arch].values() if w and w.endswith("-none-any.whl"))
        print(
            f"{arch}: {len(requirements) - len(missing[arch])} of {len(requirements)} packages "
            f"have a wheel ({pure} pure Python)"
            + (f"; NONE for: {', '.join(missing[arch])}" if missing[arch] else "")
        )
        names = {r.split("==")[0].lower() for r in missing[arch]}
        known = KNOWN_GAPS.get(arch, set())
        if names - known:
            failed = True
            print(f"  FAIL: new {arch} gaps: {', '.join(sorted(names - known))}: pick another "
                  "package, or make it optional on the board")  # fmt: skip
        closed = {k for k in known if any(r.lower().startswith(k + "==") for r in requirements)}
        if closed - names:
            failed = True
            print(f"  FAIL: {arch} wheels now exist for {', '.join(sorted(closed - names))}: "
                  "update KNOWN_GAPS here and docs/board.md")  # fmt: skip
    print(f"report: {args.report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
