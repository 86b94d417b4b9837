"""The community simulation's report: a JSON document, a self-contained HTML page, a terminal table.

Money arrives in integer smallest units of the credit token (what the chain counts) and leaves
in currency units rounded half up to the cent. Each household's figures are rounded once, from
its exact integer sum; the community's figures are sums of those rounded household figures,
computed in integer cents, so the community line agrees with the household lines to the cent.
Energy stays in Wh (integers from the meters; floats for the simulation's ground truth).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from rich.console import Console
from rich.table import Table

from meterchain.ledger.matching import HourlyMatch, hourly_match
from meterchain.sim.results import HouseholdResult, SimulationResult

if TYPE_CHECKING:  # matplotlib is imported when plotting: 0.7 s the CLI need not pay otherwise
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.ticker import Formatter, Locator

DEFAULT_TIMEZONE = "America/Fortaleza"
CENT = Decimal("0.01")
ENERGY_FIELDS = ("local_bought_wh", "local_sold_wh", "grid_import_wh", "grid_export_wh")


class ReportError(ValueError):
    """The report cannot be written where or how it was asked for."""


# --------------------------------------------------------------------------------------------
# Money: integer units → integer cents → JSON numbers


def units_to_cents(units: int, decimals: int) -> int:
    """Smallest token units → whole cents, rounded half up (away from zero), exactly."""
    exact = Decimal(units).scaleb(-decimals)
    return int(exact.quantize(CENT, rounding=ROUND_HALF_UP).scaleb(2))


def cents_to_currency(cents: int) -> float:
    """Whole cents → a JSON number with at most two decimals (1.19, never 1.1900000000000002)."""
    return float(Decimal(cents).scaleb(-2))


def _percent(part: int, whole: int) -> float | None:
    """`part` as a percentage of |whole|, two decimals; None when `whole` is zero."""
    if whole == 0:
        return None
    value = Decimal(part) * 100 / abs(Decimal(whole))
    return float(value.quantize(CENT, rounding=ROUND_HALF_UP))


def _self_sufficiency(grid_import_wh: float, load_wh: float) -> float | None:
    """1 − grid import / load, four decimals; None without any load to cover."""
    if load_wh <= 0:
        return None
    return round(1 - grid_import_wh / load_wh, 4)


# --------------------------------------------------------------------------------------------
# The JSON document


@dataclass(frozen=True)
class _HouseholdTotals:
    """One household's sums, money still in exact integers (units) or integer cents."""

    local_bought_wh: int
    local_sold_wh: int
    grid_import_wh: int
    grid_export_wh: int
    load_wh: float
    pv_wh: float
    settled_units: int  # Σ balance_change_units: what the market's settlements moved
    cost_with_cents: int
    cost_without_cents: int
    chain_change_cents: int
    certificates_issued_wh: int
    certificates_retired_wh: int
    match: HourlyMatch  # consumption (metered import) matched hour by hour by retired certificates
    fund_shares: int
    fund_revenue_cents: int


def _totals(household: HouseholdResult, decimals: int) -> _HouseholdTotals:
    rows = household.intervals
    settled_units = sum(row.balance_change_units for row in rows)
    return _HouseholdTotals(
        local_bought_wh=sum(row.received_wh for row in rows),
        local_sold_wh=sum(row.delivered_wh for row in rows),
        grid_import_wh=sum(row.imported_wh - row.received_wh for row in rows),
        grid_export_wh=sum(row.exported_wh - row.delivered_wh for row in rows),
        load_wh=sum(row.load_wh for row in rows),
        pv_wh=sum(row.pv_wh for row in rows),
        settled_units=settled_units,
        cost_with_cents=units_to_cents(-settled_units, decimals),
        cost_without_cents=units_to_cents(
            sum(row.cost_without_market_units for row in rows), decimals
        ),
        chain_change_cents=units_to_cents(household.chain_balance_change_units, decimals),
        certificates_issued_wh=sum(row.certified_wh for row in rows),
        certificates_retired_wh=sum(row.retired_for_wh for row in rows),
        match=hourly_match(
            {int(row.interval_start.timestamp()): row.imported_wh for row in rows},
            {int(row.interval_start.timestamp()): row.retired_for_wh for row in rows},
        ),
        fund_shares=household.fund_shares,
        fund_revenue_cents=units_to_cents(household.fund_revenue_units, decimals),
    )


def _money_fields(with_cents: int, without_cents: int, chain_cents: int) -> dict[str, Any]:
    savings_cents = without_cents - with_cents
    return {
        "cost_with_market": cents_to_currency(with_cents),
        "cost_without_market": cents_to_currency(without_cents),
        "savings": cents_to_currency(savings_cents),
        "savings_percent": _percent(savings_cents, without_cents),
        "chain_balance_change": cents_to_currency(chain_cents),
    }


def _household_entry(
    household: HouseholdResult, totals: _HouseholdTotals, prepaid_run: bool = False
) -> dict[str, Any]:
    entry = {
        "meter_id": household.meter_id,
        "protocol": household.protocol,
        "local_bought_wh": totals.local_bought_wh,
        "local_sold_wh": totals.local_sold_wh,
        "grid_import_wh": totals.grid_import_wh,
        "grid_export_wh": totals.grid_export_wh,
        **_money_fields(
            totals.cost_with_cents, totals.cost_without_cents, totals.chain_change_cents
        ),
        "self_sufficiency": _self_sufficiency(totals.grid_import_wh, totals.load_wh),
        "load_wh": round(totals.load_wh, 1),
        "pv_wh": round(totals.pv_wh, 1),
        "pv_kwp": household.pv_kwp,
        "battery_kwh": household.battery_kwh,
        **_ledger_fields(totals),
    }
    if prepaid_run:  # a run with prepaid supply: every household's relay, from its meter
        entry |= {
            "prepaid": household.prepaid,
            "relay_off_intervals": household.relay_off_intervals,
            "import_wh_while_cut": household.import_wh_while_cut,
        }
    if household.prepaid:
        entry |= {
            "prepaid_credit_after": household.prepaid_credit_after,
            "prepaid_state_after": household.prepaid_state_after,
            "cut_offs": household.cut_offs,
            "reconnects": household.reconnects,
        }
    return entry


def _ledger_fields(totals: _HouseholdTotals) -> dict[str, Any]:
    """Certificates issued for the meter's export and retired in the household's name, the
    share of its consumption matched hour by hour (24/7), its fund shares and revenue."""
    return {
        "certificates_issued_wh": totals.certificates_issued_wh,
        "certificates_retired_wh": totals.certificates_retired_wh,
        "hourly_matched_fraction": totals.match.fraction,
        "fund_shares": totals.fund_shares,
        "fund_revenue": cents_to_currency(totals.fund_revenue_cents),
    }


def _community_entry(
    households: Sequence[HouseholdResult], totals: Sequence[_HouseholdTotals]
) -> dict[str, Any]:
    """The community's sums.

    Its self_sufficiency is 1 − community grid import / community load: the share of the
    street's consumption covered inside the street, with energy bought on the local market
    counted as local. (Energy a household makes and uses itself never reaches the meter and
    counts as local too.)
    """
    energy = {name: sum(getattr(t, name) for t in totals) for name in ENERGY_FIELDS}
    load_wh = sum(t.load_wh for t in totals)
    return {
        "households": len(households),
        **energy,
        **_money_fields(
            sum(t.cost_with_cents for t in totals),
            sum(t.cost_without_cents for t in totals),
            sum(t.chain_change_cents for t in totals),
        ),
        "self_sufficiency": _self_sufficiency(energy["grid_import_wh"], load_wh),
        "load_wh": round(load_wh, 1),
        "pv_wh": round(sum(t.pv_wh for t in totals), 1),
        "pv_kwp": round(sum(h.pv_kwp for h in households), 3),
        "battery_kwh": round(sum(h.battery_kwh for h in households), 3),
        "certificates_issued_wh": sum(t.certificates_issued_wh for t in totals),
        "certificates_retired_wh": sum(t.certificates_retired_wh for t in totals),
        # Σ matched / Σ consumed over every household's hours (not a mean of fractions)
        "hourly_matched_fraction": sum((t.match for t in totals), HourlyMatch(0, 0)).fraction,
        "fund_shares": sum(t.fund_shares for t in totals),
        "fund_revenue": cents_to_currency(sum(t.fund_revenue_cents for t in totals)),
    }


def _disagreements(
    households: Sequence[HouseholdResult], totals: Sequence[_HouseholdTotals], decimals: int
) -> list[dict[str, Any]]:
    """Households whose on-chain balance moved by anything but the sum of their settlements
    (and, for prepaid households, the top-ups and loans paid into it)."""
    found = []
    for household, total in zip(households, totals, strict=True):
        chain_units = household.chain_balance_change_units - household.deposited_units
        if total.settled_units != chain_units:
            found.append(
                {
                    "meter_id": household.meter_id,
                    "settled_units": total.settled_units,
                    "chain_balance_change_units": chain_units,
                    "difference_units": chain_units - total.settled_units,
                    "settled": cents_to_currency(units_to_cents(total.settled_units, decimals)),
                    "chain_balance_change": cents_to_currency(total.chain_change_cents),
                }
            )
    return found


def _interval_count(result: SimulationResult) -> int:
    starts = {m.interval_start for m in result.market}
    starts.update(row.interval_start for h in result.households for row in h.intervals)
    return len(starts)


def summarise(result: SimulationResult) -> dict[str, Any]:
    """The report as a JSON-ready document (only str, int, float, bool, None, lists, dicts).

    Per household: energy bought and sold on the local market (what was delivered), energy
    from and to the grid (the rest of the metered flows), its cost with the market (minus the
    sum of its on-chain settlements) and without it (the same flows at the grid tariffs),
    savings, self-sufficiency (1 − grid import / load, with the simulation's true load) and the
    change of its on-chain balance. `chain_agrees` holds when every household's balance moved
    by exactly the sum of its settlements, to the smallest unit; otherwise `disagreements`
    names the households that differ (it is always present, empty when all agree).
    """
    decimals = result.decimals
    totals = [_totals(h, decimals) for h in result.households]
    intervals = _interval_count(result)
    disagreements = _disagreements(result.households, totals, decimals)
    return {
        "scenario": result.scenario,
        "mechanism": result.mechanism,
        "tariffs": {
            "retail_price": result.retail_price,
            "feed_in_price": result.feed_in_price,
        },
        "decimals": decimals,
        "interval_s": result.interval_s,
        "intervals": intervals,
        "wall_time_s": round(result.wall_time_s, 3),
        "chain_id": result.chain_id,
        "contracts": dict(result.contracts),
        "gas_used": result.gas_used,
        "gas_setup": result.gas_setup,
        "gas_per_interval": round(result.gas_used / intervals) if intervals else 0,
        "gas_certificates": sum(m.gas_certificates for m in result.market),
        "fund": _fund_summary(result),
        "grid_balance_change": cents_to_currency(
            units_to_cents(result.grid_balance_change_units, decimals)
        ),
        "chain_agrees": not disagreements,
        "disagreements": disagreements,
        "void_intervals": [
            {"interval_start": datetime.fromtimestamp(i, UTC).isoformat(), "reason": reason}
            for i, reason in result.void_intervals.items()
        ],
        "households": [
            _household_entry(h, t, result.prepaid is not None)
            for h, t in zip(result.households, totals, strict=True)
        ],
        "community": _community_entry(result.households, totals),
        **({"prepaid": result.prepaid} if result.prepaid is not None else {}),
        "prices": [
            {
                "interval_start": m.interval_start.isoformat(),
                "price": None if m.price is None else round(m.price, 6),
                "traded_wh": m.traded_wh,
                "trades": m.trades,
                "orders": m.orders,
                "gas": m.gas_batch + m.gas_delivery,
            }
            for m in result.market
        ],
        # only scenarios with air conditioners (sim/aircon.py) have this entry
        **({"air_conditioners": result.air_conditioners} if result.air_conditioners else {}),
    }


def _fund_summary(result: SimulationResult) -> dict[str, Any] | None:
    """The community plant's campaign and revenue, in currency units (None without a fund)."""
    fund = result.fund
    if fund is None:
        return None
    money = {
        name: cents_to_currency(units_to_cents(units, result.decimals))
        for name, units in (
            ("raised", fund.raised_units),
            ("revenue_distributed", fund.distributed_units),
            ("revenue_claimed", fund.claimed_units),
        )
    }
    facts: dict[str, Any] = {
        "plant_meter_id": fund.plant_meter_id,
        "address": fund.address,
        "shares": fund.shares,
    }
    return facts | money


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas, no pyplot: no global backend or figure state to leak)


def _new_figure(width_in: float, height_in: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width_in, height_in))
    FigureCanvasAgg(figure)
    return figure


def _png_base64(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=96, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _days(times: Sequence[datetime]) -> list[float]:
    """Datetimes → matplotlib's date numbers (days), which the typed plotting API accepts."""
    import matplotlib.dates as mdates

    # matplotlib.dates has no type hints: give date2num its real signature
    date2num = cast(Callable[[Sequence[datetime]], Sequence[float]], mdates.date2num)
    return [float(day) for day in date2num(times)] if times else []


def _time_axis(axes: Axes, times: Sequence[datetime], zone: ZoneInfo) -> None:
    import matplotlib.dates as mdates

    span_s = (max(times) - min(times)).total_seconds() if times else 0
    pattern = "%d/%m %H:%M" if span_s >= 86400 else "%H:%M"
    axes.xaxis.set_major_locator(cast(Callable[..., "Locator"], mdates.AutoDateLocator)(tz=zone))
    axes.xaxis.set_major_formatter(
        cast(Callable[..., "Formatter"], mdates.DateFormatter)(pattern, tz=zone)
    )
    axes.set_xlabel(f"local time ({zone.key})")
    axes.grid(True, alpha=0.3)


def _plot_prices(result: SimulationResult, zone: ZoneInfo) -> Figure | None:
    if not result.market:
        return None
    figure = _new_figure(9, 3.6)
    axes = figure.add_subplot()
    times = [m.interval_start for m in result.market]
    prices = [float("nan") if m.price is None else m.price for m in result.market]
    axes.step(_days(times), prices, where="post", marker=".", label="local clearing price")
    axes.axhline(result.retail_price, color="tab:red", linestyle="--", label="grid retail")
    axes.axhline(result.feed_in_price, color="tab:green", linestyle="--", label="grid feed-in")
    axes.set_ylabel("currency per kWh")
    axes.set_ylim(bottom=0)
    axes.legend(loc="best", fontsize="small")
    _time_axis(axes, times, zone)
    return figure


def _community_energy(result: SimulationResult) -> dict[datetime, tuple[int, int, int]]:
    """interval start → (local traded Wh, grid import Wh, grid export Wh), over all households."""
    per_interval: dict[datetime, tuple[int, int, int]] = {}
    for household in result.households:
        for row in household.intervals:
            local, grid_in, grid_out = per_interval.get(row.interval_start, (0, 0, 0))
            per_interval[row.interval_start] = (
                local + row.received_wh,
                grid_in + row.imported_wh - row.received_wh,
                grid_out + row.exported_wh - row.delivered_wh,
            )
    return dict(sorted(per_interval.items()))


def _plot_energy(result: SimulationResult, zone: ZoneInfo) -> Figure | None:
    per_interval = _community_energy(result)
    if not per_interval:
        return None
    times = list(per_interval)
    days = _days(times)
    local = [v[0] / 1000 for v in per_interval.values()]
    grid_in = [v[1] / 1000 for v in per_interval.values()]
    grid_out = [-v[2] / 1000 for v in per_interval.values()]
    width = result.interval_s / 86400 * 0.9
    figure = _new_figure(9, 3.6)
    axes = figure.add_subplot()
    axes.bar(days, local, width=width, align="edge", color="tab:purple", label="local market")
    axes.bar(
        days, grid_in, width=width, align="edge", bottom=local, color="tab:red", label="grid import"
    )
    axes.bar(days, grid_out, width=width, align="edge", color="tab:green", label="grid export")
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_ylabel("kWh per interval (export below zero)")
    axes.legend(loc="best", fontsize="small")
    _time_axis(axes, times, zone)
    return figure


def _plot_costs(summary: dict[str, Any]) -> Figure | None:
    households = summary["households"]
    if not households:
        return None
    names = [h["meter_id"] for h in households]
    positions = range(len(names))
    figure = _new_figure(min(max(6.0, 0.45 * len(names) + 2), 24.0), 3.8)
    axes = figure.add_subplot()
    axes.bar(
        [p - 0.2 for p in positions],
        [h["cost_without_market"] for h in households],
        width=0.4,
        color="tab:gray",
        label="without market (grid tariffs)",
    )
    axes.bar(
        [p + 0.2 for p in positions],
        [h["cost_with_market"] for h in households],
        width=0.4,
        color="tab:blue",
        label="with local market",
    )
    axes.axhline(0, color="black", linewidth=0.6)
    axes.set_xticks(list(positions), names, rotation=90 if len(names) > 12 else 30, fontsize=8)
    axes.set_ylabel("net cost (currency; negative = income)")
    axes.legend(loc="best", fontsize="small")
    axes.grid(True, axis="y", alpha=0.3)
    return figure


def _plot_battery(result: SimulationResult, zone: ZoneInfo) -> Figure | None:
    with_battery = [
        h
        for h in result.households
        if any(row.battery_soc_fraction is not None for row in h.intervals)
    ]
    if not with_battery:
        return None
    figure = _new_figure(9, 3.6)
    axes = figure.add_subplot()
    all_times: list[datetime] = []
    for household in with_battery:
        times = [row.interval_start for row in household.intervals]
        soc = [
            float("nan") if row.battery_soc_fraction is None else row.battery_soc_fraction * 100
            for row in household.intervals
        ]
        axes.plot(_days(times), soc, label=household.meter_id, linewidth=1.2)
        all_times.extend(times)
    axes.set_ylim(0, 100)
    axes.set_ylabel("state of charge (%)")
    if len(with_battery) <= 12:
        axes.legend(loc="best", fontsize="small", ncols=2)
    _time_axis(axes, all_times, zone)
    return figure


def _plot_gas(result: SimulationResult, zone: ZoneInfo) -> Figure | None:
    if not result.market:
        return None
    times = [m.interval_start for m in result.market]
    days = _days(times)
    batch = [m.gas_batch for m in result.market]
    delivery = [m.gas_delivery for m in result.market]
    width = result.interval_s / 86400 * 0.9
    figure = _new_figure(9, 3.2)
    axes = figure.add_subplot()
    axes.bar(days, batch, width=width, align="edge", color="tab:orange", label="trade batch")
    axes.bar(
        days,
        delivery,
        width=width,
        align="edge",
        bottom=batch,
        color="tab:brown",
        label="delivery settlement",
    )
    axes.set_ylabel("gas per interval")
    axes.legend(loc="best", fontsize="small")
    _time_axis(axes, times, zone)
    return figure


# --------------------------------------------------------------------------------------------
# HTML


def _kwh(wh: float) -> str:
    return f"{wh / 1000:,.2f}"


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _fraction(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f} %"


def _percent_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f} %"


TABLE_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("local_bought_wh", "bought locally (kWh)", _kwh),
    ("local_sold_wh", "sold locally (kWh)", _kwh),
    ("grid_import_wh", "grid import (kWh)", _kwh),
    ("grid_export_wh", "grid export (kWh)", _kwh),
    ("load_wh", "load (kWh)", _kwh),
    ("pv_wh", "PV (kWh)", _kwh),
    ("cost_with_market", "cost with market", _money),
    ("cost_without_market", "cost without market", _money),
    ("savings", "savings", _money),
    ("savings_percent", "savings (%)", _percent_text),
    ("self_sufficiency", "self-sufficiency", _fraction),
    ("chain_balance_change", "chain balance change", _money),
    ("certificates_issued_wh", "certified (kWh)", _kwh),
    ("certificates_retired_wh", "retired for it (kWh)", _kwh),
    ("hourly_matched_fraction", "24/7 matched", _fraction),
    ("fund_shares", "fund shares", str),
    ("fund_revenue", "fund revenue", _money),
)

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.community td { font-weight: bold; background: #f8f8e8; }
.ok { color: #176317; } .bad { color: #a31515; }
figure { margin: 1.5em 0; } img { max-width: 100%; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
"""


def _table_html(summary: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in TABLE_COLUMNS)
    rows = []
    for household in summary["households"]:
        cells = "".join(f"<td>{fmt(household[key])}</td>" for key, _, fmt in TABLE_COLUMNS)
        rows.append(
            f'<tr><td class="text">{html.escape(household["meter_id"])}</td>'
            f'<td class="text">{html.escape(household["protocol"])}</td>'
            f"<td>{household['pv_kwp']:g}</td><td>{household['battery_kwh']:g}</td>{cells}</tr>"
        )
    community = summary["community"]
    cells = "".join(f"<td>{fmt(community[key])}</td>" for key, _, fmt in TABLE_COLUMNS)
    rows.append(
        f'<tr class="community"><td class="text">community</td>'
        f'<td class="text">{community["households"]} households</td>'
        f"<td>{community['pv_kwp']:g}</td><td>{community['battery_kwh']:g}</td>{cells}</tr>"
    )
    return (
        '<table id="summary"><thead><tr><th class="text">meter</th><th class="text">protocol</th>'
        f"<th>PV (kWp)</th><th>battery (kWh)</th>{head}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _facts_html(summary: dict[str, Any], zone: ZoneInfo) -> str:
    if summary["chain_agrees"]:
        chain = '<span class="ok">every balance agrees with the settlements</span>'
    else:
        meters = ", ".join(html.escape(d["meter_id"]) for d in summary["disagreements"])
        chain = f'<span class="bad">balances disagree with the settlements for: {meters}</span>'
    tariffs = summary["tariffs"]
    facts = [
        ("mechanism", html.escape(summary["mechanism"])),
        (
            "grid tariffs",
            f"retail {tariffs['retail_price']:g}, feed-in {tariffs['feed_in_price']:g} per kWh",
        ),
        ("intervals", f"{summary['intervals']} of {summary['interval_s']} s"),
        ("gas used", f"{summary['gas_used']:,} ({summary['gas_per_interval']:,} per interval)"),
        ("chain", f"id {summary['chain_id']}; {chain}"),
        ("wall time", f"{summary['wall_time_s']:.1f} s"),
        ("times", f"plots in local time ({html.escape(zone.key)}); JSON in UTC"),
    ]
    community = summary["community"]
    facts.append(
        (
            "certificates",
            f"{_kwh(community['certificates_issued_wh'])} kWh certified, "
            f"{_kwh(community['certificates_retired_wh'])} kWh retired for local buyers; "
            f"24/7 matched {_fraction(community['hourly_matched_fraction'])} "
            f"({summary['gas_certificates']:,} gas)",
        )
    )
    fund = summary.get("fund")
    if fund:
        facts.append(
            (
                "community plant",
                f"meter {html.escape(fund['plant_meter_id'])}: {fund['shares']} shares, "
                f"{_money(fund['raised'])} raised, {_money(fund['revenue_distributed'])} revenue "
                f"distributed, {_money(fund['revenue_claimed'])} claimed",
            )
        )
    facts += [
        (f"contract {html.escape(name)}", f"<code>{html.escape(address)}</code>")
        for name, address in summary["contracts"].items()
    ]
    facts += _prepaid_facts(summary)
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return f"<dl>{items}</dl>"


def _prepaid_facts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """One line per prepaid household: relay-open intervals, import meanwhile, switchings."""
    facts = []
    for h in summary["households"]:
        if not h.get("prepaid"):
            continue
        cut = h["import_wh_while_cut"]
        verdict = "ok" if cut == 0 else "bad"
        facts.append(
            (
                f"prepaid {html.escape(h['meter_id'])}",
                f"relay open {h['relay_off_intervals']} intervals, "
                f'<span class="{verdict}">{cut:g} Wh imported meanwhile</span>; '
                f"cut off at {html.escape(', '.join(h['cut_offs']) or 'never')}, "
                f"reconnected at {html.escape(', '.join(h['reconnects']) or 'never')}; "
                f"credit after {h['prepaid_credit_after']:g} ({h['prepaid_state_after']})",
            )
        )
    return facts


def _figure_html(title: str, figure: Figure | None, missing: str) -> str:
    if figure is None:
        return f"<h2>{html.escape(title)}</h2><p>{html.escape(missing)}</p>"
    data = _png_base64(figure)
    return (
        f"<figure><h2>{html.escape(title)}</h2>"
        f'<img alt="{html.escape(title)}" src="data:image/png;base64,{data}"></figure>'
    )


def render_html(result: SimulationResult, summary: dict[str, Any], zone: ZoneInfo) -> str:
    """One self-contained page: no scripts, no links out, plots embedded as PNG data URIs."""
    figures = [
        ("Local clearing price per interval", _plot_prices(result, zone), "No market intervals."),
        ("Community energy per interval", _plot_energy(result, zone), "No metered intervals."),
        ("Cost per household, with and without the market", _plot_costs(summary), "No houses."),
        (
            "Battery state of charge",
            _plot_battery(result, zone),
            "No household has a battery.",
        ),
        ("Gas per interval", _plot_gas(result, zone), "No market intervals."),
    ]
    title = f"meterchain simulation: {summary['scenario']}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{_facts_html(summary, zone)}"
        "<h2>Households and community</h2>"
        "<p>Costs in currency units (negative = income). Self-sufficiency is 1 − grid import /"
        " load; energy bought on the local market counts as local.</p>"
        f"{_table_html(summary)}"
        f"{''.join(_figure_html(*entry) for entry in figures)}"
        "</body></html>\n"
    )


def write_report(
    result: SimulationResult, out_dir: Path, timezone: str = DEFAULT_TIMEZONE
) -> tuple[Path, Path]:
    """Write `report.json` and `report.html` into `out_dir` (created if missing).

    Times in the plots are shown in `timezone` (the scenario's, Fortaleza by default); the JSON
    keeps UTC ISO 8601 timestamps.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(
            f"unknown time zone {timezone!r}; use an IANA name such as 'America/Fortaleza'"
        ) from None
    summary = summarise(result)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        json_path = out_dir / "report.json"
        html_path = out_dir / "report.html"
        json_path.write_text(json.dumps(summary, indent=2) + "\n")
        html_path.write_text(render_html(result, summary, zone))
    except OSError as exc:
        raise ReportError(
            f"cannot write the report into {out_dir}: {exc.strerror or exc}; "
            "choose a writable directory"
        ) from None
    return json_path, html_path


# --------------------------------------------------------------------------------------------
# Terminal


def print_summary(
    summary: dict[str, Any], console: Console, max_households: int | None = None
) -> None:
    """A Rich table, one line per household and a community line; long streets are cut."""
    table = Table(
        title=f"{summary['scenario']} — {summary['mechanism']}, {summary['intervals']} intervals",
        header_style="bold",
    )
    table.add_column("meter")
    table.add_column("protocol")
    for title in (
        "bought kWh",
        "sold kWh",
        "grid in kWh",
        "grid out kWh",
        "cost with",
        "cost without",
        "savings",
        "self-suff.",
        "chain Δ",
    ):
        table.add_column(title, justify="right")

    def cells(entry: dict[str, Any]) -> list[str]:
        return [
            _kwh(entry["local_bought_wh"]),
            _kwh(entry["local_sold_wh"]),
            _kwh(entry["grid_import_wh"]),
            _kwh(entry["grid_export_wh"]),
            _money(entry["cost_with_market"]),
            _money(entry["cost_without_market"]),
            _money(entry["savings"]),
            _fraction(entry["self_sufficiency"]),
            _money(entry["chain_balance_change"]),
        ]

    households = summary["households"]
    shown = households if max_households is None else households[:max_households]
    for household in shown:
        table.add_row(household["meter_id"], household["protocol"], *cells(household))
    if len(shown) < len(households):
        table.add_row(f"… {len(households) - len(shown)} more", "", *[""] * 9)
    community = summary["community"]
    table.add_section()
    table.add_row(
        "community", f"{community['households']} households", *cells(community), style="bold"
    )
    console.print(table)
    console.print(
        f"certificates: {_kwh(community['certificates_issued_wh'])} kWh certified, "
        f"{_kwh(community['certificates_retired_wh'])} kWh retired for local buyers, 24/7 "
        f"matched {_fraction(community['hourly_matched_fraction'])}; fund revenue claimed "
        f"{_money(community['fund_revenue'])}"
    )
    gas = f"gas used {summary['gas_used']:,} ({summary['gas_per_interval']:,} per interval)"
    if summary["chain_agrees"]:
        console.print(f"{gas}; [green]chain balances agree with the settlements[/]")
    else:
        meters = ", ".join(d["meter_id"] for d in summary["disagreements"])
        console.print(f"{gas}; [bold red]chain balances disagree for: {meters}[/]")
