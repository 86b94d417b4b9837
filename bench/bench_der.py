"""DER optimiser: solve times for one site and for 100, and a Fortaleza day against the baseline.

Run from the repository root: `.venv/bin/python bench/bench_der.py` (writes bench/results/der.json).

The sample house: 5 kWp of PV (pvlib clear-sky model for Fortaleza, -3.73, -38.52, computed
offline), a 10 kWh / 5 kW battery, a hand-made household profile of about 12 kWh a day with
the evening peak of an electric shower, and Enel Ceará's 'tarifa branca' for buying. The feed-in
price is an assumption (see FEED_IN_PER_KWH). The optimiser must end the day with the SoC the
baseline ended with, so both are compared from the same start to the same end state.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.der import (
    Battery,
    DeferrableLoad,
    DerProblem,
    DerSchedule,
    Site,
    optimise,
    orders_for_next_interval,
    run_baseline,
)
from meterchain.der.forecast import clear_sky_pv_w

LATITUDE, LONGITUDE = -3.73, -38.52
LOCAL = timezone(timedelta(hours=-3))  # America/Fortaleza, no daylight saving
DAY = datetime(2026, 11, 24, tzinfo=LOCAL)  # a Tuesday: the weekday tariff applies
STEPS, STEP_H = 96, 0.25

# Enel Ceará, tarifa branca, residential, R$/kWh before taxes (figures reported by the regional
# press in 2019, e.g. gazetadocariri.com, 2019-02): peak 17:30-20:30, intermediate one hour on
# each side, off-peak the rest of a weekday.
OFF_PEAK, INTERMEDIATE, PEAK = 0.56, 0.88, 1.44
# Assumption: what exported energy earns, below the cheapest retail price (under Lei 14.300
# exported energy no longer offsets the network share of the tariff).
FEED_IN_PER_KWH = 0.30

# Household demand per hour (W): air conditioning at night, a morning shower, lunch, and the
# evening peak of electric showers and lights. About 12 kWh a day.
HOUSE_HOURLY_W = [450, 450, 450, 450, 450, 450, 350, 600, 400, 300, 300, 300,
                  500, 350, 350, 350, 350, 500, 900, 1100, 900, 700, 550, 500]  # fmt: skip

BATTERY = Battery(
    capacity_wh=10_000,
    max_charge_power_w=5_000,
    max_discharge_power_w=5_000,
    charge_efficiency=0.95,
    discharge_efficiency=0.95,
    soc_min_fraction=0.1,
    soc_max_fraction=0.95,
)


def tarifa_branca(step: int) -> float:
    hour = (step % STEPS) * STEP_H
    if 17.5 <= hour < 20.5:
        return PEAK
    if 16.5 <= hour < 17.5 or 20.5 <= hour < 21.5:
        return INTERMEDIATE
    return OFF_PEAK


def house_load_w(scale: float = 1.0) -> list[float]:
    return [scale * HOUSE_HOURLY_W[int(k * STEP_H) % 24] for k in range(STEPS)]


def house_problem(
    pv_w: list[float],
    *,
    battery: Battery | None = BATTERY,
    load_w: list[float] | None = None,
    soc: float = 0.5,
    target: float | None = None,
    loads: list[DeferrableLoad] | None = None,
    site: Site | None = None,
) -> DerProblem:
    return DerProblem(
        site=site or Site("fortaleza-house", battery),
        pv_w=pv_w,
        load_w=load_w if load_w is not None else house_load_w(),
        buy_price_per_kwh=[tarifa_branca(k) for k in range(STEPS)],
        sell_price_per_kwh=[FEED_IN_PER_KWH] * STEPS,
        initial_soc_fraction=soc,
        target_soc_fraction=target,
        deferrable_loads=loads or [],
    )


def ev_and_washer() -> list[DeferrableLoad]:
    """An EV that charges 7 kWh between 18:00 and midnight at 1.4 to 7 kW, and a washing
    machine that runs one 1.5 kW hour between 08:00 and 18:00."""
    ev = DeferrableLoad("ev", 7_000, 72, 96, max_power_w=7_000, min_power_w=1_400)
    washer = DeferrableLoad("washer", 1_500, 32, 72, 1_500, min_power_w=1_500, single_block=True)
    return [ev, washer]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def timing(seconds: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "median_ms": round(statistics.median(ms), 2),
        "p95_ms": round(percentile(ms, 0.95), 2),
        "max_ms": round(max(ms), 2),
        "runs": len(ms),
    }


def time_solves(problem: DerProblem, runs: int) -> tuple[dict[str, Any], DerSchedule]:
    seconds, methods = [], []
    plan = optimise(problem)
    for _ in range(runs):
        started = time.perf_counter()
        plan = optimise(problem)
        seconds.append(time.perf_counter() - started)
        methods.append(plan.method)
    return {**timing(seconds), "methods": sorted(set(methods))}, plan


def random_site(rng: random.Random, clear_sky_1kwp: list[float], index: int) -> DerProblem:
    """A varied house: PV, battery, EV, washer and pool pump drawn at random (seeded)."""
    battery = None
    if rng.random() < 0.6:
        capacity = rng.uniform(5_000, 15_000)
        battery = Battery(capacity, capacity / 2, capacity / 2, 0.95, 0.95, 0.1, 0.95)
    loads: list[DeferrableLoad] = []
    if rng.random() < 0.4:
        loads.append(DeferrableLoad("ev", rng.uniform(3_000, 10_000), 72, 96, 7_000, 1_400))
    if rng.random() < 0.3:
        loads.append(DeferrableLoad("washer", 1_500, 32, 72, 1_500, 1_500, single_block=True))
    pool = rng.random() < 0.3
    if pool:  # runs on PV surplus only, so only where there is enough of it
        loads.append(DeferrableLoad("pool", 2_000, 28, 68, 1_000, surplus_only=True))
    kwp = rng.uniform(3.0 if pool else 0.0, 8.0)
    cloud = rng.uniform(0.6 if pool else 0.3, 1.0)
    site = Site(f"site-{index:03d}", battery, import_limit_w=15_000, export_limit_w=7_500)
    return house_problem(
        [kwp * cloud * p for p in clear_sky_1kwp],
        load_w=house_load_w(rng.uniform(0.6, 2.0)),
        soc=rng.uniform(0.1, 0.95),
        target=0.5 if battery else None,
        loads=loads,
        site=site,
    )


def rolling_day(pv_w: list[float]) -> dict[str, Any]:
    """Operate the house for a day: re-plan each interval over the next 24 h and apply step 0.

    The forecast is perfect (the same clear-sky day repeats), so this measures the solve time
    of an agent's real loop and what the receding horizon costs against one plan for the day.
    """
    load = house_load_w()
    soc = 0.5
    cost = 0.0
    solve_s, order_s = [], []
    for step in range(STEPS):
        window = [(step + k) % STEPS for k in range(STEPS)]
        problem = DerProblem(
            site=Site("fortaleza-house", BATTERY),
            pv_w=[pv_w[k] for k in window],
            load_w=[load[k] for k in window],
            buy_price_per_kwh=[tarifa_branca(k) for k in window],
            sell_price_per_kwh=[FEED_IN_PER_KWH] * STEPS,
            initial_soc_fraction=min(1.0, max(0.0, soc)),
            target_soc_fraction=0.5,
        )
        started = time.perf_counter()
        plan = optimise(problem)
        solve_s.append(time.perf_counter() - started)
        started = time.perf_counter()
        orders_for_next_interval(
            problem, plan, meter_id="m1", submitted_at=DAY, order_id_prefix=f"m1-{step}"
        )
        order_s.append(time.perf_counter() - started)
        first = plan.next_interval()
        cost += (first.import_wh * problem.buy_price_per_kwh[0]) / 1000
        cost -= (first.export_wh * problem.sell_price_per_kwh[0]) / 1000
        soc = plan.soc_wh[0] / BATTERY.capacity_wh
    return {
        "solve": timing(solve_s),
        "orders_for_next_interval": timing(order_s),
        "cost_brl": round(cost, 4),
        "end_soc_fraction": round(soc, 4),
    }


def compare(
    label: str,
    pv_w: list[float],
    *,
    battery: Battery = BATTERY,
    loads: list[DeferrableLoad] | None = None,
) -> dict[str, Any]:
    """Baseline and optimiser on the same day, same prices, same start and end SoC."""
    baseline = run_baseline(house_problem(pv_w, battery=battery, loads=loads))
    end_soc = baseline.soc_wh[-1] / battery.capacity_wh
    target = min(battery.soc_max_fraction, max(battery.soc_min_fraction, end_soc))
    optimised = optimise(house_problem(pv_w, battery=battery, target=target, loads=loads))
    no_battery = run_baseline(house_problem(pv_w, battery=None, loads=loads))
    grid_only = run_baseline(house_problem([0.0] * STEPS, battery=None, loads=loads))

    def summary(plan: DerSchedule) -> dict[str, float]:
        return {
            "cost_brl": round(plan.cost, 4),
            "import_kwh": round(plan.import_wh / 1000, 3),
            "export_kwh": round(plan.export_wh / 1000, 3),
            "end_soc_fraction": round(plan.soc_fraction[-1], 4) if plan.battery_capacity_wh else 0,
        }

    saving = baseline.cost - optimised.cost
    deferrable_kwh = sum(load.energy_wh for load in loads or []) / 1000
    return {
        "day": label,
        "pv_kwh": round(sum(pv_w) * STEP_H / 1000, 3),
        "load_kwh": round(sum(house_load_w()) * STEP_H / 1000 + deferrable_kwh, 3),
        "battery_kwh": battery.capacity_wh / 1000,
        "grid_only": summary(grid_only),
        "pv_only": summary(no_battery),
        "baseline_pv_battery": summary(baseline),
        "optimiser_pv_battery": summary(optimised),
        "optimiser_saving_brl": round(saving, 4),
    }


def main() -> int:
    console = Console()
    clear_sky = list(
        clear_sky_pv_w(DAY, latitude=LATITUDE, longitude=LONGITUDE, peak_power_w=5_000)
    )
    clear_sky_1kwp = [p / 5 for p in clear_sky]
    cloudy = [0.35 * p for p in clear_sky]
    results: dict[str, Any] = {
        "setup": {
            "location": {
                "latitude": LATITUDE,
                "longitude": LONGITUDE,
                "day": DAY.date().isoformat(),
            },
            "pv_kwp": 5.0,
            "battery": {"capacity_wh": 10_000, "power_w": 5_000, "round_trip": 0.95 * 0.95},
            "tariff_brl_per_kwh": {
                "off_peak": OFF_PEAK,
                "intermediate": INTERMEDIATE,
                "peak": PEAK,
                "feed_in": FEED_IN_PER_KWH,
            },
            "steps": STEPS,
            "step_s": 900,
        }
    }
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("one site, 30 solves x 2", total=2)
        plain, _ = time_solves(house_problem(clear_sky, target=0.5), 30)
        progress.advance(task)
        busy, _ = time_solves(house_problem(clear_sky, target=0.5, loads=ev_and_washer()), 30)
        progress.advance(task)
        results["one_site"] = {"pv_battery": plain, "pv_battery_ev_washer": busy}

        rng = random.Random(20261124)
        sites = [random_site(rng, clear_sky_1kwp, i) for i in range(100)]
        task = progress.add_task("100 sites", total=len(sites))
        per_site, methods = [], []
        started = time.perf_counter()
        for problem in sites:
            t0 = time.perf_counter()
            plan = optimise(problem)
            per_site.append(time.perf_counter() - t0)
            methods.append(plan.method)
            progress.advance(task)
        total_s = time.perf_counter() - started
        results["hundred_sites"] = {
            "total_s": round(total_s, 3),
            "per_site": timing(per_site),
            "methods": {m: methods.count(m) for m in sorted(set(methods))},
        }

        task = progress.add_task("rolling day, 96 re-plans", total=1)
        results["rolling_day_clear_sky"] = rolling_day(clear_sky)
        progress.advance(task)

    small = Battery(5_000, 2_500, 2_500, 0.95, 0.95, 0.1, 0.95)
    results["cost"] = [
        compare("sample: clear sky, 5 kWp, 10 kWh", clear_sky),
        compare("cloudy (35% of clear sky), 5 kWp, 10 kWh", cloudy),
        compare("cloudy, 3 kWp, 5 kWh", [0.6 * p for p in cloudy], battery=small),
        compare("clear sky, 5 kWp, 10 kWh, EV + washer", clear_sky, loads=ev_and_washer()),
    ]
    path = write_result("der", results)

    table = Table(title="DER optimiser (96 steps of 15 min)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for name, row in results["one_site"].items():
        table.add_row(f"one site, {name}: median / p95", f"{row['median_ms']} / {row['p95_ms']} ms")
    hundred = results["hundred_sites"]
    table.add_row("100 sites, total", f"{hundred['total_s']} s")
    roll = results["rolling_day_clear_sky"]
    table.add_row(
        "rolling day: solve / orders median",
        f"{roll['solve']['median_ms']} / {roll['orders_for_next_interval']['median_ms']} ms",
    )
    for day in results["cost"]:
        table.add_row(
            f"{day['day']}: grid only / PV only",
            f"R$ {day['grid_only']['cost_brl']:.2f} / R$ {day['pv_only']['cost_brl']:.2f}",
        )
        table.add_row(
            f"{day['day']}: baseline / optimiser",
            f"R$ {day['baseline_pv_battery']['cost_brl']:.2f} / "
            f"R$ {day['optimiser_pv_battery']['cost_brl']:.2f}",
        )
    console.print(table)
    console.print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
