"""Starting a Mosquitto broker on loopback for tests, the simulation and single-host set-ups."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class BrokerError(Exception):
    """Mosquitto could not be started."""


@dataclass
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    config_dir: Path

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.config_dir, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def start_mosquitto(port: int = 0, host: str = "127.0.0.1", timeout_s: float = 5.0) -> Broker:
    """Start `mosquitto` listening on host:port (0 picks a free port) and wait until it accepts."""
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(executable).exists():
        raise BrokerError(
            "mosquitto is not installed; install the Debian package `mosquitto` "
            "(.ci/apt-packages.txt lists it) or point the bus at another MQTT 5 broker"
        )
    port = port or free_port(host)
    config_dir = Path(tempfile.mkdtemp(prefix="meterchain-mosquitto-"))
    config = config_dir / "mosquitto.conf"
    config.write_text(
        f"listener {port} {host}\nallow_anonymous true\npersistence false\n"
        "max_queued_messages 100000\n"
    )
    process = subprocess.Popen(
        [executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            raise BrokerError(f"mosquitto exited at start: {error.strip()[-500:]}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return Broker(host, port, process, config_dir)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise BrokerError(f"mosquitto did not listen on {host}:{port} within {timeout_s} s")
