"""requirements-board.lock, what a board installs, stays in step with the code and the main lock.

`make check-arm` (scripts/check_arm_wheels.py) checks each of its lines has an ARM wheel on
PyPI; that needs the network, so it runs in CI's set-up, not here. These tests need nothing
outside the machine: the board lock pins what requirements.lock pins, and everything the board
agent imports comes from a package in it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.strip().split("==")
            found[re.sub(r"[-_.]+", "-", name).lower()] = version
    return found


def test_the_board_lock_pins_what_the_main_lock_pins() -> None:
    board, main = pins(ROOT / "requirements-board.lock"), pins(ROOT / "requirements.lock")
    assert {name: main.get(name) for name in board} == board
    for operator_only in ("web3", "pandas", "matplotlib", "pvlib", "scipy", "fastapi", "psycopg"):
        assert operator_only not in board, operator_only


def test_everything_the_board_agent_imports_is_in_the_board_lock(tmp_path: Path) -> None:
    code = """
import importlib.metadata as md, json, sys
import meterchain.cli
from meterchain.agents import services
import meterchain.agents.board_config, meterchain.agents.forecasting, meterchain.agents.prosumer
import meterchain.board.supervisor, meterchain.board.install, meterchain.board.status
import meterchain.der.equipment, meterchain.der.mpc, meterchain.der.milp, highspy
import meterchain.devices.board, meterchain.meters.registry, meterchain.store.retention
from meterchain.chain.keystore import load_keystore, encrypt_v3
import tomli_w, eth_keyfile, Crypto.Cipher.AES
for url in ["modbus+tcp://127.0.0.1:1?unit=1", "dlms+tcp://127.0.0.1:1?client=16&server=1",
            "iec62056-21+tcp://127.0.0.1:1", "nbr14522+tcp://127.0.0.1:1"]:
    meterchain.meters.registry.open_meter(url)
distributions = md.packages_distributions()
top = {m.split(".")[0] for m in sys.modules}
print(json.dumps(sorted({d for t in top for d in distributions.get(t, [])})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    imported = {re.sub(r"[-_.]+", "-", d).lower() for d in json.loads(result.stdout)}
    board = pins(ROOT / "requirements-board.lock")
    # meterchain itself; setuptools/pip come with any Python environment; SQLAlchemy imports
    # greenlet when it happens to be installed (its asyncio extra), and works without it.
    assert imported - set(board) - {"meterchain", "setuptools", "pip", "greenlet"} == set()
