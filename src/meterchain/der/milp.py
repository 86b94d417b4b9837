"""A MILP assembled in blocks, kept in numpy arrays, handed to HiGHS once and then edited.

`MilpBuilder` collects columns and rows (row-wise, compressed); `Milp` is the finished matrix with
its default bounds and costs. What changes from one horizon to the next (bounds, costs, row
bounds, a few coefficients, which binaries are integral) is a `MilpValues`; `push` sends only the
entries that differ from what HiGHS holds, so a re-plan edits the kept model instead of
building it again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int32]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
INF = math.inf


@dataclass
class MilpValues:
    """Everything in a model that the data decide."""

    col_lower: FloatArray
    col_upper: FloatArray
    col_cost: FloatArray
    row_lower: FloatArray
    row_upper: FloatArray
    coef: FloatArray  # the data coefficients, in the order they were declared
    integral: BoolArray  # per binary: solved as an integer (else relaxed to [0, 1])

    def copy(self) -> MilpValues:
        return MilpValues(
            self.col_lower.copy(),
            self.col_upper.copy(),
            self.col_cost.copy(),
            self.row_lower.copy(),
            self.row_upper.copy(),
            self.coef.copy(),
            self.integral.copy(),
        )


@dataclass
class MilpBuilder:
    lower: list[FloatArray] = field(default_factory=list)
    upper: list[FloatArray] = field(default_factory=list)
    cost: list[FloatArray] = field(default_factory=list)
    n_cols: int = 0
    binaries: list[int] = field(default_factory=list)
    row_cols: list[IntArray] = field(default_factory=list)
    row_vals: list[FloatArray] = field(default_factory=list)
    row_lengths: list[IntArray] = field(default_factory=list)
    row_lower: list[FloatArray] = field(default_factory=list)
    row_upper: list[FloatArray] = field(default_factory=list)
    n_rows: int = 0
    n_nz: int = 0
    coef_positions: list[int] = field(default_factory=list)
    coef_rows: list[int] = field(default_factory=list)
    coef_cols: list[int] = field(default_factory=list)

    def cols(self, n: int, lower: float = 0.0, upper: float = INF, cost: float = 0.0) -> IntArray:
        """`n` new columns with the same default bounds and cost."""
        first = self.n_cols
        self.lower.append(np.full(n, lower))
        self.upper.append(np.full(n, upper))
        self.cost.append(np.full(n, cost))
        self.n_cols += n
        return np.arange(first, first + n, dtype=np.int32)

    def binaries_(self, n: int) -> IntArray:
        cols = self.cols(n, 0.0, 1.0)
        self.binaries.extend(int(c) for c in cols)
        return cols

    def rows(
        self,
        cols: npt.ArrayLike,
        vals: npt.ArrayLike,
        lower: npt.ArrayLike = -INF,
        upper: npt.ArrayLike = INF,
    ) -> tuple[IntArray, IntArray]:
        """Rows of equal length k: `cols` and `vals` are (n, k). Returns the row indices and the
        position of each row's first entry (to declare data coefficients)."""
        c = np.atleast_2d(np.asarray(cols, dtype=np.int32))
        v = np.broadcast_to(np.asarray(vals, dtype=np.float64), c.shape)
        n, k = c.shape
        first_nz = self.n_nz + k * np.arange(n, dtype=np.int32)
        self.row_cols.append(c.reshape(-1))
        self.row_vals.append(np.ascontiguousarray(v).reshape(-1))
        self.row_lengths.append(np.full(n, k, dtype=np.int32))
        self.row_lower.append(np.broadcast_to(np.asarray(lower, dtype=np.float64), (n,)).copy())
        self.row_upper.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (n,)).copy())
        first_row = self.n_rows
        self.n_rows += n
        self.n_nz += n * k
        return np.arange(first_row, first_row + n, dtype=np.int32), first_nz

    def rows_interleaved(
        self, blocks: Sequence[tuple[npt.ArrayLike, npt.ArrayLike, float, float]]
    ) -> list[tuple[IntArray, IntArray]]:
        """Several blocks of n rows each, added step by step: row 0 of every block, then row 1
        of every block, and so on (the order a per-step loop would add them in; the simplex
        method's choice among equally good plans depends on it). Returns each block's row
        indices and first-entry positions."""
        parts = []
        for cols, vals, _, _ in blocks:
            c = np.atleast_2d(np.asarray(cols, dtype=np.int32))
            parts.append((c, np.broadcast_to(np.asarray(vals, dtype=np.float64), c.shape)))
        n = parts[0][0].shape[0]
        widths = [c.shape[1] for c, _ in parts]
        per_step = sum(widths)
        self.row_cols.append(np.concatenate([c for c, _ in parts], axis=1).reshape(-1))
        self.row_vals.append(np.concatenate([v for _, v in parts], axis=1).reshape(-1))
        self.row_lengths.append(np.tile(np.asarray(widths, dtype=np.int32), n))
        lowers = np.asarray([lo for _, _, lo, _ in blocks], dtype=np.float64)
        uppers = np.asarray([up for _, _, _, up in blocks], dtype=np.float64)
        self.row_lower.append(np.tile(lowers, n))
        self.row_upper.append(np.tile(uppers, n))
        out = []
        offset = 0
        for k, width in enumerate(widths):
            rows = self.n_rows + k + len(blocks) * np.arange(n, dtype=np.int32)
            first_nz = self.n_nz + offset + per_step * np.arange(n, dtype=np.int32)
            out.append((rows.astype(np.int32), first_nz.astype(np.int32)))
            offset += width
        self.n_rows += n * len(blocks)
        self.n_nz += n * per_step
        return out

    def row(
        self, cols: Sequence[int], vals: Sequence[float], lower: float = -INF, upper: float = INF
    ) -> int:
        rows, _ = self.rows([list(cols)], [list(vals)], lower, upper)
        return int(rows[0])

    def data_coef(
        self, rows: IntArray, first_nz: IntArray, offset: int, cols: IntArray
    ) -> IntArray:
        """Declare the entry at `offset` within each of `rows` as set by the data; returns the
        indices of those entries in `MilpValues.coef`."""
        start = len(self.coef_positions)
        self.coef_positions.extend(int(p) for p in first_nz + offset)
        self.coef_rows.extend(int(r) for r in rows)
        self.coef_cols.extend(int(c) for c in cols)
        return np.arange(start, start + len(rows), dtype=np.int32)

    def finish(self) -> Milp:
        lengths = np.concatenate(self.row_lengths) if self.row_lengths else np.zeros(0, np.int32)
        starts = np.zeros(len(lengths), dtype=np.int32)
        if len(lengths):
            starts[1:] = np.cumsum(lengths)[:-1]
        defaults = MilpValues(
            np.concatenate(self.lower) if self.lower else np.zeros(0),
            np.concatenate(self.upper) if self.upper else np.zeros(0),
            np.concatenate(self.cost) if self.cost else np.zeros(0),
            np.concatenate(self.row_lower) if self.row_lower else np.zeros(0),
            np.concatenate(self.row_upper) if self.row_upper else np.zeros(0),
            np.zeros(len(self.coef_positions)),
            np.ones(len(self.binaries), dtype=np.bool_),
        )
        return Milp(
            n_cols=self.n_cols,
            n_rows=self.n_rows,
            row_start=starts,
            row_index=np.concatenate(self.row_cols) if self.row_cols else np.zeros(0, np.int32),
            row_value=np.concatenate(self.row_vals) if self.row_vals else np.zeros(0),
            binaries=np.asarray(self.binaries, dtype=np.int32),
            coef_positions=np.asarray(self.coef_positions, dtype=np.int64),
            coef_rows=np.asarray(self.coef_rows, dtype=np.int32),
            coef_cols=np.asarray(self.coef_cols, dtype=np.int32),
            defaults=defaults,
        )


@dataclass
class Milp:
    n_cols: int
    n_rows: int
    row_start: IntArray
    row_index: IntArray
    row_value: FloatArray
    binaries: IntArray
    coef_positions: npt.NDArray[np.int64]
    coef_rows: IntArray
    coef_cols: IntArray
    defaults: MilpValues

    def highs(
        self, values: MilpValues, *, time_limit_s: float, mip_rel_gap: float, relaxed: bool = False
    ) -> highspy.Highs:
        """A HiGHS instance holding this model with `values` (its LP relaxation if `relaxed`)."""
        solver = highspy.Highs()  # type: ignore[no-untyped-call]
        solver.setOptionValue("output_flag", False)
        solver.setOptionValue("time_limit", float(time_limit_s))
        solver.setOptionValue("mip_rel_gap", float(mip_rel_gap))
        solver.setOptionValue("threads", 1)
        self.row_value[self.coef_positions] = values.coef
        empty_int: IntArray = np.zeros(0, dtype=np.int32)
        solver.addCols(
            self.n_cols,
            values.col_cost,
            values.col_lower,
            values.col_upper,
            0,
            empty_int,
            empty_int,
            np.zeros(0, dtype=np.float64),
        )
        solver.addRows(
            self.n_rows,
            values.row_lower,
            values.row_upper,
            len(self.row_index),
            self.row_start,
            self.row_index,
            self.row_value,
        )
        if len(self.binaries) and not relaxed:
            kinds = values.integral.astype(np.uint8)
            solver.changeColsIntegrality(len(self.binaries), self.binaries, kinds)
        return solver

    def push(
        self, solver: highspy.Highs, held: MilpValues, new: MilpValues, *, relaxed: bool = False
    ) -> None:
        """Edit `solver` (holding `held`) to hold `new`: only what changed is sent. A `relaxed`
        solver keeps every binary continuous (its caller sets integrality when it needs it)."""
        changed = np.flatnonzero(
            (held.col_lower != new.col_lower) | (held.col_upper != new.col_upper)
        ).astype(np.int32)
        if len(changed):
            solver.changeColsBounds(
                len(changed), changed, new.col_lower[changed], new.col_upper[changed]
            )
        changed = np.flatnonzero(held.col_cost != new.col_cost).astype(np.int32)
        if len(changed):
            solver.changeColsCost(len(changed), changed, new.col_cost[changed])
        changed = np.flatnonzero(
            (held.row_lower != new.row_lower) | (held.row_upper != new.row_upper)
        ).astype(np.int32)
        if len(changed):
            solver.changeRowsBounds(  # type: ignore[attr-defined]
                len(changed), changed, new.row_lower[changed], new.row_upper[changed]
            )
        for k in np.flatnonzero(held.coef != new.coef):
            solver.changeCoeff(int(self.coef_rows[k]), int(self.coef_cols[k]), float(new.coef[k]))
        self.row_value[self.coef_positions] = new.coef
        changed = np.flatnonzero(held.integral != new.integral).astype(np.int32)
        if len(changed) and not relaxed:
            solver.changeColsIntegrality(
                len(changed), self.binaries[changed], new.integral[changed].astype(np.uint8)
            )

    def activity(self, x: FloatArray) -> FloatArray:
        """Each row's value at `x`."""
        products = self.row_value * x[self.row_index]
        if not len(products):
            return np.zeros(self.n_rows)
        lengths = np.diff(np.append(self.row_start, len(self.row_index)))
        out = np.zeros(self.n_rows)
        nonempty = lengths > 0
        out[nonempty] = np.add.reduceat(products, self.row_start[nonempty])
        return out

    def satisfied(self, values: MilpValues, x: FloatArray, tolerance: float = 1e-6) -> bool:
        """Whether `x` meets every row and bound (relative tolerance, as HiGHS's feasibility)."""
        activity = self.activity(x)
        slack = tolerance * np.maximum(1.0, np.abs(activity))
        rows_ok = np.all(activity >= values.row_lower - slack) and np.all(
            activity <= values.row_upper + slack
        )
        col_slack = tolerance * np.maximum(1.0, np.abs(x))
        cols_ok = np.all(x >= values.col_lower - col_slack) and np.all(
            x <= values.col_upper + col_slack
        )
        return bool(rows_ok and cols_ok)
