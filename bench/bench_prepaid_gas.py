"""Gas of each PrepaidMeter operation on a local anvil (paris), written to
bench/results/prepaid_gas.json.

Operations: enrolment, wallet top-up (approve + topUp, and with a permit), voucher redemption
(a serial's bitmap word used for the first time, and a word already in use), assessment with
nothing to do, with a loan from the float, with a cut-off, and assessMany per meter at 10 and
50 meters (what the operator's agent sends after each delivery), the reconnecting top-up.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from eth_account import Account  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.common import write_result  # noqa: E402
from meterchain.chain.artifacts import all_abis  # noqa: E402
from meterchain.chain.client import (  # noqa: E402
    EnergyCreditClient,
    EnergyMarketClient,
    MeterKind,
    MeterRegistryClient,
)
from meterchain.chain.deploy import deploy_suite  # noqa: E402
from meterchain.chain.node import connect, dev_account, start_anvil, stop_anvil  # noqa: E402
from meterchain.chain.sender import TransactionSender  # noqa: E402
from meterchain.chain.signing import ReadingMessage, meter_id_to_bytes32, sign_reading  # noqa: E402
from meterchain.prepaid.client import (  # noqa: E402
    PrepaidMeterClient,
    PrepaidSettings,
    deploy_prepaid,
)
from meterchain.prepaid.voucher import new_voucher, sign_voucher  # noqa: E402

FIRST_INTERVAL = 1_795_000_500
TUESDAY_10H = int(datetime(2026, 11, 24, 13, 0, tzinfo=UTC).timestamp())
MAX_POWER_W = 15_000
BOARD = Account.from_key(b"\xb0" * 32)
VENDING = Account.from_key(b"\x5e" * 32)


def gas(receipt: Any) -> int:
    return int(receipt["gasUsed"])


def main() -> None:
    node = start_anvil()
    try:
        results = measure(connect(node.rpc_url))
    finally:
        stop_anvil(node)
    table = Table(title="PrepaidMeter gas (anvil, paris)")
    table.add_column("operation")
    table.add_column("gas", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:,}")
    Console().print(table)
    print(write_result("prepaid_gas", results))


def measure(w3: Any) -> dict[str, int]:
    me = dev_account(0)
    sender = TransactionSender(w3, me, abis=all_abis())
    w3.provider.make_request("evm_setTime", [TUESDAY_10H])
    addresses = deploy_suite(sender, retail_price="0.95", feed_in_price="0.25")
    market = EnergyMarketClient(sender, addresses["EnergyMarket"])
    registry = MeterRegistryClient(sender, addresses["MeterRegistry"])
    credit = EnergyCreditClient(sender, addresses["EnergyCredit"])
    settings = PrepaidSettings(
        emergency_credit=100, advance_buffer=100, thresholds=(500, 0), vending_key=VENDING.address
    )
    address = deploy_prepaid(sender, market.address, settings)
    prepaid = PrepaidMeterClient(sender, address)
    credit.mint(me.address, 10**9)
    credit.approve(prepaid.address, 10**9)
    credit.approve(market.address, 10**9)
    prepaid.fund_float(10**7, approve=False)
    market.deposit_grid(10**7, approve=False)
    meters = [f"bench-{i:03d}" for i in range(52)]
    results: dict[str, int] = {}
    for i, meter in enumerate(meters):
        registry.register_meter(meter, BOARD.address, prepaid.address, MeterKind.CONSUMER,
                                MAX_POWER_W)  # fmt: skip
        registry.assign_market(meter, market.address)
        market.set_baseline(meter, FIRST_INTERVAL - 900, 0, 0)
        receipt = prepaid.enrol(meter, me.address)
        if i == 0:
            results["enrol (with the first loan)"] = gas(receipt)
    home = meters[0]
    results["top-up from the wallet (approve done)"] = gas(
        prepaid.top_up(home, 2_000, approve=False)
    )
    holder = dev_account(4)
    credit.mint(holder.address, 5_000)
    with_permit = PrepaidMeterClient(TransactionSender(w3, holder, abis=all_abis()), address)
    results["top-up with a permit"] = gas(
        with_permit.top_up_with_permit(home, 1_000, holder, TUESDAY_10H + 10**6)
    )
    for serial, label in ((1, "voucher, new bitmap word"), (2, "voucher, word in use")):
        signed = sign_voucher(prepaid.domain, new_voucher(home, 500, serial), VENDING)
        results[label] = gas(prepaid.redeem_voucher(home, signed))
    results["assess, nothing to do"] = gas(prepaid.assess(home))
    consume(market, meters[1], 0, 3_000)
    results["assess with a loan from the float"] = gas(prepaid.assess(meters[1]))
    consume(market, meters[1], 3_000, 3_000, interval=FIRST_INTERVAL + 900)
    results["assess with a cut-off"] = gas(prepaid.assess(meters[1]))
    results["top-up that reconnects"] = gas(prepaid.top_up(meters[1], 5_000, approve=False))
    for count in (10, 50):
        group = meters[2 : 2 + count]
        results[f"assessMany per meter, {count} meters"] = gas(prepaid.assess_many(group)) // count
    return results


def consume(
    market: EnergyMarketClient, meter: str, start_wh: int, import_wh: int, *,
    interval: int = FIRST_INTERVAL,
) -> None:  # fmt: skip
    message = ReadingMessage(
        meter_id_to_bytes32(meter), interval, start_wh, 0, start_wh + import_wh, 0
    )
    signed = sign_reading(market.domain, message, BOARD)
    market.settle_delivery(interval, [signed])


if __name__ == "__main__":
    main()
