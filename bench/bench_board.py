"""A board's memory and start-up (issue 13): a simulated day at high speed, as deployed.

One board agent (`meterchain agent run`) reads a simulated meter and drives a simulated battery
and PV inverter (`meterchain device serve`, SunSpec over loopback), trades through the real
market agent on anvil, over the community's secured broker, for a whole simulated day at
SPEED times real time. Measured on the board's process, from /proc:
* peak RSS (VmHWM, key unlock included) and RSS over the day;
* start-up: from the process's launch to its first meter reading, and to "ready";
* how long and how much memory unlocking the key takes, with the board's scrypt parameters
  (n = 2^14, r = 8, p = 5) and with the production ones (n = 2^18, p = 1);
* the import-time breakdown of the board's path, by package (`python -X importtime`).
Writes bench/results/board.json.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.agents.broker import start_mosquitto
from meterchain.chain.keystore import (
    BOARD_SCRYPT_N,
    BOARD_SCRYPT_P,
    PRODUCTION_SCRYPT_N,
    TEST_SCRYPT_N,
    create_keystore,
    keystore_address,
)
from meterchain.chain.node import start_anvil, stop_anvil

EXECUTABLE = str(Path(sys.executable).with_name("meterchain"))
SPEED = 720.0  # a simulated day in two minutes
DAY_S = 86400
METER_ID = "10000001"
AGENT = f"prosumer-{METER_ID}"
PASSWORD = "bench-password"
TARGET_PEAK_MB = 150
TARGET_FIRST_READING_S = 3.0
SCHEDULE = (
    "[schedule]\ninterval_s = 900\norder_lead_s = 450\ngate_closure_s = 150\n"
    "reading_delay_s = 30\nsettle_delay_s = 300\ntariff_lead_s = 30\n"
)
BOARD_IMPORTS = """
import meterchain.cli
from meterchain.agents import services
import meterchain.agents.board_config, meterchain.agents.forecasting, meterchain.agents.prosumer
import meterchain.board.supervisor, meterchain.der.equipment, meterchain.der.mpc
import meterchain.der.milp, meterchain.devices.board, meterchain.meters.registry, highspy
import meterchain.store.retention
"""


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def run(args: list[str], env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(
        [EXECUTABLE, *args], env=env, cwd=cwd, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"meterchain {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
    return result.stdout


def wait_line(path: Path, pattern: str, timeout_s: float = 60.0) -> tuple[str, float]:
    """The first match of `pattern` in a log file, and when it appeared (monotonic)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = re.search(pattern, text)
        if match:
            return match.group(0), time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"no {pattern!r} in {path}:\n{text[-2000:]}")


def key_unlock(n: int, p: int, root: Path) -> dict[str, float]:
    """Unlock a keystore with (n, p) in a fresh process: seconds, and the process's peak."""
    path = root / f"key-{n}-{p}.json"
    create_keystore(path, PASSWORD, scrypt_n=n, scrypt_p=p)
    code = f"""
import re, time
from pathlib import Path
from meterchain.chain.keystore import load_keystore
import eth_account  # the agent has it imported already when it unlocks
def rss():
    return int(re.search(r"VmRSS:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
before = rss()
started = time.perf_counter()
load_keystore(Path({str(path)!r}), {PASSWORD!r})
peak = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(time.perf_counter() - started, before, peak)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    seconds, before_kb, peak_kb = out.stdout.split()
    return {
        "n": n,
        "p": p,
        "unlock_s": round(float(seconds), 3),
        "rss_before_mb": round(int(before_kb) / 1024, 1),
        "peak_mb": round(int(peak_kb) / 1024, 1),
        "scrypt_mb": 128 * 8 * n / 2**20,
    }


def import_breakdown() -> dict[str, Any]:
    """Cumulative import time by top-level package on the board's path (-X importtime)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", BOARD_IMPORTS],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    by_package: dict[str, int] = defaultdict(int)
    total = 0
    for line in result.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+\d+ \|(\s*)(\S+)", line)
        if not match:
            continue
        self_us, module = int(match.group(1)), match.group(3)
        top = module.split(".")[0]
        if top == "meterchain":
            top = ".".join(module.split(".")[:2])
        by_package[top] += self_us
        total += self_us
    ranked = sorted(by_package.items(), key=lambda item: -item[1])
    return {
        "total_s": round(total / 1e6, 3),
        "by_package_ms": {name: round(us / 1000, 1) for name, us in ranked[:20]},
        "heavy_imported": sorted(
            m for m in ("pandas", "matplotlib", "pvlib", "scipy", "web3") if m in by_package
        ),
    }


def main() -> int:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="meterchain-board-bench-"))
    env = {**os.environ, "MCHAIN_KEY_PASSWORD": PASSWORD, "HOME": str(root)}
    broker = start_mosquitto(data_dir=root / "broker", agents=[AGENT])
    node = start_anvil(state_dir=root / "chain")
    processes: list[subprocess.Popen[bytes]] = []
    results: dict[str, Any] = {"speed": SPEED, "simulated_s": DAY_S}
    try:
        run(["chain", "deploy", "--rpc", node.rpc_url], env, root)
        run(["agent", "dev-keystore", "--keystore", "keys/operator.json"], env, root)
        run(["agent", "fund", "--grid", "--amount", "10000", "--mint"], env, root)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        virtual_start = start.replace(hour=3, minute=0, second=0)  # local midnight, Fortaleza
        clock = (
            f'[clock]\nspeed = {SPEED:g}\nstart = "{start.isoformat()}"\n'
            f'virtual_start = "{virtual_start.isoformat()}"\n'
        )
        site_log = root / "site.log"
        site = subprocess.Popen(
            [EXECUTABLE, "device", "serve", "--kind", "battery", "--kind", "pv", "--meter",
             "modbus", "--site-id", METER_ID, "--speed", f"{SPEED:g}",
             "--clock-start", start.isoformat(), "--virtual-start", virtual_start.isoformat()],
            stdout=site_log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=root,
        )  # fmt: skip
        processes.append(site)
        battery_url = wait_line(site_log, r"serving battery .* on (\S+)")[0].split(" on ")[-1]
        pv_url = wait_line(site_log, r"serving pv .* on (\S+)")[0].split(" on ")[-1]
        meter_url = wait_line(site_log, r"serving meter .* on (\S+)")[0].split(" on ")[-1]
        registers = json.loads(run(["meter", "read", meter_url, "--json"], env, root))
        create_keystore(
            root / "keys" / "board.json", PASSWORD, scrypt_n=BOARD_SCRYPT_N, scrypt_p=BOARD_SCRYPT_P
        )
        address = keystore_address(root / "keys" / "board.json")
        run(["agent", "register", "--meter-id", METER_ID, "--signer", address, "--kind",
             "prosumer", "--import-wh", str(int(registers["import_wh"])), "--export-wh",
             str(int(registers["export_wh"])), "--baseline-at",
             (virtual_start - timedelta(minutes=15)).isoformat()], env, root)  # fmt: skip
        run(["agent", "fund", "--meter-id", METER_ID, "--amount", "50", "--mint"], env, root)
        (root / "market.toml").write_text(
            'store = "sqlite:///var/market.db"\n[key]\nkeystore = "keys/operator.json"\n'
            + clock
            + SCHEDULE
            + broker.toml_section("market")
        )
        (root / "board.toml").write_text(
            f'meter_id = "{METER_ID}"\nmeter_url = "{meter_url}"\n'
            'store = "sqlite:///var/board.db"\n[key]\nkeystore = "keys/board.json"\n'
            "[site]\npv_kwp = 4.0\nhorizon_steps = 96\n"
            f'[devices]\nbattery = "{battery_url}"\nbattery_capacity_wh = 10000\n'
            f'battery_max_w = 3000\npv = "{pv_url}"\nexport_limit_w = 5000\n'
            + clock
            + SCHEDULE
            + broker.toml_section(AGENT)
        )
        market_log = root / "market.log"
        market = subprocess.Popen(
            [EXECUTABLE, "market", "run", "--config", "market.toml"],
            stdout=market_log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=root,
        )  # fmt: skip
        processes.append(market)
        wait_line(market_log, r"market agent .*: ready")
        while datetime.now(UTC) < start:  # the day starts for everyone at once
            time.sleep(0.05)

        board_log = root / "board.log"
        launched = time.monotonic()
        board = subprocess.Popen(
            [EXECUTABLE, "agent", "run", "--config", "board.toml"],
            stdout=board_log.open("wb"), stderr=subprocess.STDOUT, env=env, cwd=root,
        )  # fmt: skip
        processes.append(board)
        _, first_reading = wait_line(board_log, r"first reading")
        _, ready = wait_line(board_log, r"board agent .*: ready")
        results["start_to_first_reading_s"] = round(first_reading - launched, 3)
        results["start_to_ready_s"] = round(ready - launched, 3)
        samples: list[int] = []
        day_real_s = DAY_S / SPEED
        with Progress(console=console) as progress:
            task = progress.add_task("a simulated day on the board", total=day_real_s)
            while time.monotonic() - launched < day_real_s:
                if board.poll() is not None:
                    raise RuntimeError(f"the board died:\n{board_log.read_text()[-3000:]}")
                samples.append(status_kb(board.pid, "VmRSS"))
                progress.update(task, completed=time.monotonic() - launched)
                time.sleep(0.5)
        peak_kb = status_kb(board.pid, "VmHWM")
        log = board_log.read_text(errors="replace")
        results.update(
            {
                "peak_rss_mb": round(peak_kb / 1024, 1),
                "steady_rss_mb": round(samples[-1] / 1024, 1),
                "max_sampled_rss_mb": round(max(samples) / 1024, 1),
                "rss_mb_at_quarters_of_the_day": [
                    round(samples[min(len(samples) - 1, len(samples) * q // 4)] / 1024, 1)
                    for q in range(5)
                ],
                "readings_sent": len(re.findall(r"sent the reading of interval", log)),
                "orders_sent": len(re.findall(r"sent \d+ orders for interval", log)),
                "clearings_heard": len(
                    re.findall(r"cleared interval", market_log.read_text(errors="replace"))
                ),
                "tracebacks": log.count("Traceback"),
            }
        )
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_anvil(node)
        broker.stop()

    results["key_unlock"] = [
        key_unlock(BOARD_SCRYPT_N, BOARD_SCRYPT_P, root),
        key_unlock(PRODUCTION_SCRYPT_N, 1, root),
        key_unlock(TEST_SCRYPT_N, 1, root),
    ]
    results["imports"] = import_breakdown()
    results["targets"] = {
        "peak_rss_mb": TARGET_PEAK_MB,
        "start_to_first_reading_s": TARGET_FIRST_READING_S,
        "met": results["peak_rss_mb"] < TARGET_PEAK_MB
        and results["start_to_first_reading_s"] < TARGET_FIRST_READING_S,
    }
    path = write_result("board", results)

    table = Table(title=f"board agent, a simulated day at {SPEED:g}x")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("peak_rss_mb", "steady_rss_mb", "start_to_first_reading_s", "start_to_ready_s",
                "readings_sent", "orders_sent", "clearings_heard"):  # fmt: skip
        table.add_row(key, str(results[key]))
    for unlock in results["key_unlock"]:
        table.add_row(
            f"unlock n=2^{unlock['n'].bit_length() - 1} p={unlock['p']}",
            f"{unlock['unlock_s']} s, peak {unlock['peak_mb']} MB",
        )
    table.add_row("imports (total)", f"{results['imports']['total_s']} s")
    for name, ms in list(results["imports"]["by_package_ms"].items())[:10]:
        table.add_row(f"  {name}", f"{ms} ms")
    console.print(table)
    console.print(f"results in {path}")
    return 0 if results["targets"]["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
