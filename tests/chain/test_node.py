"""The local anvil node: started as a child process, paris rules, state kept across restarts."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.types import RPCEndpoint

from meterchain.chain.errors import ChainUnavailable, NodeStartError
from meterchain.chain.node import (
    ANVIL_CHAIN_ID,
    AnvilNode,
    connect,
    start_anvil,
    stop_anvil,
)
from meterchain.chain.sender import TransactionSender


def test_anvil_answers_on_the_url_it_reports(anvil: AnvilNode, w3: Web3) -> None:
    assert anvil.rpc_url == f"http://127.0.0.1:{anvil.port}"
    assert w3.eth.chain_id == ANVIL_CHAIN_ID


def test_anvil_runs_paris_so_push0_is_not_activated(w3: Web3) -> None:
    # PUSH0 PUSH0 MSTORE PUSH1 0x20 PUSH0 RETURN: valid only from Shanghai on.
    call = RPCEndpoint("eth_call")
    response = w3.provider.make_request(call, [{"data": "0x5f5f5260205ff3"}, "latest"])
    assert "NotActivated" in response["error"]["message"]


def test_restart_with_the_same_state_dir_finds_the_same_chain(
    tmp_path: Path, deployer: LocalAccount, probe_artifact: Any
) -> None:
    node = start_anvil(state_dir=tmp_path / "chain")
    try:
        w3 = connect(node.rpc_url)
        sender = TransactionSender(w3, deployer)
        address, _ = sender.deploy(probe_artifact.abi, probe_artifact.bytecode)
        sender.transact(w3.eth.contract(address=address, abi=probe_artifact.abi).functions.bump(7))
        code, height = w3.eth.get_code(address), w3.eth.block_number
    finally:
        stop_anvil(node)
    assert (tmp_path / "chain" / "state.json").stat().st_size > 0

    again = start_anvil(state_dir=tmp_path / "chain")
    try:
        w3 = connect(again.rpc_url)
        probe = w3.eth.contract(address=address, abi=probe_artifact.abi)
        assert w3.eth.get_code(address) == code
        assert w3.eth.block_number == height
        assert probe.functions.total().call() == 7
    finally:
        stop_anvil(again)


def test_anvil_keeps_its_home_and_log_inside_the_state_dir(tmp_path: Path) -> None:
    node = start_anvil(state_dir=tmp_path)
    stop_anvil(node)
    assert (tmp_path / "home").is_dir()
    assert (tmp_path / "anvil.log").exists()


def test_a_node_without_state_dir_leaves_nothing_behind() -> None:
    node = start_anvil()
    work_dir = node.work_dir
    stop_anvil(node)
    assert not work_dir.exists()


def test_stopping_twice_is_harmless() -> None:
    node = start_anvil()
    stop_anvil(node)
    stop_anvil(node)
    assert node.process.returncode == 0


def test_a_corrupt_state_file_is_reported_with_anvils_own_words(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text("not json")
    with pytest.raises(NodeStartError, match=r"state\.json.*move it away") as caught:
        start_anvil(state_dir=tmp_path)
    assert "failed to parse json" in str(caught.value)


def test_a_port_in_use_is_reported() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(NodeStartError, match=f"port {port} on 127.0.0.1 is in use"):
            start_anvil(port=port)


def test_two_nodes_never_share_one_state_dir(tmp_path: Path) -> None:
    node = start_anvil(state_dir=tmp_path)
    try:
        with pytest.raises(NodeStartError, match=r"in use by pid \d+"):
            start_anvil(state_dir=tmp_path)
    finally:
        stop_anvil(node)
    stop_anvil(start_anvil(state_dir=tmp_path))  # free again once the first one stopped


def test_a_missing_anvil_binary_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MCHAIN_ANVIL", str(tmp_path / "no-such-anvil"))
    with pytest.raises(NodeStartError, match="make setup"):
        start_anvil()


def test_connecting_to_a_node_that_is_down_names_the_url() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(ChainUnavailable, match=f"{url}.*connection refused.*chain up"):
        connect(url)


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ChainUnavailable, match="only http"):
        connect("ftp://127.0.0.1:1")
