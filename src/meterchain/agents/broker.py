"""Starting a Mosquitto broker on loopback for tests, the simulation and single-host set-ups.

The broker is the community's secured one (`broker_files`): TLS with a CA made for it, a
password per agent and the ACL, so tests run against what a deployment runs. A client needs
the agent's credential and the CA (`Broker.bus`, `Broker.toml_section`); anonymous clients
and clients without TLS are refused.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meterchain.agents.broker_files import OPERATOR_AGENTS, BrokerFiles, write_broker_files

if TYPE_CHECKING:
    from meterchain.agents.bus_mqtt import MqttBus


class BrokerError(Exception):
    """Mosquitto could not be started."""


@dataclass
class Broker:
    host: str
    port: int
    process: subprocess.Popen[bytes]
    config_dir: Path
    data_dir: Path | None = None
    files: BrokerFiles | None = None

    def restart(self, timeout_s: float = 5.0) -> Broker:
        """Start a broker again on the same port, files (and, with a data dir, sessions)."""
        if self.process.poll() is None:
            self.stop()
        process = _launch(self.config_dir / "mosquitto.conf", self.host, self.port, timeout_s)
        return Broker(self.host, self.port, process, self.config_dir, self.data_dir, self.files)

    def stop(self) -> None:
        """Stop with SIGTERM: with a data dir, mosquitto saves its sessions and queues first.

        Its files stay (a stopped broker may be restarted); they go when the process exits."""
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def reload(self) -> None:
        """SIGHUP: Mosquitto reads its password file and ACL again (and drops revoked users)."""
        self.process.send_signal(signal.SIGHUP)

    # ---- clients --------------------------------------------------------------------------------

    def _files(self) -> BrokerFiles:
        if self.files is None:
            raise BrokerError("this broker was started without credentials")
        return self.files

    def add_agents(self, *agents: str, revoke: Sequence[str] = ()) -> None:
        """Issue credentials to more agents (or revoke some); takes effect after `reload`."""
        files = self._files()
        self.files = write_broker_files(
            self.config_dir,
            agents=agents,
            revoke=revoke,
            operators=files.operators,
            superusers=(),
            hosts=files.hosts,
            port=self.port,
            bind=self.host,
            data_dir=self.data_dir,
            run_as_root=os.geteuid() == 0,
        )

    def credentials(self, agent: str) -> tuple[str, str]:
        return agent, self._files().password(agent)

    @property
    def ca_file(self) -> Path:
        return self._files().ca_file

    def bus(self, agent: str, **options: Any) -> MqttBus:
        """An MQTT bus logged in as `agent`, checking the broker against the community's CA."""
        from meterchain.agents.bus_mqtt import MqttBus

        return MqttBus(
            self.host,
            self.port,
            credentials=self.credentials(agent),
            tls_ca_file=str(self.ca_file),
            **options,
        )

    def toml_section(self, agent: str) -> str:
        """The `[broker]` section of a role's config that logs in as `agent`."""
        files = self._files()
        return (
            f'[broker]\nhost = "{self.host}"\nport = {self.port}\nusername = "{agent}"\n'
            f'password_file = "{files.credential_file(agent)}"\n'
            f'tls_ca_file = "{files.ca_file}"\n'
        )


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
    agents: Sequence[str] = (),
    superusers: Sequence[str] = (),
    operators: Sequence[str] = OPERATOR_AGENTS,
) -> Broker:
    """Start `mosquitto` on host:port (0 picks a free port), secured, and wait until it accepts.

    Credentials are issued to the operator's agents, to `agents` (boards and the like) and to
    `superusers` (a test's own clients of the bus, which may use every meterchain topic).
    With `data_dir` the broker keeps its persistent sessions and their queued messages there
    (saved when it stops and every few seconds), so a restarted broker still holds what was
    sent to agents that were away; without it everything lives in memory only.
    """
    port = port or free_port(host)
    config_dir = Path(tempfile.mkdtemp(prefix="meterchain-mosquitto-"))
    atexit.register(shutil.rmtree, config_dir, True)
    if data_dir is not None:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
    # Started as root, mosquitto drops to the `mosquitto` user and then cannot read the
    # credentials (0600) nor write its persistence file into a directory root made.
    files = write_broker_files(
        config_dir,
        agents=agents,
        operators=operators,
        superusers=superusers,
        hosts=(host,),
        port=port,
        bind=host,
        data_dir=data_dir,
        run_as_root=os.geteuid() == 0,
    )
    try:
        process = _launch(files.config, host, port, timeout_s)
    except BaseException:
        shutil.rmtree(config_dir, ignore_errors=True)
        raise
    return Broker(host, port, process, config_dir, data_dir, files)


def _launch(config: Path, host: str, port: int, timeout_s: float) -> subprocess.Popen[bytes]:
    executable = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(executable).exists():
        raise BrokerError(
            "mosquitto is not installed; install the Debian package `mosquitto` "
            "(.ci/apt-packages.txt lists it) or point the bus at another MQTT 5 broker"
        )
    log_path = config.with_name("mosquitto.log")  # a file, not a pipe nobody drains
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [executable, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log_file
        )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            error = log_path.read_text(errors="replace")
            raise BrokerError(f"mosquitto exited at start: {error.strip()[-500:]}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise BrokerError(f"mosquitto did not listen on {host}:{port} within {timeout_s} s")
