"""Applications on the same ledger as the market: renewable-energy certificates with guarantee
of origin, community solar funding, and monthly bills paid in tokens.

Beside `market`, `der` and `chain`: it reads and drives the ledger contracts through the typed
clients of `meterchain.chain.ledger_clients`; the CLI, the agents and the simulation call it.
"""
