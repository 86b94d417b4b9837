"""What every benchmark shares: where results go and how they are written."""

from __future__ import annotations

import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_result(name: str, results: dict[str, Any]) -> Path:
    """Write bench/results/NAME.json with the machine it ran on, and return its path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    document = {
        "benchmark": name,
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        "results": results,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path
