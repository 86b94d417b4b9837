"""The community simulation at 10 and 100 households for one day: prosumer-intervals per
second of wall time, peak memory, gas per interval (target: the 100-household day in under
two minutes on this machine).

Each scenario runs in a child process of its own so that its peak memory is its own.
Writes bench/results/community.json.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.table import Table

from bench.common import write_result

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("scenarios/fortaleza-street-10.toml", "scenarios/fortaleza-100.toml")
TARGET_100_S = 120.0


def run_one(path: str) -> dict[str, Any]:
    """Run one scenario in this process and measure it."""
    from meterchain.config import Scenario, load_toml
    from meterchain.sim.community import run_community
    from meterchain.sim.report import summarise

    scenario = load_toml(ROOT / path, Scenario)
    started = time.perf_counter()
    result = asyncio.run(run_community(scenario))
    wall_s = time.perf_counter() - started
    summary = summarise(result)
    households = len(result.households)
    prosumer_intervals = households * len(result.market)
    return {
        "scenario": scenario.name,
        "households": households,
        "intervals": len(result.market),
        "wall_s": wall_s,
        "prosumer_intervals_per_s": prosumer_intervals / wall_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "gas_used": result.gas_used,
        "gas_per_interval": result.gas_used / max(len(result.market), 1),
        "chain_agrees": summary["chain_agrees"],
        "community_cost_with_market": summary["community"]["cost_with_market"],
        "community_cost_without_market": summary["community"]["cost_without_market"],
        "community_savings": summary["community"]["savings"],
    }


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(run_one(sys.argv[2])))
        return
    rows = []
    for path in SCENARIOS:
        print(f"simulating {path} for one day …", flush=True)
        completed = subprocess.run(
            [sys.executable, __file__, "--one", path],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        )
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    table = Table(title="community simulation, one day")
    for column in ("households", "wall s", "prosumer-intervals/s", "peak MB", "gas/interval"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(
            str(row["households"]),
            f"{row['wall_s']:.1f}",
            f"{row['prosumer_intervals_per_s']:.1f}",
            f"{row['peak_rss_mb']:.0f}",
            f"{row['gas_per_interval']:,.0f}",
        )
    Console().print(table)
    hundred = next(r for r in rows if r["households"] == 100)
    verdict = "met" if hundred["wall_s"] <= TARGET_100_S else "missed"
    print(f"target: 100 households in under {TARGET_100_S:.0f} s — {verdict}")
    path = write_result("community", {"target_100_households_s": TARGET_100_S, "scenarios": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
