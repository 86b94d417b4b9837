"""`meterchain market …`: clear an order book."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from meterchain.commands.agents import market_run
from meterchain.commands.errors import USER_ERRORS, user_errors
from meterchain.market.book import MarketError, parse_book
from meterchain.market.clearing import ClearingResult, Mechanism, clear

USER_ERRORS.append(MarketError)

app = typer.Typer(
    help="Clear an order book; run the community's market agent.", no_args_is_help=True
)
console = Console(highlight=False)
app.command("run")(market_run)


@app.command("clear")
@user_errors
def clear_command(
    mechanism: Annotated[
        Mechanism, typer.Option(help="Uniform price for all, or a price per matched pair.")
    ] = Mechanism.PAY_AS_CLEAR,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Clear the order book read as JSON on standard input; prices are per kWh.

    Book: {"retail_price": 0.95, "feed_in_price": 0.25, "orders": [{"id": "b1", "meter_id": "m1", "side": "buy", "quantity_wh": 1500, "limit_price": 0.85, "submitted_at": "2026-11-24T12:00:00Z"}, ...]}
    """  # noqa: E501
    if sys.stdin.isatty():
        raise MarketError(
            "no order book on standard input; run e.g. `meterchain market clear --json < book.json`"
        )
    result = clear(parse_book(sys.stdin.read()), mechanism)
    if as_json:
        print(json.dumps(result.as_json()))
    else:
        _print_result(result)


def _print_result(result: ClearingResult) -> None:
    if result.price is None:
        console.print(f"{result.mechanism.value}: nothing clears (no bid reaches any ask)")
        return
    label = "price" if result.mechanism is Mechanism.PAY_AS_CLEAR else "average price"
    table = Table(
        title=f"{result.mechanism.value}: {label} {result.price:g} per kWh, "
        f"{result.volume_wh:,} Wh in {len(result.trades):,} "
        + ("trade" if len(result.trades) == 1 else "trades")
    )
    table.add_column("buy order")
    table.add_column("sell order")
    table.add_column("quantity (Wh)", justify="right")
    table.add_column("price (per kWh)", justify="right")
    for trade in result.trades:
        table.add_row(
            trade.buy_order_id, trade.sell_order_id, f"{trade.quantity_wh:,}", f"{trade.price:g}"
        )
    console.print(table)
