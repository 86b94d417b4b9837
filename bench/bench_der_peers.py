"""meterchain's DER optimiser beside EMHASS, on the problems both can express.

Run from the repository root: `.venv/bin/python bench/bench_der_peers.py` (writes
bench/results/der_peers.json). EMHASS (the version pinned in bench/emhass-requirements.txt) is
installed by this script into a virtual environment of its own, bench/.emhass-venv, never the
project's; if that cannot be built (no network, no wheels), EMHASS is skipped with a message
saying why and meterchain's half of the results is still written.

For each problem both optimisers solve the same sequence of variants (the day with its
forecasts re-drawn, the battery's SoC moved), cold (a model built per solve) and warm (one
kept model re-solved for each variant: `RecedingHorizon` for meterchain, one `Optimization`
object for EMHASS). Each plan is then priced and checked by `meterchain.der.evaluate`, which
trusts neither solver: it recomputes the SoC, the bill and every constraint from the power
flows alone.

Thermal loads are left out: EMHASS's thermal model (a forward-Euler room with constant
heating/cooling rates) is not meterchain's 1R1C with a COP per step, so their plans would not
be plans for the same problem.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from bench.der_cases import BRANCA, DAY, FEED_IN_PER_KWH, STEP_S, house_w, pv_w, sine_day_w, timing
from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    PlanFlows,
    RecedingHorizon,
    Site,
    evaluate,
    optimise,
)

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".emhass-venv"
REQUIREMENTS = BENCH / "emhass-requirements.txt"
VARIANTS = 12  # the first is the day itself, the rest re-drawn forecasts
COLD_RUNS = 5
MIP_GAP = 1e-6
GRID_LIMIT_W = 15_000.0


def _ensure_emhass(console: Console) -> tuple[Path | None, str]:
    """EMHASS's interpreter, installing it into its own venv if needed; or None and why not."""
    python = VENV / "bin" / "python"
    check = [str(python), "-c", "import emhass.optimization"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python, "installed"
    console.print(f"installing EMHASS into {VENV} (its own virtual environment) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        last = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(exc)]
        return None, f"could not install EMHASS into {VENV}: {last[0]}"
    if subprocess.run(check, capture_output=True).returncode != 0:
        return None, f"EMHASS installed into {VENV} but does not import"
    return python, "installed now"


# -- the problems ----------------------------------------------------------------------------


def _on_off(
    name: str, power_w: float, hours: float, start: int, end: int, *, block: bool
) -> DeferrableLoad:
    """A load that runs at its nominal power or not at all: EMHASS's semi-continuous load."""
    return DeferrableLoad(
        name, power_w * hours, start, end, power_w, min_power_w=power_w, single_block=block
    )


def _problems() -> list[tuple[str, DerProblem]]:
    steps = 96
    clear = pv_w(DAY, steps, 5_000)
    house = house_w(DAY, steps)
    branca = list(BRANCA.prices(DAY, steps, STEP_S))
    limits = {
        "import_limit_w": GRID_LIMIT_W,
        "export_limit_w": GRID_LIMIT_W,
        "pv_curtailable": False,
    }
    big = Battery(10_000, 5_000, 5_000)
    small = Battery(5_000, 2_500, 2_500)
    fortaleza_loads = [
        _on_off("ev", 7_000, 1.0, 72, 96, block=False),
        _on_off("washer", 1_500, 1.0, 32, 72, block=True),
    ]
    # EMHASS's defaults: two loads of 3 kW and 750 W, its peak/off-peak tariff, 30-minute steps
    half_hours = 48
    emhass_buy = [
        0.1907 if (3 <= k / 2 < 15.5 or 17.5 <= k / 2 < 20.5) else 0.1419 for k in range(half_hours)
    ]
    emhass_day = DerProblem(
        site=Site(
            "emhass-default",
            Battery(5_000, 1_000, 1_000, soc_min_fraction=0.3, soc_max_fraction=0.9),
            **limits,
        ),
        pv_w=sine_day_w(3_500, half_hours),
        load_w=[house[2 * k] * 1.3 for k in range(half_hours)],
        buy_price_per_kwh=emhass_buy,
        sell_price_per_kwh=[0.1419] * half_hours,
        initial_soc_fraction=0.6,
        target_soc_fraction=0.6,
        deferrable_loads=[
            _on_off("load0", 3_000, 4.0, 0, half_hours, block=False),
            _on_off("load1", 750, 8.0, 0, half_hours, block=False),
        ],
        step_s=1800,
    )
    # a day when selling pays more than buying: the battery must not feed the grid
    premium_sell = [0.9 if 9 <= k / 4 < 15 else FEED_IN_PER_KWH for k in range(steps)]
    premium = DerProblem(
        site=Site("export-premium", replace(big, grid_discharging=False), **limits),
        pv_w=clear,
        load_w=house,
        buy_price_per_kwh=branca,
        sell_price_per_kwh=premium_sell,
        initial_soc_fraction=0.9,
        target_soc_fraction=0.5,
        deferrable_loads=fortaleza_loads,
    )
    # negative prices at noon: wasting energy pays, and branch and bound has work to do
    negative = [-0.2 if 11 <= k / 4 < 14 else p for k, p in enumerate(branca)]
    return [
        ("emhass defaults: 48 x 30 min, PV, 5 kWh battery, 3 kW x 4 h + 750 W x 8 h", emhass_day),
        (
            "Fortaleza clear day, tarifa branca, 10 kWh, EV + washer",
            DerProblem(
                site=Site("fortaleza", big, **limits),
                pv_w=clear,
                load_w=house,
                buy_price_per_kwh=branca,
                sell_price_per_kwh=[FEED_IN_PER_KWH] * steps,
                initial_soc_fraction=0.5,
                target_soc_fraction=0.5,
                deferrable_loads=fortaleza_loads,
            ),
        ),
        (
            "Fortaleza cloudy, 3 kWp, 5 kWh, EV + washer",
            DerProblem(
                site=Site("fortaleza-small", small, **limits),
                pv_w=[0.21 * p for p in clear],
                load_w=house,
                buy_price_per_kwh=branca,
                sell_price_per_kwh=[FEED_IN_PER_KWH] * steps,
                initial_soc_fraction=0.5,
                target_soc_fraction=0.5,
                deferrable_loads=fortaleza_loads,
            ),
        ),
        ("export pays more than import, battery barred from the grid", premium),
        (
            "negative prices at noon (branch and bound)",
            DerProblem(
                site=Site("negative", big, **limits),
                pv_w=clear,
                load_w=house,
                buy_price_per_kwh=negative,
                sell_price_per_kwh=[min(p, FEED_IN_PER_KWH) for p in negative],
                initial_soc_fraction=0.5,
                target_soc_fraction=0.5,
                deferrable_loads=fortaleza_loads,
            ),
        ),
    ]


def _variants(problem: DerProblem, rng: random.Random) -> list[DerProblem]:
    out = [problem]
    for _ in range(VARIANTS - 1):
        out.append(
            replace(
                problem,
                pv_w=[p * (1 + 0.1 * rng.uniform(-1, 1)) for p in problem.pv_w],
                load_w=[w * (1 + 0.1 * rng.uniform(-1, 1)) for w in problem.load_w],
                initial_soc_fraction=min(
                    0.85, max(0.35, problem.initial_soc_fraction + rng.uniform(-0.1, 0.1))
                ),
            )
        )
    return out


def to_emhass(name: str, variants: list[DerProblem]) -> dict[str, Any]:
    """The problem in EMHASS's terms (see emhass_runner.py)."""
    first = variants[0]
    battery = first.site.battery
    steps = first.steps
    loads = []
    for load in first.deferrable_loads:
        hours = load.energy_wh / load.max_power_w
        loads.append(
            {
                "nominal_w": load.max_power_w,
                "hours": hours,
                "start": load.start_step,
                "end": 0 if load.end_step == steps else load.end_step,
                "single_constant": load.single_block,
            }
        )
    return {
        "name": name,
        "step_minutes": first.step_s // 60,
        "start": DAY.replace(tzinfo=None).isoformat(),
        "timezone": "America/Fortaleza",
        "battery": None
        if battery is None
        else {
            "capacity_wh": battery.capacity_wh,
            "charge_w": battery.max_charge_power_w,
            "discharge_w": battery.max_discharge_power_w,
            "charge_efficiency": battery.charge_efficiency,
            "discharge_efficiency": battery.discharge_efficiency,
            "soc_min": battery.soc_min_fraction,
            "soc_max": battery.soc_max_fraction,
        },
        "loads": loads,
        "no_charge_from_grid": battery is not None and not battery.grid_charging,
        "no_discharge_to_grid": battery is not None and not battery.grid_discharging,
        "max_from_grid": first.site.import_limit_w,
        "max_to_grid": first.site.export_limit_w,
        "mip_gap": MIP_GAP,
        "cold_runs": COLD_RUNS,
        "variants": [
            {
                "pv": list(v.pv_w),
                "load": list(v.load_w),
                "buy": list(v.buy_price_per_kwh),
                "sell": list(v.sell_price_per_kwh),
                "soc_init": v.initial_soc_fraction,
                "soc_final": v.target_soc_fraction,
            }
            for v in variants
        ],
    }


def emhass_flows(problem: DerProblem, plan: dict[str, Any]) -> PlanFlows:
    battery = problem.site.battery
    power = plan["battery_w"]
    charges = {battery.name: [max(0.0, -p) for p in power]} if battery else {}
    discharges = {battery.name: [max(0.0, p) for p in power]} if battery else {}
    return PlanFlows(
        import_w=plan["import_w"],
        export_w=plan["export_w"],
        charge_w=charges,
        discharge_w=discharges,
        deferrable_w={
            load.name: plan["deferrable_w"][k] for k, load in enumerate(problem.deferrable_loads)
        },
    )


# -- the runs --------------------------------------------------------------------------------


def _meterchain(variants: list[DerProblem]) -> dict[str, Any]:
    optimise(variants[0])  # imports, caches
    cold_s = []
    for _ in range(COLD_RUNS):
        started = time.perf_counter()
        cold = optimise(variants[0], mip_rel_gap=MIP_GAP)
        cold_s.append(time.perf_counter() - started)
    mpc = RecedingHorizon(mip_rel_gap=MIP_GAP)
    plans = [mpc.plan(variants[0])]
    warm_s = []
    for variant in variants[1:]:
        started = time.perf_counter()
        plans.append(mpc.plan(variant))
        warm_s.append(time.perf_counter() - started)
    return {
        "cold_s": cold_s,
        "warm_s": warm_s,
        "cold": cold,
        "plans": plans,
        "methods": sorted({p.method for p in plans} | {cold.method}),
    }


def _priced(problem: DerProblem, flows: PlanFlows) -> dict[str, Any]:
    checked = evaluate(problem, flows)
    return {
        "cost": round(checked.cost, 4),
        "feasible": checked.feasible,
        "violations": list(checked.violations[:3]),
        "target_shortfall_wh": round(checked.target_shortfall_wh, 1),
    }


def main() -> int:
    console = Console()
    rng = random.Random(20261124)
    cases = [(name, _variants(problem, rng)) for name, problem in _problems()]
    python, how = _ensure_emhass(console)
    results: dict[str, Any] = {
        "emhass": {"status": how},
        "variants": VARIANTS,
        "mip_rel_gap": MIP_GAP,
        "problems": [],
    }
    emhass_out: dict[str, Any] = {}
    if python is not None:
        with tempfile.TemporaryDirectory() as tmp:
            source, target = Path(tmp) / "problems.json", Path(tmp) / "plans.json"
            source.write_text(json.dumps({"problems": [to_emhass(n, v) for n, v in cases]}))
            console.print("EMHASS solving ...")
            run = subprocess.run(
                [str(python), str(BENCH / "emhass_runner.py"), str(source), str(target)],
                capture_output=True,
                text=True,
            )
            if run.returncode == 0:
                emhass_out = json.loads(target.read_text())
                results["emhass"]["version"] = emhass_out["emhass_version"]
            else:
                tail = (run.stderr.strip().splitlines() or ["no output"])[-1]
                results["emhass"]["status"] = f"EMHASS failed: {tail}"
    if not emhass_out:
        console.print(f"[yellow]EMHASS skipped:[/] {results['emhass']['status']}")
    by_name = {p["name"]: p for p in emhass_out.get("problems", [])}

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("meterchain solving", total=len(cases))
        for name, variants in cases:
            ours = _meterchain(variants)
            row: dict[str, Any] = {
                "problem": name,
                "meterchain": {
                    "cold": timing(ours["cold_s"]),
                    "warm": timing(ours["warm_s"]),
                    "methods": ours["methods"],
                    "plan": _priced(variants[0], PlanFlows.of(ours["cold"])),
                    "variants": [
                        _priced(v, PlanFlows.of(p))
                        for v, p in zip(variants, ours["plans"], strict=True)
                    ],
                },
            }
            theirs = by_name.get(name)
            if theirs is not None:
                row["emhass"] = {
                    "cold": timing(theirs["cold_s"]),
                    "warm": timing(theirs["warm_s"]),
                    "plan": _priced(variants[0], emhass_flows(variants[0], theirs["cold_plan"])),
                    "variants": [
                        _priced(v, emhass_flows(v, p))
                        for v, p in zip(variants, theirs["plans"], strict=True)
                    ],
                    "statuses": sorted({p["status"] for p in theirs["plans"]}),
                }
                mine, peer = row["meterchain"], row["emhass"]
                row["cold_speedup"] = round(
                    peer["cold"]["median_ms"] / mine["cold"]["median_ms"], 2
                )
                row["warm_speedup"] = round(
                    peer["warm"]["median_ms"] / mine["warm"]["median_ms"], 2
                )
                row["cost_difference"] = round(
                    sum(v["cost"] for v in mine["variants"])
                    - sum(v["cost"] for v in peer["variants"]),
                    4,
                )
            results["problems"].append(row)
            progress.advance(task)
    path = write_result("der_peers", results)

    table = Table(title="DER planning beside EMHASS (costs by meterchain.der.evaluate)")
    for column in (
        "problem",
        "cost mc / EMHASS",
        "feasible mc / EMHASS",
        "cold ms mc / EMHASS (x)",
        "warm ms mc / EMHASS (x)",
    ):
        table.add_column(column)
    for row in results["problems"]:
        mine = row["meterchain"]
        peer = row.get("emhass")
        feasible_mc = all(v["feasible"] for v in mine["variants"])
        if peer is None:
            table.add_row(
                row["problem"],
                f"{mine['plan']['cost']:.3f} / -",
                f"{feasible_mc} / -",
                f"{mine['cold']['median_ms']} / -",
                f"{mine['warm']['median_ms']} / -",
            )
            continue
        feasible_em = all(v["feasible"] for v in peer["variants"])
        table.add_row(
            row["problem"],
            f"{mine['plan']['cost']:.3f} / {peer['plan']['cost']:.3f}",
            f"{feasible_mc} / {feasible_em}",
            f"{mine['cold']['median_ms']} / {peer['cold']['median_ms']} ({row['cold_speedup']}x)",
            f"{mine['warm']['median_ms']} / {peer['warm']['median_ms']} ({row['warm_speedup']}x)",
        )
    console.print(table)
    console.print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
