"""Command-line sub-apps, one module per area; `meterchain.cli` assembles them."""
