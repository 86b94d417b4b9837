"""The local energy market: order books, clearing, and (later) settlement batches."""

from __future__ import annotations

from meterchain.market.book import BookError, MarketError, OrderBook, parse_book
from meterchain.market.clearing import ClearingResult, Mechanism, Trades, clear

__all__ = [
    "BookError",
    "ClearingResult",
    "MarketError",
    "Mechanism",
    "OrderBook",
    "Trades",
    "clear",
    "parse_book",
]
