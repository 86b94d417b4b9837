"""`meterchain simulate` and `meterchain demo`: the community simulation from the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from meterchain.commands.errors import USER_ERROR_NAMES, user_errors

# pydantic and the simulation load only when a command runs.
USER_ERROR_NAMES.update({"meterchain.config:ConfigError", "meterchain.sim.errors:SimulationError"})

# Piped output (make run in CI, a log file) gets a table wide enough to read, not 80 columns.
console = Console(highlight=False, width=None if sys.stdout.isatty() else 150)
stderr = Console(stderr=True, highlight=False)

DEMO_SCENARIO = Path("scenarios/fortaleza-street-10.toml")


def run_scenario(path: Path, out_dir: Path, *, as_json: bool) -> dict[str, object]:
    """Simulate the scenario at `path`, write the report to `out_dir`, print the summary."""
    import asyncio

    from meterchain.config import Scenario, load_toml
    from meterchain.sim.community import run_community
    from meterchain.sim.report import print_summary, summarise, write_report

    scenario = load_toml(path, Scenario)
    households = len(scenario.all_households())
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=as_json,
    ) as progress:
        task = progress.add_task(
            f"{scenario.name}: {households} households, intervals", total=scenario.intervals
        )
        result = asyncio.run(
            run_community(
                scenario,
                out_dir / "state",
                on_progress=lambda done, _total: progress.update(task, completed=done),
            )
        )
    summary = summarise(result)
    json_path, html_path = write_report(result, out_dir, scenario.location.timezone)
    if as_json:
        print(json.dumps(summary))
    else:
        print_summary(summary, console, max_households=20)
        console.print(f"report: {html_path} and {json_path}")
    if not summary.get("chain_agrees", False):
        stderr.print(
            "[bold red]error:[/] the chain's balances disagree with the settlement computed "
            f"off chain: {summary.get('disagreements')}"
        )
        raise typer.Exit(2)
    return summary


@user_errors
def simulate(
    scenario: Annotated[
        Path, typer.Argument(help="Scenario TOML, e.g. scenarios/fortaleza-street-10.toml")
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON object.")
    ] = False,
    out: Annotated[Path, typer.Option(help="Where to write report.json and report.html.")] = Path(
        "reports/latest"
    ),
) -> None:
    """Simulate a community: meters on loopback, a local chain, all agents, virtual time."""
    run_scenario(scenario, out, as_json=as_json)


@user_errors
def demo(
    scenario: Annotated[Path, typer.Option(help="The scenario to run.")] = DEMO_SCENARIO,
    out: Annotated[Path, typer.Option(help="Where to write the report.")] = Path("reports/demo"),
) -> None:
    """The main job: a local chain, the 10-household Fortaleza street for one day, the summary."""
    run_scenario(scenario, out, as_json=False)
