"""The memory each deployed process needs: peak and steady resident set size (RSS).

A community as docs/deployment.md sets it up, one process per role: Mosquitto, anvil, the
three simulated meters (Modbus, DLMS/COSEM, NBR 14522), the market, the grid and three boards,
at 60 times real time for a few intervals. Keys are made with the production scrypt work
factor (unlocking one is the largest single allocation of a board or the market), and one more
board runs with a lighter key to show what that costs. The one-shot commands of the set-up
(make a key, deploy, register, fund) are measured too.

Peak = VmHWM (the most the process ever held), steady = VmRSS at the end, from
/proc/PID/status; for one-shot commands, the child's ru_maxrss. Writes
bench/results/process_memory.json.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bench.common import write_result
from meterchain.agents.broker import free_port, start_mosquitto
from meterchain.chain.node import start_anvil, stop_anvil

EXECUTABLE = str(Path(sys.executable).with_name("meterchain"))
SPEED = 60
RUN_S = 75.0  # five 15-minute intervals at 60x
PASSWORD = "bench-password"
METERS = [("10000001", "modbus", "pv-house", 4.0), ("10000002", "dlms", "house", 0.0),
          ("10000003", "nbr14522", "pv-house", 4.0)]  # fmt: skip
LIGHT_METER = ("10000004", "modbus", "house", 0.0)
LIGHT_SCRYPT_N = 2**14
URLS = {
    "modbus": "modbus+tcp://127.0.0.1:{port}?unit=1&map=sdm630",
    "dlms": "dlms+tcp://127.0.0.1:{port}?client=16&server=1",
    "nbr14522": "nbr14522+tcp://127.0.0.1:{port}",
}


def status_kb(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) if match else 0


def one_shot(args: list[str], env: dict[str, str], cwd: Path) -> tuple[str, int]:
    """Run a command to its end; (its output, its peak RSS in kB)."""
    process = subprocess.Popen(
        [EXECUTABLE, *args], env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    output = process.stdout.read().decode()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"meterchain {' '.join(args)} failed:\n{output}")
    return output, int(usage.ru_maxrss)


def clock_section(start: datetime, virtual_start: datetime) -> str:
    return (
        f'[clock]\nspeed = {SPEED}\nstart = "{start.isoformat()}"\n'
        f'virtual_start = "{virtual_start.isoformat()}"\n'
    )


def main() -> int:
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="meterchain-memory-"))
    env = {**os.environ, "MCHAIN_KEY_PASSWORD": PASSWORD, "HOME": str(root)}
    (root / "logs").mkdir()
    board_agents = [f"prosumer-{meter_id}" for meter_id, *_ in [*METERS, LIGHT_METER]]
    broker = start_mosquitto(data_dir=root / "broker", agents=board_agents)
    node = start_anvil(state_dir=root / "chain")
    processes: dict[str, subprocess.Popen[bytes]] = {}
    one_shots: dict[str, int] = {}
    try:
        _, one_shots["chain deploy"] = one_shot(
            ["chain", "deploy", "--rpc", node.rpc_url], env, root
        )
        _, one_shots["agent dev-keystore"] = one_shot(
            ["agent", "dev-keystore", "--keystore", "keys/operator.json"], env, root
        )
        one_shot(["agent", "fund", "--grid", "--amount", "10000", "--mint"], env, root)
        start = datetime.now(UTC).replace(microsecond=0)
        virtual_start = start.replace(hour=13, minute=0, second=0) + timedelta(days=1)
        shared = clock_section(start, virtual_start)
        for meter_id, protocol, profile, pv_kwp in [*METERS, LIGHT_METER]:
            port = free_port()
            name = (
                f"meter serve ({protocol})" if meter_id != LIGHT_METER[0] else "meter serve (4th)"
            )
            processes[name] = subprocess.Popen(
                [EXECUTABLE, "meter", "serve", "--protocol", protocol, "--meter-id", meter_id,
                 "--profile", profile, "--port", str(port), "--speed", str(SPEED),
                 "--clock-start", start.isoformat(), "--virtual-start", virtual_start.isoformat()],
                env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            light = meter_id == LIGHT_METER[0]
            key_args = ["--scrypt-n", str(LIGHT_SCRYPT_N)] if light else []
            address, peak = one_shot(
                ["chain", "key", "new", "--keystore", f"keys/board-{meter_id}.json", *key_args],
                env,
                root,
            )
            one_shots["chain key new (light key)" if light else "chain key new"] = peak
            _, one_shots["chain key address"] = one_shot(
                ["chain", "key", "address", "--keystore", f"keys/board-{meter_id}.json"], env, root
            )
            kind = "prosumer" if pv_kwp else "consumer"
            _, one_shots["agent register"] = one_shot(
                ["agent", "register", "--meter-id", meter_id, "--signer", address.strip(),
                 "--kind", kind],
                env, root,
            )  # fmt: skip
            _, one_shots["agent fund"] = one_shot(
                ["agent", "fund", "--meter-id", meter_id, "--amount", "50", "--mint"], env, root
            )
            (root / f"board-{meter_id}.toml").write_text(
                f'meter_id = "{meter_id}"\nmeter_url = "{URLS[protocol].format(port=port)}"\n'
                f'store = "sqlite:///var/board-{meter_id}.db"\n'
                f'[key]\nkeystore = "keys/board-{meter_id}.json"\n'
                f"[site]\npv_kwp = {pv_kwp}\n"
                + shared
                + broker.toml_section(f"prosumer-{meter_id}")
            )
        (root / "market.toml").write_text(
            'store = "sqlite:///var/market.db"\n[key]\nkeystore = "keys/operator.json"\n'
            + shared
            + broker.toml_section("market")
        )
        (root / "grid.toml").write_text(shared + broker.toml_section("grid"))
        roles = {
            "market run": ["market", "run", "--config", "market.toml"],
            "grid run": ["grid", "run", "--config", "grid.toml"],
            **{
                f"agent run ({protocol})": ["agent", "run", "--config", f"board-{meter_id}.toml"]
                for meter_id, protocol, _, _ in METERS
            },
            "agent run (light key)": ["agent", "run", "--config", f"board-{LIGHT_METER[0]}.toml"],
        }
        for name, args in roles.items():
            log = (root / "logs" / f"{name.split()[0]}-{len(processes)}.log").open("wb")
            processes[name] = subprocess.Popen(
                [EXECUTABLE, *args], env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT
            )
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task(f"community at {SPEED}x", total=RUN_S)
            begun = time.monotonic()
            while (elapsed := time.monotonic() - begun) < RUN_S:
                for name, process in processes.items():
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited early ({process.returncode})")
                progress.update(task, completed=elapsed)
                time.sleep(1)
        market_log = next((root / "logs").glob("market-*.log")).read_text()
        deliveries = market_log.count("settled the delivery of interval")
        processes["anvil (node)"] = node.process  # type: ignore[assignment]
        processes["mosquitto"] = broker.process
        measured = {
            name: {"peak_kb": status_kb(p.pid, "VmHWM"), "steady_kb": status_kb(p.pid, "VmRSS")}
            for name, p in processes.items()
        }
    finally:
        for name, process in processes.items():
            if name not in ("anvil (node)", "mosquitto") and process.poll() is None:
                process.terminate()
        for name, process in processes.items():
            if name not in ("anvil (node)", "mosquitto"):
                process.wait(timeout=20)
        stop_anvil(node)
        broker.stop()
    table = Table(title=f"memory per process ({deliveries} deliveries settled meanwhile)")
    for column in ("process", "peak RSS (MB)", "steady RSS (MB)"):
        table.add_column(column, justify="left" if column == "process" else "right")
    for name, sizes in measured.items():
        table.add_row(name, f"{sizes['peak_kb'] / 1024:.0f}", f"{sizes['steady_kb'] / 1024:.0f}")
    for name, peak_kb in one_shots.items():
        table.add_row(f"(once) {name}", f"{peak_kb / 1024:.0f}", "-")
    console.print(table)
    results: dict[str, Any] = {
        "speed": SPEED,
        "run_s": RUN_S,
        "deliveries_settled": deliveries,
        "light_key_scrypt_n": LIGHT_SCRYPT_N,
        "processes": measured,
        "one_shot_peak_kb": one_shots,
    }
    print(write_result("process_memory", results))
    return 0 if deliveries >= 2 else 1


if __name__ == "__main__":
    sys.exit(main())
