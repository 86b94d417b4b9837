"""Run every `bench/bench_*.py` in turn; each writes its JSON to bench/results/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent


def main() -> int:
    failures = []
    for script in sorted(BENCH_DIR.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        result = subprocess.run([sys.executable, str(script)], cwd=BENCH_DIR.parent, check=False)
        if result.returncode != 0:
            failures.append(script.name)
    if failures:
        print(f"failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    print(f"results in {BENCH_DIR / 'results'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
