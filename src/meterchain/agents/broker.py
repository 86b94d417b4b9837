"""Starting a Mosquitto broker on loopback for tests, the simulation and single-host set-ups."""

from __future__ import annotations

import os
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
    data_dir: Path | None = None

    def restart(self, timeout_s: float = 5.0) -> Broker:
        """Start a broker again on the same port (and, with a data dir, the same sessions)."""
        if self.process.poll() is None:
            self.stop()
        return start_mosquitto(self.port, self.host, timeout_s, data_dir=self.data_dir)

    def stop(self) -> None:
        """Stop with SIGTERM: with a data dir, mosquitto saves its sessions and queues first."""
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


def start_mosquitto(
    port: int = 0,
    host: str = "127.0.0.1",
    timeout_s: float = 5.0,
    *,
    data_dir: Path | None = None,
) -> Broker:
    """Start `mosquitto` listening on host:port (0 picks a free port) and wait until it accepts.

    With `data_dir` the broker keeps its persistent sessions and their queued messages there
    (saved when it stops and every few seconds), so a restarted broker still holds what was
    sent to agents that were away; without it everything lives in memory only.
    """
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(executable).exists():
        raise BrokerError(
            "mosquitto is not installed; install the Debian package `mosquitto` "
            "(.ci/apt-packages.txt lists it) or point the bus at another MQTT 5 broker"
        )
    port = port or free_port(host)
    config_dir = Path(tempfile.mkdtemp(prefix="meterchain-mosquitto-"))
    config = config_dir / "mosquitto.conf"
    if data_dir is None:
        persistence = "persistence false\n"
    else:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        persistence = f"persistence true\npersistence_location {data_dir}/\nautosave_interval 2\n"
    # Started as root, mosquitto drops to the `mosquitto` user and then cannot write its
    # persistence file into a directory root made (it logs the error and carries on).
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        f"listener {port} {host}\nallow_anonymous true\n{user}{persistence}"
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
                return Broker(host, port, process, config_dir, data_dir)
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise BrokerError(f"mosquitto did not listen on {host}:{port} within {timeout_s} s")
