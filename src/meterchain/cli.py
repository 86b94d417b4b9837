"""The `meterchain` command line: one Typer app, a sub-app per area."""

from __future__ import annotations

import typer

from meterchain.commands import (
    agents,
    board,
    broker,
    chain,
    device,
    ledger,
    market,
    meter,
    prepaid,
    simulate,
    web,
)

app = typer.Typer(
    name="meterchain",
    help="Smart meters that trade energy with their neighbours on an EVM chain.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(meter.app, name="meter")
app.add_typer(device.app, name="device")
app.add_typer(market.app, name="market")
app.add_typer(chain.app, name="chain")
app.add_typer(agents.agent_app, name="agent")
app.add_typer(agents.grid_app, name="grid")
app.add_typer(prepaid.app, name="prepaid")
app.command(name="simulate")(simulate.simulate)
app.command(name="demo")(simulate.demo)
app.add_typer(web.app, name="web")
app.add_typer(ledger.certificates_app, name="certificates")
app.add_typer(ledger.fund_app, name="fund")
app.command(name="statement")(ledger.statement)
app.add_typer(broker.app, name="broker")
app.add_typer(board.app, name="board")


if __name__ == "__main__":
    app()
