"""Logs people and log shippers can read: one line per record, JSON on request."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from meterchain.cli import app
from meterchain.log_setup import LOG_FORMAT_ENV, LogSetupError, configure_logging

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_logs_are_one_object_per_line_with_the_event_fields() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    logging.getLogger("meterchain.agents.market").info(
        "market: cleared interval %d", 1800000000,
        extra={"event": "cleared", "interval": 1800000000, "tx_hash": "0xab", "price": 0.5},
    )  # fmt: skip
    try:
        raise ValueError("two\nlines")
    except ValueError:
        logging.getLogger("x").error("failed", exc_info=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "market: cleared interval 1800000000"
    assert (first["event"], first["interval"], first["tx_hash"], first["price"]) == (
        "cleared", 1800000000, "0xab", 0.5,
    )  # fmt: skip
    assert first["level"] == "info" and first["logger"] == "meterchain.agents.market"
    assert first["time"].endswith("+00:00")
    assert "ValueError: two" in second["trace"]


def test_the_format_can_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LOG_FORMAT_ENV, "json")
    out = io.StringIO()
    assert configure_logging("info", stream=out) == "json"
    logging.getLogger("y").info("hello")
    assert json.loads(out.getvalue())["message"] == "hello"
    assert configure_logging("info", "text", stream=io.StringIO()) == "text"  # the option wins


def test_debug_records_are_hidden_at_info() -> None:
    out = io.StringIO()
    configure_logging("info", "text", stream=out)
    logging.getLogger("z").debug("hidden")
    logging.getLogger("z").info("shown")
    assert out.getvalue().count("\n") == 1 and "shown" in out.getvalue()


@pytest.mark.parametrize(
    ("level", "log_format", "named"), [("loud", "text", "log level"), ("info", "xml", "log format")]
)
def test_an_unknown_level_or_format_is_named(level: str, log_format: str, named: str) -> None:
    with pytest.raises(LogSetupError, match=named):
        configure_logging(level, log_format, stream=io.StringIO())


def test_the_run_commands_refuse_an_unknown_log_format_in_one_line() -> None:
    result = CliRunner().invoke(
        app, ["grid", "run", "--config", str(EXAMPLES / "grid.toml"), "--log-format", "xml"]
    )
    assert result.exit_code != 0
    assert "unknown log format 'xml'" in result.output
    assert "Traceback" not in result.output


def test_an_error_asyncio_cannot_hand_to_anyone_is_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A socket closed under the MQTT client while the broker goes away: asyncio logs it
    with a trace by default; a running process logs one line, the trace only at debug."""
    import asyncio

    from meterchain.commands.agents import _loop_exception

    caplog.set_level(logging.INFO)
    loop = asyncio.new_event_loop()
    try:
        _loop_exception(
            loop,
            {
                "message": "Exception in callback BaseSelectorEventLoop.add_writer(14)\nhandle: …",
                "exception": OSError(9, "Bad file descriptor"),
            },
        )
    finally:
        loop.close()
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage() == (
        "Exception in callback BaseSelectorEventLoop.add_writer(14): "
        "OSError: [Errno 9] Bad file descriptor"
    )
