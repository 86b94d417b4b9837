"""Fixtures of the agent tests (see market_chain.py)."""

from market_chain import chain, market_chain

__all__ = ["chain", "market_chain"]
