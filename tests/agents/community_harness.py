"""A deployed community on one machine, for the end-to-end and fault tests.

Everything is real and separate: a Mosquitto broker (with persistent sessions on disk), an
anvil node (with its state on disk, so it can be stopped and started again), the contract
suite, one `meterchain meter serve` process per meter, one `meterchain agent run` process per
board and one `meterchain market run` process, all on a virtual clock running `SPEED` times
faster than real time. The checks read the chain, the market's store and the boards' stores.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from meterchain.agents.broker import Broker, start_mosquitto
from meterchain.chain.batch import (
    MeterAccountState,
    Metered,
    advance,
    decode_positions,
    decode_settlements,
    measure_reading,
    settle_meter,
)
from meterchain.chain.client import (
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite
from meterchain.chain.deployment import Deployment, save_deployment
from meterchain.chain.keystore import TEST_SCRYPT_N, create_keystore
from meterchain.chain.node import AnvilNode, connect, dev_account, start_anvil, stop_anvil
from meterchain.chain.sender import TransactionSender
from meterchain.chain.signing import ReadingMessage, meter_id_to_bytes32
from meterchain.chain.units import to_units
from meterchain.clock import ManualClock
from meterchain.meters.sim.physical import build_profile_meter
from meterchain.meters.sim.registry import client_url
from meterchain.store.db import open_store
from meterchain.store.records import Records

PASSWORD = "community-test-password"
SPEED = 300.0
INTERVAL_S = 900  # virtual: 3 s of real time at SPEED
SCHEDULE: dict[str, float] = {
    "interval_s": INTERVAL_S,
    "order_lead_s": 450,
    "gate_closure_s": 150,
    "reading_delay_s": 30,
    "settle_delay_s": 300,
    "tariff_lead_s": 30,
}
METER_CREDIT = 200  # currency units deposited for each meter
MAX_POWER_W = 15_000
GRID_CREDIT = 10_000
MARKET = "market"
LOG_LEVEL = os.environ.get("MCHAIN_TEST_LOG_LEVEL", "info")
MECHANISM = "pay-as-clear"
OBSERVERS = ("chaos-observer",)
EXECUTABLE = str(Path(sys.executable).with_name("meterchain"))


@dataclass(frozen=True)
class MeterSpec:
    meter_id: str
    protocol: str
    profile: str  # of `meter serve`: house, pv-house, flat
    pv_kwp: float = 0.0

    @property
    def agent(self) -> str:
        return f"prosumer-{self.meter_id}"


PV_HOUSE = MeterSpec("10000001", "modbus", "pv-house", pv_kwp=4.0)
HOUSE = MeterSpec("10000002", "dlms", "house")
NBR_PV_HOUSE = MeterSpec("10000003", "nbr14522", "pv-house", pv_kwp=4.0)


@dataclass
class Process:
    """A child process with its output in a log file."""

    name: str
    args: list[str]
    log: Path
    env: dict[str, str]
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n=== start {' '.join(self.args)}\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_output(self, pattern: str, timeout_s: float = 30.0, *, after: int = 0) -> str:
        """The first match of `pattern` in the log past offset `after`; fails if it dies."""
        deadline = time.monotonic() + timeout_s
        while True:
            text = self.output()
            match = re.search(pattern, text[after:])
            if match:
                return match.group(0)
            if self.popen is not None and self.popen.poll() is not None:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.returncode}):\n{text[-3000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name}: no {pattern!r} within {timeout_s:g} s:\n{text[-3000:]}"
                )
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive:
            assert self.popen is not None
            os.kill(self.popen.pid, signum)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not go."""
        if self.popen is None:
            return None
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            return None

    def kill(self) -> None:
        if self.popen is not None:
            self.signal(signal.SIGKILL)
            self.popen.wait()


@dataclass
class Community:
    root: Path
    broker: Broker
    node: AnvilNode
    deployment: Deployment
    market: EnergyMarketClient  # read-only use by the test
    meters: list[MeterSpec]
    clock_start: datetime
    virtual_start: datetime
    env: dict[str, str]
    meter_servers: dict[str, Process] = field(default_factory=dict)
    boards: dict[str, Process] = field(default_factory=dict)
    market_process: Process | None = None
    grid_process: Process | None = None
    schedule: dict[str, float] = field(default_factory=lambda: dict(SCHEDULE))
    meter_urls: dict[str, str] = field(default_factory=dict)
    funded_units: int = 0
    first_full_interval: int = 0  # the first interval every board was up for

    # ---- time ---------------------------------------------------------------------------------

    def virtual_now(self) -> datetime:
        return self.virtual_start + (datetime.now(UTC) - self.clock_start) * SPEED

    def current_interval(self) -> int:
        return int(self.virtual_now().timestamp()) // INTERVAL_S * INTERVAL_S

    def sleep_virtual(self, seconds: float) -> None:
        time.sleep(seconds / SPEED)

    def sleep_until_virtual(self, moment: datetime) -> None:
        remaining = (moment - self.virtual_now()).total_seconds()
        if remaining > 0:
            time.sleep(remaining / SPEED)

    def interval_moment(self, interval: int, offset_s: float) -> datetime:
        return datetime.fromtimestamp(interval, UTC) + timedelta(seconds=offset_s)

    # ---- chain --------------------------------------------------------------------------------

    def delivered_intervals(self) -> list[int]:
        return sorted(int(e["args"]["interval"]) for e in self.market.events("DeliverySettled"))

    def batch_intervals(self) -> list[int]:
        return sorted(int(e["args"]["interval"]) for e in self.market.events("BatchSettled"))

    def wait_until_delivered(
        self, predicate: Callable[[list[int]], bool], timeout_s: float, what: str
    ) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            with contextlib.suppress(Exception):  # the node may be restarting
                delivered = self.delivered_intervals()
                if predicate(delivered):
                    return delivered
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout_s:g} s; logs:\n{self.logs_tail()}")
            time.sleep(0.2)

    def restart_node(self, down_s: float) -> None:
        """Stop anvil (it saves its chain), wait, start it again on the same port and state."""
        port, state_dir = self.node.port, self.node.state_dir
        stop_anvil(self.node)
        time.sleep(down_s)
        self.node = start_anvil(port=port, state_dir=state_dir)

    # ---- processes ----------------------------------------------------------------------------

    def process(self, name: str, args: list[str]) -> Process:
        return Process(name, args, self.root / "logs" / f"{name}.log", self.env)

    def start_meter(self, spec: MeterSpec) -> None:
        server = self.process(
            f"meter-{spec.meter_id}",
            [
                EXECUTABLE, "meter", "serve", "--protocol", spec.protocol, "--meter-id",
                spec.meter_id, "--profile", spec.profile, "--speed", f"{SPEED:g}",
                "--clock-start", self.clock_start.isoformat(),
                "--virtual-start", self.virtual_start.isoformat(),
            ],
        )  # fmt: skip
        server.start()
        line = server.wait_for_output(r"serving .* on 127\.0\.0\.1:\d+")
        port = int(line.rsplit(":", 1)[1])
        self.meter_servers[spec.meter_id] = server
        self.meter_urls[spec.meter_id] = client_url(spec.protocol, port)

    def board_config(self, spec: MeterSpec) -> Path:
        path = self.root / f"board-{spec.meter_id}.toml"
        path.write_text(
            f'meter_id = "{spec.meter_id}"\n'
            f'meter_url = "{self.meter_urls[spec.meter_id]}"\n'
            "meter_timeout_s = 0.3\nmeter_retries = 2\n"
            f'store = "sqlite:///{self.root / f"board-{spec.meter_id}.db"}"\n'
            f'[key]\nkeystore = "{self.root / f"board-{spec.meter_id}.json"}"\n'
            f'[market]\ndeployment = "{self.root / "deployment.json"}"\n'
            f"[site]\npv_kwp = {spec.pv_kwp}\ndaily_kwh = 8.0\nhorizon_steps = 16\n"
            + self._shared_sections(spec.agent)
        )
        return path

    def market_config(self) -> Path:
        path = self.root / "market.toml"
        path.write_text(
            f'name = "{MARKET}"\n'
            f'deployment = "{self.root / "deployment.json"}"\n'
            f'store = "sqlite:///{self.root / "market.db"}"\n'
            f'mechanism = "{MECHANISM}"\n'
            "chain_retry_max_s = 0.5\n"
            f'[key]\nkeystore = "{self.root / "operator.json"}"\n' + self._shared_sections(MARKET)
        )
        return path

    def grid_config(self, retail_price: float, feed_in_price: float) -> Path:
        path = self.root / "grid.toml"
        shared = self._shared_sections("grid").split("[tariffs]")[0]
        path.write_text(
            'name = "grid"\n'
            + shared
            + f"[tariffs]\nretail_price = {retail_price}\nfeed_in_price = {feed_in_price}\n"
        )
        return path

    def start_grid(self, retail_price: float, feed_in_price: float) -> Process:
        grid = self.process(
            "grid",
            [
                EXECUTABLE, "grid", "run", "--config",
                str(self.grid_config(retail_price, feed_in_price)), "--log-level", LOG_LEVEL,
            ],
        )  # fmt: skip
        grid.start()
        grid.wait_for_output(r"grid agent .*: ready")
        self.grid_process = grid
        return grid

    def _shared_sections(self, agent: str) -> str:
        """[broker] (logged in as `agent`, over TLS), [clock], [schedule] and [tariffs]."""
        schedule = "".join(f"{k} = {v}\n" for k, v in self.schedule.items())
        return (
            self.broker.toml_section(agent)
            + f'[clock]\nspeed = {SPEED:g}\nstart = "{self.clock_start.isoformat()}"\n'
            f'virtual_start = "{self.virtual_start.isoformat()}"\n'
            f"[schedule]\n{schedule}"
            "[tariffs]\nretail_price = 0.80\nfeed_in_price = 0.30\n"
        )

    def start_board(self, spec: MeterSpec) -> Process:
        return self.start_boards([spec])[0]

    def start_boards(self, specs: list[MeterSpec]) -> list[Process]:
        """Start the boards' agents side by side; return once every one is ready."""
        started = []
        for spec in specs:
            board = self.boards.get(spec.meter_id) or self.process(
                f"board-{spec.meter_id}",
                [
                    EXECUTABLE, "agent", "run", "--config", str(self.board_config(spec)),
                    "--log-level", LOG_LEVEL,
                ],
            )  # fmt: skip
            offset = len(board.output()) if board.log.exists() else 0
            board.start()
            self.boards[spec.meter_id] = board
            started.append((board, offset))
        for board, offset in started:
            board.wait_for_output(r"board agent .*: ready", after=offset)
        return [board for board, _ in started]

    def first_interval_read_after(self, moment: datetime) -> int:
        """The first interval whose end-of-interval reading is due after `moment`."""
        due = int(moment.timestamp()) - INTERVAL_S - int(self.schedule["reading_delay_s"])
        return (due // INTERVAL_S + 1) * INTERVAL_S

    def start_market(self, *, log_format: str = "text") -> Process:
        market = self.market_process or self.process(
            "market",
            [
                EXECUTABLE, "market", "run", "--config", str(self.market_config()),
                "--log-level", LOG_LEVEL,
                *(["--log-format", log_format] if log_format != "text" else []),
            ],
        )  # fmt: skip
        offset = len(market.output()) if market.log.exists() else 0
        market.start()
        market.wait_for_output(r"market agent .*: ready", after=offset)
        self.market_process = market
        return market

    def all_processes(self) -> list[Process]:
        found = [*self.boards.values(), *self.meter_servers.values()]
        found += [p for p in (self.market_process, self.grid_process) if p is not None]
        return found

    def stop_agents(self) -> None:
        for process in [*self.boards.values(), self.market_process, self.grid_process]:
            if process is not None:
                process.stop()

    def close(self) -> None:
        for process in self.all_processes():
            process.stop(timeout_s=5)
        with contextlib.suppress(Exception):
            stop_anvil(self.node)
        self.broker.stop()

    def read_registers(self) -> dict[str, tuple[float, float]]:
        """Each meter's import and export registers (Wh), read from the meter itself."""
        from meterchain.meters.registry import open_meter

        async def read(url: str) -> tuple[float, float]:
            meter = open_meter(url, timeout_s=2.0)
            try:
                reading = await meter.read()
            finally:
                await meter.close()
            return reading.import_wh, reading.export_wh

        return {
            spec.meter_id: asyncio.run(read(self.meter_urls[spec.meter_id])) for spec in self.meters
        }

    def logs_tail(self, lines: int = 25) -> str:
        parts = []
        for process in self.all_processes():
            tail = process.output().splitlines()[-lines:] if process.log.exists() else []
            parts.append(f"--- {process.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    # ---- stores -------------------------------------------------------------------------------

    def board_records(self, spec: MeterSpec) -> Records:
        return Records(
            open_store(f"sqlite:///{self.root / f'board-{spec.meter_id}.db'}"), spec.agent
        )

    def market_records(self) -> Records:
        return Records(open_store(f"sqlite:///{self.root / 'market.db'}"), MARKET)


def start_community(
    root: Path,
    meters: list[MeterSpec],
    *,
    via_cli: bool = False,
    schedule: dict[str, float] | None = None,
) -> Community:
    """Broker, chain, contracts, keys, meters registered and funded, meter servers, configs.

    With `via_cli` the meters are registered and funded with `meterchain agent register` and
    `meterchain agent fund`, as an operator would; otherwise in-process (faster).
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "logs").mkdir(exist_ok=True)
    env = {
        **os.environ,
        "MCHAIN_KEY_PASSWORD": PASSWORD,
        "PYTHONUNBUFFERED": "1",
    }
    # The community's secured broker: a credential per board, the market, the grid, and the
    # tests' own observers (which read the community's announcements like any agent).
    broker = start_mosquitto(
        data_dir=root / "broker",
        agents=[*(spec.agent for spec in meters), *OBSERVERS],
    )
    node = start_anvil(state_dir=root / "chain")
    try:
        w3 = connect(node.rpc_url)
        operator = dev_account(0)
        sender = TransactionSender(w3, operator)
        first_block = int(w3.eth.block_number) + 1
        addresses = deploy_suite(sender, retail_price="0.80", feed_in_price="0.30")
        deployment = Deployment(
            chain_id=int(w3.eth.chain_id),
            rpc_url=node.rpc_url,
            deployed_at_block=first_block,
            contracts=addresses,
            deployer=operator.address,
        )
        save_deployment(deployment, root / "deployment.json")
        create_keystore(
            root / "operator.json", PASSWORD, scrypt_n=TEST_SCRYPT_N, private_key=operator.key
        )
        market = EnergyMarketClient(sender, addresses["EnergyMarket"])
        credit = EnergyCreditClient(sender, addresses["EnergyCredit"])
        registry = MeterRegistryClient(sender, addresses["MeterRegistry"])
        units = to_units(METER_CREDIT, credit.decimals)
        now = datetime.now(UTC).replace(microsecond=0)
        # Virtual mornings in Fortaleza (10:00 local), so the PV board expects sun and offers it.
        morning = datetime(now.year, now.month, now.day, 13, 0, tzinfo=UTC)
        credit.mint(operator.address, units * len(meters) + to_units(GRID_CREDIT, credit.decimals))
        market.deposit_grid(to_units(GRID_CREDIT, credit.decimals))
        for spec in meters:
            signer = create_keystore(
                root / f"board-{spec.meter_id}.json", PASSWORD, scrypt_n=TEST_SCRYPT_N
            )
            kind = "prosumer" if spec.pv_kwp else "consumer"
            # The simulated meter's registers when its clock starts: the installation reading.
            installed = build_profile_meter(spec.meter_id, spec.profile, ManualClock(morning))
            registers = installed.state()
            import_wh, export_wh = int(registers.import_wh), int(registers.export_wh)
            if via_cli:
                common = ["--deployment", str(root / "deployment.json")]
                # As docs/deployment.md does it: only the board key's address leaves the board.
                address = _run_cli(
                    env, "chain", "key", "address", "--keystore",
                    str(root / f"board-{spec.meter_id}.json"),
                ).strip()  # fmt: skip
                assert address == signer, (address, signer)
                _run_cli(
                    env, "agent", "register", "--meter-id", spec.meter_id, "--signer", address,
                    "--kind", kind,
                    "--max-power-w", str(MAX_POWER_W), "--import-wh", str(import_wh),
                    "--export-wh", str(export_wh), "--baseline-at", morning.isoformat(), *common,
                )  # fmt: skip
                _run_cli(
                    env, "agent", "fund", "--meter-id", spec.meter_id, "--amount",
                    str(METER_CREDIT), *common,
                )  # fmt: skip
            else:
                registry.register_meter(
                    spec.meter_id, signer, signer, MeterKind[kind.upper()], MAX_POWER_W
                )
                registry.assign_market(spec.meter_id, market.address)
                baseline = int(morning.timestamp()) - market.interval_seconds
                market.set_baseline(spec.meter_id, baseline, import_wh, export_wh)
                market.deposit(spec.meter_id, units)
        # The test's own view of the chain: reads only.
        viewer = EnergyMarketClient(TransactionSender(w3, dev_account(9)), market.address)
    except BaseException:
        stop_anvil(node)
        broker.stop()
        raise
    community = Community(
        root=root,
        broker=broker,
        node=node,
        deployment=deployment,
        market=viewer,
        meters=meters,
        clock_start=now,
        virtual_start=morning,
        env=env,
        funded_units=units,
        schedule={**SCHEDULE, **(schedule or {})},
    )
    try:
        for spec in meters:
            community.start_meter(spec)
    except BaseException:
        community.close()
        raise
    return community


def _run_cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [EXECUTABLE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, f"meterchain {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


# ---- the settlement check -----------------------------------------------------------------------


@dataclass
class MeterCheck:
    """What one meter's settlement was checked against."""

    meter_id: str
    intervals_with_reading: list[int]
    intervals_without_reading: list[int]
    traded_wh: int
    expected_balance: int
    chain_balance: int


def check_settlement(community: Community, *, timeout_s: float = 10.0) -> dict[str, MeterCheck]:
    """Every meter's on-chain balance equals what `settle_meter` computes, to the smallest unit.

    The energy comes from the boards' own records of their meters' registers, checked against
    the meters' baselines on chain by the contract's rules (`measure_reading`), the positions
    and tariffs from the batches the chain recorded, the readings the market used from its
    store. Each interval's DeliverySettled line must also agree, meter by meter. The chain is
    read at one block, so the community may keep running meanwhile.
    """
    market = community.market
    block = int(market.w3.eth.block_number)
    batches = {
        int(e["args"]["interval"]): e["args"] for e in market.events("BatchSettled", to_block=block)
    }
    deliveries = {
        int(e["args"]["interval"]): decode_settlements(bytes(e["args"]["settlements"]))
        for e in market.events("DeliverySettled", to_block=block)
    }
    baselines = {
        bytes(e["args"]["meterId"]): MeterAccountState(
            int(e["args"]["interval"]), int(e["args"]["importWh"]), int(e["args"]["exportWh"])
        )
        for e in market.events("BaselineSet", to_block=block)
    }
    positions = {
        k: {p.meter_id: p for p in decode_positions(bytes(v["positions"]))}
        for k, v in batches.items()
    }
    retail, feed_in = market.tariffs()
    tariffs = {k: (int(v["retailPrice"]), int(v["feedInPrice"])) for k, v in batches.items()}
    settlements = {k: {s.meter_id: s for s in v} for k, v in deliveries.items()}
    # The market records what it used right after its transaction: wait for it if need be.
    deadline = time.monotonic() + timeout_s
    while True:
        records = community.market_records()
        delivered_records = records.all("delivered")
        if all(str(k) in delivered_records for k in deliveries):
            break
        assert time.monotonic() < deadline, "the market never recorded a settled delivery"
        time.sleep(0.1)
    market_readings = records.all("reading")
    used_readings = {int(k): set(v["used_readings"]) for k, v in delivered_records.items()}
    checks = {}
    for spec in community.meters:
        meter = meter_id_to_bytes32(spec.meter_id)
        own = {int(k): v for k, v in community.board_records(spec).all("delivery").items()}
        balance = community.funded_units
        account = baselines[meter]
        with_reading, without_reading = [], []
        traded = 0
        for interval in sorted(set(batches) | set(deliveries)):
            position = positions.get(interval, {}).get(meter)
            batch_retail, batch_feed_in = tariffs.get(interval, (retail, feed_in))
            if position is not None:
                balance -= position.locked(batch_retail)
                traded += position.bought_wh + position.sold_wh
            if interval not in deliveries:
                continue
            used: dict[str, Any] | None = None
            if spec.meter_id in used_readings[interval]:
                used = market_readings[f"{interval}:{spec.meter_id}"]
            metered = Metered()
            if used is not None:
                board = own.get(interval)
                assert board is not None, (
                    f"{spec.meter_id}: the market used a reading for {interval} that the board "
                    "never took"
                )
                assert used == board, (
                    f"{spec.meter_id}: the reading for {interval} differs from the meter's"
                )
                reading = ReadingMessage(
                    meter, interval, int(board["start_import_wh"]), int(board["start_export_wh"]),
                    int(board["end_import_wh"]), int(board["end_export_wh"]),
                )  # fmt: skip
                found = measure_reading(
                    reading, account, max_power_w=MAX_POWER_W, interval_s=market.interval_seconds
                )
                if isinstance(found, Metered):
                    metered = found
                    account = advance(account, reading)
                    with_reading.append(interval)
                else:
                    without_reading.append(interval)
            else:
                without_reading.append(interval)
            settled = settle_meter(position, metered, batch_retail, batch_feed_in)
            change = settled.credits - settled.debit
            line = settlements[interval].get(meter)
            if position is not None or metered != Metered():
                assert line is not None, f"{spec.meter_id} missing from the delivery of {interval}"
                assert (line.imported_wh, line.exported_wh) == (
                    metered.import_wh,
                    metered.export_wh,
                ), (
                    f"{spec.meter_id} in {interval}: chain counted {line.imported_wh}/"
                    f"{line.exported_wh} Wh, the meter's registers say {metered}"
                )
                assert line.balance_change == change, (
                    f"{spec.meter_id} in {interval}: chain changed the balance by "
                    f"{line.balance_change}, settle_meter says {change}"
                )
            balance += change
        chain_balance = int(market.contract.functions.balanceOf(meter).call(block_identifier=block))
        assert chain_balance == balance, (
            f"meter {spec.meter_id}: chain balance {chain_balance}, expected {balance}"
        )
        checks[spec.meter_id] = MeterCheck(
            spec.meter_id, with_reading, without_reading, traded, balance, chain_balance
        )
    return checks
