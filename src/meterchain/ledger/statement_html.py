"""A statement as a printable HTML page, in Brazilian Portuguese or English.

Self-contained (no scripts, no links out, print styles inline); numbers and dates in the
language's conventions (pt-BR: 1.234,56 and 01/11/2026); the statement's hash and the chain
it can be checked on are printed at the foot.
"""

from __future__ import annotations

import html
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

Language = Literal["en", "pt-BR"]
LANGUAGES: tuple[Language, ...] = ("en", "pt-BR")

LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "title": "Energy statement",
        "meter": "Meter",
        "owner": "Account holder",
        "period": "Period",
        "energy": "Energy",
        "imported": "Taken from the network",
        "exported": "Fed into the network",
        "grid_import": "From the grid",
        "grid_export": "To the grid",
        "local_bought": "Bought from neighbours",
        "local_sold": "Sold to neighbours",
        "charges": "Charges and credits",
        "line": "Item",
        "kwh": "kWh",
        "amount": "Amount",
        "local_purchases": "Local purchases",
        "local_sales": "Local sales",
        "unused_purchases_sold_back": "Purchases not used, sold back at feed-in",
        "undelivered_sales_bought_back": "Sales not delivered, bought back at retail",
        "other_energy_and_rounding": "Other energy at the tariffs, and rounding",
        "average_price": "average price per kWh",
        "total_charges": "Total for the period (negative: credit)",
        "paid_from_balance": "Paid from the meter's balance",
        "owed": "Owed",
        "paid_since": "Paid since issue",
        "outstanding": "Outstanding",
        "certificates": "Renewable-energy certificates",
        "issued": "Issued for your generation",
        "received": "Received in your account",
        "retired_for_meter": "Retired in your name (local renewable supply)",
        "retired_by_owner": "Retired by you",
        "fund_revenue": "Community fund revenue claimed",
        "intervals": "Intervals settled",
        "pending": "awaiting settlement",
        "proof": "Statement hash (keccak-256), recorded on chain",
        "chain": "Chain",
        "market": "Market contract",
    },
    "pt-BR": {
        "title": "Extrato de energia",
        "meter": "Medidor",
        "owner": "Titular",
        "period": "Período",
        "energy": "Energia",
        "imported": "Consumida da rede",
        "exported": "Injetada na rede",
        "grid_import": "Da distribuidora",
        "grid_export": "Para a distribuidora",
        "local_bought": "Comprada dos vizinhos",
        "local_sold": "Vendida aos vizinhos",
        "charges": "Débitos e créditos",
        "line": "Item",
        "kwh": "kWh",
        "amount": "Valor",
        "local_purchases": "Compras locais",
        "local_sales": "Vendas locais",
        "unused_purchases_sold_back": "Compras não consumidas, revendidas à tarifa de injeção",
        "undelivered_sales_bought_back": "Vendas não entregues, recompradas à tarifa",
        "other_energy_and_rounding": "Outra energia às tarifas, e arredondamento",
        "average_price": "preço médio por kWh",
        "total_charges": "Total do período (negativo: crédito)",
        "paid_from_balance": "Pago do saldo do medidor",
        "owed": "Em aberto",
        "paid_since": "Pago após a emissão",
        "outstanding": "A pagar",
        "certificates": "Certificados de energia renovável",
        "issued": "Emitidos pela sua geração",
        "received": "Recebidos na sua conta",
        "retired_for_meter": "Aposentados em seu nome (suprimento renovável local)",
        "retired_by_owner": "Aposentados por você",
        "fund_revenue": "Receita do fundo comunitário recebida",
        "intervals": "Intervalos liquidados",
        "pending": "aguardando liquidação",
        "proof": "Hash do extrato (keccak-256), registrado na blockchain",
        "chain": "Blockchain",
        "market": "Contrato do mercado",
    },
}
LINE_LABELS: dict[Language, dict[str, str]] = {
    "en": {
        "grid_import": "Energy from the grid (retail)",
        "grid_export": "Energy to the grid (feed-in)",
    },
    "pt-BR": {
        "grid_import": "Energia da distribuidora (tarifa)",
        "grid_export": "Energia injetada (tarifa de injeção)",
    },
}

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 48em; margin: 2em auto; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; } h2 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; width: 100%; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.total td { font-weight: bold; border-top: 2px solid #222; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; } code { font-size: 0.8em; word-break: break-all; }
@media print { body { margin: 0; max-width: none; } }
"""


def _number(value: float, decimals: int, language: Language) -> str:
    text = f"{value:,.{decimals}f}"
    if language == "pt-BR":
        text = text.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return text


def _date(iso_time: str, timezone: str, language: Language) -> str:
    moment = datetime.fromisoformat(iso_time).astimezone(ZoneInfo(timezone))
    return moment.strftime("%d/%m/%Y" if language == "pt-BR" else "%Y-%m-%d")


def render_statement_html(statement: dict[str, Any], language: Language = "en") -> str:
    """The statement as one printable page."""
    if language not in LABELS:
        raise ValueError(
            f"language {language!r} is not available; use one of {', '.join(LANGUAGES)}"
        )
    t = LABELS[language]
    decimals = int(statement["currency"]["decimals"])
    symbol = html.escape(str(statement["currency"]["symbol"]))

    def money(value: float) -> str:
        return f"{_number(value, decimals, language)} {symbol}"

    def kwh(wh: int | None) -> str:
        return "" if wh is None else _number(wh / 1000, 3, language)

    e = html.escape
    zone = str(statement["timezone"])
    # The period's last day is the day before its (exclusive) end.
    end_day = datetime.fromtimestamp(
        datetime.fromisoformat(statement["period_end"]).timestamp() - 1, ZoneInfo(zone)
    ).isoformat()
    period = (
        f"{_date(statement['period_start'], zone, language)} – {_date(end_day, zone, language)}"
    )
    energy = statement["energy"]
    energy_rows = [
        (t["imported"], energy["imported_wh"]),
        (t["exported"], energy["exported_wh"]),
        (t["local_bought"], energy["local_received_wh"]),
        (t["local_sold"], energy["local_delivered_wh"]),
        (t["grid_import"], energy["grid_import_wh"]),
        (t["grid_export"], energy["grid_export_wh"]),
    ]
    line_names = {**t, **LINE_LABELS[language]}
    lines = "".join(
        f"<tr><td>{e(line_names[line['key']])}</td><td>{kwh(line['wh'])}</td>"
        f"<td>{money(line['amount'])}</td></tr>"
        for line in statement["lines"]
        if line["amount_units"] or line["wh"]
    )
    totals = statement["totals"]
    total_rows = [
        (t["total_charges"], money(totals["charges"])),
        (t["paid_from_balance"], money(totals["paid_from_balance"])),
        (t["owed"], money(totals["owed"])),
    ]
    payment = statement.get("payment") or {}
    if payment:
        scale = 10**decimals
        total_rows += [
            (t["paid_since"], money(payment["paid_units"] / scale)),
            (t["outstanding"], money(payment["outstanding_units"] / scale)),
        ]
    prices = []
    for key in ("local_purchases", "local_sales"):
        average = statement[key]["average_price_per_kwh"]
        if average is not None:
            prices.append(f"{t[key]}: {money(average)} ({t['average_price']})")
    certificates = statement["certificates"]
    certificate_rows = [
        (t["issued"], certificates["issued_wh"]),
        (t["received"], certificates["received_wh"]),
        (t["retired_for_meter"], certificates["retired_for_meter_wh"]),
        (t["retired_by_owner"], certificates["retired_by_owner_wh"]),
    ]
    intervals = statement["intervals"]
    settled = f"{intervals['settled']}"
    if intervals["pending"]:
        settled += f" (+{intervals['pending']} {t['pending']})"
    chain = statement["chain"]
    return (
        f'<!DOCTYPE html><html lang="{language}"><head><meta charset="utf-8">'
        f"<title>{e(t['title'])} {e(statement['meter_id'])} {e(statement['period'])}</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<h1>{e(t['title'])}</h1><dl>"
        f"<dt>{e(t['meter'])}</dt><dd>{e(statement['meter_id'])}</dd>"
        f"<dt>{e(t['owner'])}</dt><dd><code>{e(statement['owner'])}</code></dd>"
        f"<dt>{e(t['period'])}</dt><dd>{e(period)} ({e(zone)})</dd>"
        f"<dt>{e(t['intervals'])}</dt><dd>{e(settled)}</dd></dl>"
        f"<h2>{e(t['energy'])}</h2><table><tbody>"
        + "".join(
            f"<tr><td>{e(name)}</td><td>{kwh(wh)} {t['kwh']}</td></tr>" for name, wh in energy_rows
        )
        + f"</tbody></table><h2>{e(t['charges'])}</h2><table><thead><tr><th>{e(t['line'])}</th>"
        f"<th>{t['kwh']}</th><th>{e(t['amount'])}</th></tr></thead><tbody>{lines}"
        + "".join(
            f'<tr class="total"><td>{e(name)}</td><td></td><td>{value}</td></tr>'
            for name, value in total_rows
        )
        + "</tbody></table>"
        + "".join(f"<p>{e(text)}</p>" for text in prices)
        + f"<h2>{e(t['certificates'])}</h2><table><tbody>"
        + "".join(
            f"<tr><td>{e(name)}</td><td>{kwh(wh)} {t['kwh']}</td></tr>"
            for name, wh in certificate_rows
        )
        + f"</tbody></table><p>{e(t['fund_revenue'])}: {money(statement['fund_revenue'])}</p>"
        f"<h2>{e(t['proof'])}</h2><p><code>{e(statement['statement_hash'])}</code></p>"
        f"<dl><dt>{e(t['chain'])}</dt><dd>{chain['chain_id']}</dd>"
        f"<dt>{e(t['market'])}</dt><dd><code>{e(chain['market'])}</code></dd></dl>"
        "</body></html>\n"
    )
