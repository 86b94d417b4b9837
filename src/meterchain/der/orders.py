"""From a plan to the site's orders for the next market interval.

Two kinds of order, both priced from the value of energy to this site:

* The planned exchange. If the plan imports q Wh in step 0, the site bids for q Wh; if it exports,
  it offers q Wh. The limit price is the dual of step 0's energy balance in the LP with the
  plan's binaries fixed (`DerSchedule.marginal_value_per_kwh[0]`): what one more kWh at step 0
  is worth to the site. Whenever the site imports without hitting a limit that dual equals its
  buy price (and its sell price when it exports): energy it can always get from the grid is
  worth exactly the grid price, no more. The limit is clamped into [sell price, buy price] of
  step 0, because the grid stays the buyer and seller of last resort.

* Flexible blocks, priced by re-solving. The battery could take more in step 0 (or give more)
  if a neighbour's price made it worth it. The block is the battery's headroom in step 0
  (power, SoC room, import/export limit); its limit price is the change in the optimal cost of
  the rest of the horizon when step 0's net import is pinned ΔWh higher (or lower), divided by
  ΔWh. That is an average over the block, not a first-derivative, so a partial fill is never
  worse for the site than the price says (the cost-to-go is convex in the LP relaxation). A
  block is only offered where it can beat the grid: a flexible bid above the sell price, a
  flexible offer below the buy price.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from meterchain.der.optimiser import KeptModel, cost_to_go
from meterchain.der.schedule import DerSchedule
from meterchain.der.site import DerProblem
from meterchain.model import Order, Side

MIN_QUANTITY_WH = 1
_PRICE_EPS = 1e-6


@dataclass(frozen=True)
class PricedQuantity:
    """An order before it has an id, a meter and a submission time."""

    side: Side
    quantity_wh: int
    limit_price: float
    reason: str


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def planned_exchange(problem: DerProblem, schedule: DerSchedule) -> list[PricedQuantity]:
    """The order for the energy the plan buys or sells in step 0, priced from the LP dual."""
    buy, sell = problem.buy_price_per_kwh[0], problem.sell_price_per_kwh[0]
    low, high = min(buy, sell), buy
    marginal = schedule.marginal_value_per_kwh
    step = schedule.next_interval()
    net_wh = step.net_import_wh
    if net_wh >= MIN_QUANTITY_WH - 0.5:
        limit = buy if marginal is None else _clamp(marginal[0], low, high)
        return [PricedQuantity(Side.BUY, round(net_wh), limit, "planned import")]
    if -net_wh >= MIN_QUANTITY_WH - 0.5:
        limit = sell if marginal is None else _clamp(marginal[0], sell, max(sell, buy))
        return [PricedQuantity(Side.SELL, round(-net_wh), limit, "planned export")]
    return []


def _headroom_w(problem: DerProblem, schedule: DerSchedule) -> tuple[float, float]:
    """How much more the batteries could take in (up) or give out (down) in step 0, in W."""
    site = problem.site
    batteries = site.all_batteries
    if not batteries:
        return 0.0, 0.0
    step_h = problem.step_h
    plans = schedule.batteries or ()
    up = down = 0.0
    for index, battery in enumerate(batteries):
        soc = problem.initial_soc_wh_of(index)
        if plans:
            charge, discharge = plans[index].charge_w[0], plans[index].discharge_w[0]
        else:
            charge, discharge = schedule.charge_w[0], schedule.discharge_w[0]
        more_in = battery.max_charge_w_at(soc) - charge + discharge
        room_wh = max(battery.soc_max_wh, soc) - soc
        up += max(0.0, min(more_in, discharge + room_wh / battery.charge_efficiency / step_h))
        more_out = battery.max_discharge_power_w - discharge + charge
        stored_wh = soc - min(battery.soc_min_wh, soc)
        down += max(0.0, min(more_out, charge + stored_wh * battery.discharge_efficiency / step_h))
    net = schedule.import_w[0] - schedule.export_w[0]
    up = min(up, problem.import_limit_at(0) - net)
    down = min(down, problem.export_limit_at(0) + net)
    return max(0.0, up), max(0.0, down)


def flexible_blocks(
    problem: DerProblem,
    schedule: DerSchedule,
    *,
    time_limit_s: float = 10.0,
    only_side: Side | None = None,
    model: KeptModel | None = None,
) -> list[PricedQuantity]:
    """Extra energy the battery would buy or sell in step 0, at the price that makes it pay.

    `only_side` prices one side only (a market that takes a meter on one side per interval
    needs no price for the other, and each side costs a re-solve). `model`, a kept model that
    holds `problem`, is re-solved with step 0 pinned instead of building a model per price."""
    up_w, down_w = _headroom_w(problem, schedule)
    step_h = problem.step_h
    if up_w * step_h < MIN_QUANTITY_WH and down_w * step_h < MIN_QUANTITY_WH:
        return []
    net_w = schedule.import_w[0] - schedule.export_w[0]
    base = cost_to_go(problem, net_w, time_limit_s=time_limit_s, model=model)
    if base is None:
        return []
    buy, sell = problem.buy_price_per_kwh[0], problem.sell_price_per_kwh[0]
    # Only in the plan's own direction (or both when it plans no exchange): a flexible offer
    # beside a planned bid would let the site's own orders cross each other in the auction.
    sides = []
    if net_w >= -0.5 / step_h and only_side in (None, Side.BUY):
        sides.append((Side.BUY, up_w))
    if net_w <= 0.5 / step_h and only_side in (None, Side.SELL):
        sides.append((Side.SELL, down_w))
    blocks: list[PricedQuantity] = []
    for side, headroom_w in sides:
        sign = 1.0 if side is Side.BUY else -1.0
        power_w = headroom_w
        for _ in range(4):  # halve the block if the rest of the horizon cannot absorb it
            quantity_wh = int(power_w * step_h)
            if quantity_wh < MIN_QUANTITY_WH:
                break
            pinned = cost_to_go(
                problem,
                net_w + sign * quantity_wh / step_h,
                time_limit_s=time_limit_s,
                model=model,
            )
            if pinned is None:
                power_w /= 2
                continue
            per_kwh = sign * (base - pinned) / (quantity_wh / 1000.0)
            if side is Side.BUY and per_kwh > sell + _PRICE_EPS:
                limit = min(per_kwh, max(buy, sell))
                blocks.append(PricedQuantity(side, quantity_wh, limit, "flexible: charge more"))
            elif side is Side.SELL and per_kwh < buy - _PRICE_EPS:
                limit = max(per_kwh, min(sell, buy))
                blocks.append(PricedQuantity(side, quantity_wh, limit, "flexible: discharge more"))
            break
    bids = [b.limit_price for b in blocks if b.side is Side.BUY]
    if bids:  # the cost-to-go is convex only up to the MIP gap: never let the two cross
        blocks = [b for b in blocks if b.side is Side.BUY or b.limit_price > max(bids)]
    return blocks


def orders_for_next_interval(
    problem: DerProblem,
    schedule: DerSchedule,
    *,
    meter_id: str,
    submitted_at: datetime,
    order_id_prefix: str,
    flexible: bool = True,
    time_limit_s: float = 10.0,
    only_side: Side | None = None,
    model: KeptModel | None = None,
) -> list[Order]:
    """The site's orders for the interval its plan starts with (see the module docstring)."""
    priced = planned_exchange(problem, schedule)
    if flexible:
        priced += flexible_blocks(
            problem, schedule, time_limit_s=time_limit_s, only_side=only_side, model=model
        )
    orders = []
    for index, item in enumerate(priced):
        orders.append(
            Order(
                id=f"{order_id_prefix}-{index}-{item.side.value}",
                meter_id=meter_id,
                side=item.side,
                quantity_wh=item.quantity_wh,
                limit_price=item.limit_price,
                submitted_at=submitted_at,
            )
        )
    return orders
