"""Prepaid metering: credit per meter on chain (PrepaidMeter beside EnergyMarket), vouchers,
the cut-off rules, and the board's local copy of the credit.

Modules, lowest layer first: `rules` (when a cut-off may happen: pure), `ledger` (the board's
credit estimate and relay decision: pure), `voucher` (the utility's signed codes), `client`
(the typed contract wrapper), `service` (what the command line and the web page call).
docs/prepaid.md explains the design and the regulation it follows.
"""
