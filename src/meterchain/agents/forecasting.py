"""What a deployed board expects over its planning horizon: PV and load per step.

A board knows its site (PV peak power, place, expected daily consumption) and what its meter
measured. PV is the clear-sky profile of the site (numpy only: `board.solar`; pvlib and pandas
stay off a board). Load is the measured net
import per interval once there is history and no PV hides it in the net; otherwise the daily
consumption spread evenly: an honest first guess that the MILP can plan with.
"""

from __future__ import annotations

from datetime import datetime

from meterchain.board.solar import clear_sky_pv_w
from meterchain.der.forecast import load_forecast_w
from meterchain.roles import SiteConfig
from meterchain.store.records import Records

HISTORY_DAYS = 7


def net_import_history_w(records: Records, interval_s: int) -> list[float]:
    """Mean net import power (W) of each recorded interval, from its signed reading's two ends.

    Only the run of consecutive intervals that ends with the latest reading counts: a gap
    (the board was down) starts the history afresh.
    """
    readings = sorted(
        (
            int(key),
            (int(r["end_import_wh"]) - int(r["start_import_wh"]))
            - (int(r["end_export_wh"]) - int(r["start_export_wh"])),
        )
        for key, r in records.all("delivery").items()
    )
    history: list[float] = []
    previous: int | None = None
    for interval, net_wh in readings:
        if previous is not None and interval - previous != interval_s:
            history = []
        history.append(net_wh * 3600 / interval_s)
        previous = interval
    return history[-HISTORY_DAYS * 86400 // interval_s :]


class BoardForecast:
    """The forecast a DerPlanner asks for: (start, steps) -> (pv_w, load_w)."""

    def __init__(self, site: SiteConfig, records: Records, *, step_s: int) -> None:
        self.site = site
        self.records = records
        self.step_s = step_s

    def __call__(self, start: datetime, steps: int) -> tuple[list[float], list[float]]:
        if self.site.pv_kwp > 0:
            pv_w = list(
                clear_sky_pv_w(
                    start,
                    latitude=self.site.latitude,
                    longitude=self.site.longitude,
                    peak_power_w=self.site.pv_kwp * 1000,
                    steps=steps,
                    step_s=self.step_s,
                )
            )
        else:
            pv_w = [0.0] * steps
        history = net_import_history_w(self.records, self.step_s) if not self.site.pv_kwp else []
        if history:
            load_w = list(
                load_forecast_w(
                    [max(0.0, w) for w in history],
                    horizon_steps=steps,
                    steps_per_day=max(1, 86400 // self.step_s),
                )
            )
        else:
            load_w = [self.site.daily_kwh * 1000 / 24] * steps
        return pv_w, load_w
