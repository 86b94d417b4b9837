"""Everything that talks to an EVM chain: a local node, the one transaction sender, contracts."""
