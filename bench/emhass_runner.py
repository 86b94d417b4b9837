"""Solve the peer benchmark's problems with EMHASS; run by EMHASS's own virtual environment.

Usage: `bench/.emhass-venv/bin/python bench/emhass_runner.py problems.json plans.json`.
It imports nothing from meterchain (EMHASS pins other versions of numpy and pandas) and writes
only its plans and timings; bench/bench_der_peers.py prices and checks them with meterchain's
independent evaluator. Problems arrive in EMHASS's own terms (see `to_emhass` there).

Cold: a new `Optimization` object per solve (EMHASS builds its cvxpy problem, then solves).
Warm: one object solving the problem's variants in turn, so EMHASS re-uses its cached problem
and only updates its parameters, as its MPC does.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import pathlib
import sys
import tempfile
import time
from typing import Any

import emhass
import numpy as np
import orjson
import pandas as pd
from emhass import utils
from emhass.optimization import Optimization

ROOT = pathlib.Path(emhass.__file__).parent


def _conf() -> tuple[dict[str, Any], logging.Logger]:
    data_path = pathlib.Path(tempfile.mkdtemp(prefix="emhass-bench-"))
    conf = {
        "data_path": data_path,
        "root_path": ROOT,
        "defaults_path": ROOT / "data/config_defaults.json",
        "associations_path": ROOT / "data/associations.csv",
    }
    logger = logging.getLogger("emhass-bench")
    logger.setLevel(logging.ERROR)
    return conf, logger


async def _defaults(conf: dict[str, Any], logger: logging.Logger) -> dict[str, Any]:
    config = await utils.build_config(conf, logger, conf["defaults_path"])
    _, secrets = await utils.build_secrets(conf, logger, no_response=True)
    params: dict[str, Any] = await utils.build_params(conf, secrets, config, logger)
    return params


def _optimization(
    problem: dict[str, Any], base: dict[str, Any], conf: dict[str, Any], logger: logging.Logger
) -> Optimization:
    params = json.loads(json.dumps(base))
    params["retrieve_hass_conf"]["optimization_time_step"] = problem["step_minutes"]
    params["retrieve_hass_conf"]["time_zone"] = problem["timezone"]
    rh, oc, pc = utils.get_yaml_parse(orjson.dumps(params).decode("utf-8"), logger)
    loads = problem["loads"]
    battery = problem["battery"]
    oc.update(
        {
            "costfun": "profit",
            "set_use_pv": True,
            "set_use_battery": battery is not None,
            "number_of_deferrable_loads": len(loads),
            "nominal_power_of_deferrable_loads": [x["nominal_w"] for x in loads],
            "minimum_power_of_deferrable_loads": [0.0] * len(loads),
            "operating_hours_of_each_deferrable_load": [x["hours"] for x in loads],
            "treat_deferrable_load_as_semi_cont": [True] * len(loads),
            "set_deferrable_load_single_constant": [x["single_constant"] for x in loads],
            "start_timesteps_of_each_deferrable_load": [x["start"] for x in loads],
            "end_timesteps_of_each_deferrable_load": [x["end"] for x in loads],
            "set_deferrable_startup_penalty": [0.0] * len(loads),
            "set_deferrable_max_startups": [0] * len(loads),
            "def_minimum_on_time": [0] * len(loads),
            "def_minimum_off_time": [0] * len(loads),
            "is_electric_load": [True] * len(loads),
            "cost_forecast_per_deferrable_load": [None] * len(loads),
            "deferrable_load_max_cost": [0.0] * len(loads),
            "lp_solver_mip_rel_gap": problem["mip_gap"],
            "set_nocharge_from_grid": problem["no_charge_from_grid"],
            "set_nodischarge_to_grid": problem["no_discharge_to_grid"],
            "num_threads": 1,
        }
    )
    pc.update(
        {
            "compute_curtailment": False,
            "inverter_is_hybrid": False,
            "maximum_power_from_grid": problem["max_from_grid"],
            "maximum_power_to_grid": problem["max_to_grid"],
        }
    )
    if battery is not None:
        pc.update(
            {
                "number_of_batteries": 1,
                "battery_nominal_energy_capacity": battery["capacity_wh"],
                "battery_charge_power_max": battery["charge_w"],
                "battery_discharge_power_max": battery["discharge_w"],
                "battery_charge_efficiency": battery["charge_efficiency"],
                "battery_discharge_efficiency": battery["discharge_efficiency"],
                "battery_minimum_state_of_charge": battery["soc_min"],
                "battery_maximum_state_of_charge": battery["soc_max"],
            }
        )
    return Optimization(rh, oc, pc, "unit_load_cost", "unit_prod_price", "profit", conf, logger)


def _solve(opt: Optimization, problem: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    n = len(variant["pv"])
    index = pd.date_range(
        problem["start"], periods=n, freq=f"{problem['step_minutes']}min", tz=problem["timezone"]
    )
    buy, sell = np.asarray(variant["buy"]), np.asarray(variant["sell"])
    frame = pd.DataFrame({"unit_load_cost": buy, "unit_prod_price": sell}, index=index)
    loads = problem["loads"]
    result = opt.perform_optimization(
        frame,
        np.asarray(variant["pv"]),
        np.asarray(variant["load"]),
        buy,
        sell,
        soc_init=variant["soc_init"],
        soc_final=variant["soc_final"],
        def_total_hours=[x["hours"] for x in loads],
        def_start_timestep=[x["start"] for x in loads],
        def_end_timestep=[x["end"] for x in loads],
    )
    battery = result["P_batt"] if "P_batt" in result else pd.Series(np.zeros(n))
    return {
        "status": str(opt.optim_status),
        "import_w": [float(v) for v in result["P_grid_pos"]],
        "export_w": [float(-v) for v in result["P_grid_neg"]],
        "battery_w": [float(v) for v in battery],  # + discharging
        "deferrable_w": [[float(v) for v in result[f"P_deferrable{k}"]] for k in range(len(loads))],
    }


def main() -> int:
    source, target = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    problems = json.loads(source.read_text())["problems"]
    conf, logger = _conf()
    base = asyncio.run(_defaults(conf, logger))
    out = []
    for problem in problems:
        variants = problem["variants"]
        # cold: a new object for every solve; the first is a warm-up (imports, caches)
        _solve(_optimization(problem, base, conf, logger), problem, variants[0])
        cold_s = []
        cold_plan: dict[str, Any] = {}
        for _ in range(problem["cold_runs"]):
            started = time.perf_counter()
            cold_plan = _solve(_optimization(problem, base, conf, logger), problem, variants[0])
            cold_s.append(time.perf_counter() - started)
        # warm: one object, the variants in turn (the first builds the cached problem)
        kept = _optimization(problem, base, conf, logger)
        plans = [_solve(kept, problem, variants[0])]
        warm_s = []
        for variant in variants[1:]:
            started = time.perf_counter()
            plans.append(_solve(kept, problem, variant))
            warm_s.append(time.perf_counter() - started)
        out.append(
            {
                "name": problem["name"],
                "cold_s": cold_s,
                "warm_s": warm_s,
                "cold_plan": cold_plan,
                "plans": plans,
            }
        )
    version = importlib.metadata.version("emhass")
    target.write_text(json.dumps({"emhass_version": version, "problems": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
