"""A community fund's state, as the CLI, the simulation report and the web show it."""

from __future__ import annotations

from typing import Any

from meterchain.chain.ledger_clients import CommunityFundClient
from meterchain.chain.signing import bytes32_to_meter_id


def fund_status(fund: CommunityFundClient, account: str | None = None) -> dict[str, Any]:
    """The campaign and its revenue (smallest units; deadline in Unix seconds) and, for
    `account`, its shares and revenue (earned, claimed, claimable)."""
    status: dict[str, Any] = {
        "address": fund.address,
        "plant_meter_id": bytes32_to_meter_id(fund.plant_meter_id),
        "price_per_share_units": fund.price_per_share,
        "goal_units": fund.goal,
        "cap_units": fund.cap,
        "deadline": fund.deadline,
        "raised_units": fund.raised(),
        "shares": fund.total_shares(),
        "succeeded": fund.succeeded(),
        "drawn": fund.drawn(),
        "revenue_distributed_units": fund.total_distributed(),
        "revenue_claimed_units": fund.total_claimed(),
    }
    if account is not None:
        status |= {
            "account": account,
            "account_shares": fund.shares_of(account),
            "account_earned_units": fund.earned(account),
            "account_claimed_units": fund.claimed(account),
            "account_claimable_units": fund.claimable(account),
        }
    return status
