"""What the deployed processes agree on without talking: the clock, the schedule, the configs.

Every process of a community (each board, the market, the grid) runs its own Ticker; they
meet only through their `[clock]` and `[schedule]` sections. These tests pin down that shared
time and the ticks it produces, including those a late or restarted process still gets.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterchain.agents.messages import Tick
from meterchain.agents.ticker import (
    Ticker,
    board_phases,
    build_clock,
    grid_phases,
    market_phases,
)
from meterchain.cli import app
from meterchain.clock import ScaledClock, WallClock
from meterchain.config import ConfigError, load_toml
from meterchain.roles import BoardConfig, ClockConfig, GridConfig, MarketConfig, ScheduleConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
T = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # an interval start (a multiple of 900 s)


def schedule() -> ScheduleConfig:
    return ScheduleConfig(
        interval_s=900,
        order_lead_s=300,
        gate_closure_s=60,
        reading_delay_s=10,
        settle_delay_s=120,
        tariff_lead_s=30,
    )


def test_processes_given_the_same_clock_agree_on_virtual_time() -> None:
    config = ClockConfig(speed=300, start=T, virtual_start=T + timedelta(hours=2))
    early = build_clock(config, wall_now=T + timedelta(seconds=10))
    late = build_clock(config, wall_now=T + timedelta(seconds=10))
    expected = T + timedelta(hours=2, seconds=10 * 300)
    assert abs((early.now() - expected).total_seconds()) < 3  # 10 ms of real time at x300
    assert abs((early.now() - late.now()).total_seconds()) < 3


def test_a_process_started_later_reads_the_same_virtual_time() -> None:
    config = ClockConfig(speed=100, start=T)
    started_at_anchor = build_clock(config, wall_now=T)
    started_a_minute_later = build_clock(config, wall_now=T + timedelta(minutes=1))
    gap_s = (started_a_minute_later.now() - started_at_anchor.now()).total_seconds()
    assert gap_s == pytest.approx(60 * 100, abs=3)


def test_no_start_means_the_wall_clock() -> None:
    assert isinstance(build_clock(ClockConfig()), WallClock)


def test_a_fast_clock_without_an_anchor_is_refused() -> None:
    with pytest.raises(ValueError, match="needs `start`"):
        ClockConfig(speed=300)


def test_gate_closure_must_come_after_the_orders() -> None:
    with pytest.raises(ValueError, match="gate_closure_s"):
        ScheduleConfig(order_lead_s=60, gate_closure_s=60)


def test_settlement_must_wait_for_the_readings() -> None:
    with pytest.raises(ValueError, match="settle_delay_s"):
        ScheduleConfig(reading_delay_s=120, settle_delay_s=60)


def _ticker(phases_of: str, clock: ScaledClock, posted: list[Tick]) -> Ticker:
    phases = {"board": board_phases, "market": market_phases, "grid": grid_phases}[phases_of]

    async def post(tick: Tick) -> None:
        posted.append(tick)

    return Ticker(
        clock,
        interval_s=900,
        phases=phases(schedule()),
        post=post,
        speed=clock_speed,
        catch_up_intervals=1,
    )


clock_speed = 9_000.0  # 900 virtual seconds in 0.1 s


def test_a_board_ticks_orders_before_gate_closure_and_readings_after_the_interval() -> None:
    it = _ticker("board", ScaledClock(T, clock_speed), []).schedule(T)
    ticks = [next(it) for _ in range(4)]
    assert [(t.spec.phase, t.interval_start, t.moment) for t in ticks] == [
        ("delivery", T - timedelta(seconds=900), T + timedelta(seconds=10)),
        ("order", T + timedelta(seconds=900), T + timedelta(seconds=600)),
        ("delivery", T, T + timedelta(seconds=910)),
        ("order", T + timedelta(seconds=1800), T + timedelta(seconds=1500)),
    ]
    assert ticks[1].deadline == T + timedelta(seconds=840)  # gate closure
    assert ticks[2].deadline == T + timedelta(seconds=1020)  # settlement


def test_the_market_closes_the_gate_and_settles_in_order() -> None:
    it = _ticker("market", ScaledClock(T, clock_speed), []).schedule(T)
    ticks = [next(it) for _ in range(3)]
    assert [(t.spec.phase, t.interval_start, t.moment) for t in ticks] == [
        ("settle", T - timedelta(seconds=900), T + timedelta(seconds=120)),
        ("clear", T + timedelta(seconds=900), T + timedelta(seconds=840)),
        ("settle", T, T + timedelta(seconds=1020)),
    ]
    assert ticks[0].deadline is None  # a delivery is never left unsettled


def test_the_grid_announces_tariffs_before_the_boards_plan() -> None:
    grid = _ticker("grid", ScaledClock(T, clock_speed), []).schedule(T)
    board = _ticker("board", ScaledClock(T, clock_speed), []).schedule(T)
    tariffs = next(grid)
    orders = next(t for t in board if t.spec.phase == "order")
    assert tariffs.interval_start == orders.interval_start
    assert tariffs.moment < orders.moment


async def test_a_board_started_late_still_sends_the_reading_it_owes() -> None:
    # Started 1000 s into interval T: T's reading (due at T+910) is late but before
    # settlement (T+1020); the orders for T+900 (due at T+600, gate at T+840) are too late.
    posted: list[Tick] = []
    ticker = _ticker("board", ScaledClock(T + timedelta(seconds=1000), clock_speed), posted)
    task = asyncio.create_task(ticker.run())
    await asyncio.sleep(0.3)  # 2,700 virtual seconds
    task.cancel()
    first = posted[0]
    assert (first.phase, first.interval_start) == ("delivery", T)
    assert ("order", T + timedelta(seconds=900)) not in [
        (t.phase, t.interval_start) for t in posted
    ]
    assert ("order", T + timedelta(seconds=1800)) in [(t.phase, t.interval_start) for t in posted]
    assert ticker.skipped >= 1


@pytest.mark.parametrize(
    ("name", "model"),
    [("board.toml", BoardConfig), ("market.toml", MarketConfig), ("grid.toml", GridConfig)],
)
def test_the_example_configs_are_valid(name: str, model: type[BoardConfig]) -> None:
    load_toml(EXAMPLES / name, model)


def test_the_examples_share_one_clock_and_schedule() -> None:
    board = load_toml(EXAMPLES / "board.toml", BoardConfig)
    market = load_toml(EXAMPLES / "market.toml", MarketConfig)
    grid = load_toml(EXAMPLES / "grid.toml", GridConfig)
    assert board.schedule == market.schedule == grid.schedule
    assert board.clock == market.clock == grid.clock
    assert same_broker(board) == same_broker(market) == same_broker(grid)


def same_broker(config: BoardConfig | MarketConfig | GridConfig) -> tuple[object, ...]:
    """What every process's [broker] shares: where it is and its CA (each logs in as itself)."""
    broker = config.broker
    return broker.host, broker.port, broker.tls_ca_file


def test_the_one_machine_community_shares_one_clock_and_schedule() -> None:
    """examples/community/, which docs/deployment.md walks through: three boards on three
    protocols, the market and the grid, valid and agreeing on broker, clock and schedule."""
    community = EXAMPLES / "community"
    boards = [load_toml(path, BoardConfig) for path in sorted(community.glob("board-*.toml"))]
    market = load_toml(community / "market.toml", MarketConfig)
    grid = load_toml(community / "grid.toml", GridConfig)
    assert sorted(b.meter_url.split(":")[0] for b in boards) == [
        "dlms+tcp",
        "modbus+tcp",
        "nbr14522+tcp",
    ]
    for board in boards:
        assert (same_broker(board), board.clock, board.schedule) == (
            same_broker(market), market.clock, market.schedule,
        )  # fmt: skip
        assert (same_broker(grid), grid.clock, grid.schedule) == (
            same_broker(market), market.clock, market.schedule,
        )  # fmt: skip
        assert board.broker.username == board.agent_name  # each logs in as itself
    # The walk-through replaces these two lines in every file with sed: each is there, once.
    for path in community.glob("*.toml"):
        text = path.read_text()
        assert len(re.findall(r"^start = ", text, re.M)) == 1, path
        assert len(re.findall(r"^virtual_start = ", text, re.M)) == 1, path


def test_the_deployment_guide_points_only_at_files_that_exist() -> None:
    guide = (EXAMPLES.parent / "docs" / "deployment.md").read_text()
    linked = set(re.findall(r"\]\(\.\./([^)#]+)\)", guide))
    mentioned = set(re.findall(r"(?:examples|tests/agents|bench)/[\w./-]+\w", guide))
    assert "meterchain broker config" in guide and "examples/mosquitto-secure.conf" in linked
    for path in linked | mentioned:
        assert (EXAMPLES.parent / path).exists(), path


def test_a_misspelt_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "board.toml"
    config.write_text(
        (EXAMPLES / "board.toml").read_text().replace("meter_timeout_s", "meter_timeout")
    )
    with pytest.raises(ConfigError, match="meter_timeout"):
        load_toml(config, BoardConfig)


def test_agent_run_with_a_missing_config_says_so_without_a_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["agent", "run", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1
    assert "no such file" in result.output
    assert "Traceback" not in result.output


def test_a_board_without_its_keystore_says_how_to_make_one(tmp_path: Path) -> None:
    config = tmp_path / "board.toml"
    text = (EXAMPLES / "board.toml").read_text()
    config.write_text(text.replace("keys/board-10000001.json", str(tmp_path / "missing.json")))
    result = CliRunner().invoke(
        app,
        ["agent", "run", "--config", str(config)],
        env={"MCHAIN_KEY_PASSWORD": "x"},
    )
    assert result.exit_code == 1
    assert "chain key new" in result.output
    assert "Traceback" not in result.output


def test_dev_keystore_holds_an_anvil_dev_key_for_local_operators(tmp_path: Path) -> None:
    from meterchain.chain.keystore import load_keystore
    from meterchain.chain.node import dev_account

    keystore = tmp_path / "operator.json"
    result = CliRunner().invoke(
        app,
        [
            "agent",
            "dev-keystore",
            "--keystore",
            str(keystore),
            "--index",
            "1",
            "--scrypt-n",
            "1024",
        ],
        env={"MCHAIN_KEY_PASSWORD": "local"},
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == dev_account(1).address
    assert load_keystore(keystore, "local").address == dev_account(1).address
