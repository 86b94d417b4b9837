"""`meterchain web --deployment … --wallets DIR --vending-keystore FILE`: the server finds the
ledger and prepaid contracts the deployment file names and the households' wallets, and says
what is wrong with a wallets directory it cannot use."""

from __future__ import annotations

from pathlib import Path

import pytest
from live_harness import HOUSE, PREPAID
from web_fixtures import ChainWebApp

from meterchain.chain.deployment import Deployment, save_deployment
from meterchain.chain.keystore import PASSWORD_ENV, TEST_SCRYPT_N, create_keystore
from meterchain.commands.web import _chain_actions


def test_the_server_takes_the_deployments_ledger_contracts_and_the_households_wallets(
    ledger_web: ChainWebApp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    demo = ledger_web.chain
    ledger = demo.ledger
    assert ledger.certificates and ledger.billing and ledger.prepaid and ledger.funds
    contracts = {
        "EnergyMarket": demo.market.address,
        "EnergyCertificates": ledger.certificates.address,
        "Billing": ledger.billing.address,
        "CommunityFundSchool": ledger.funds[0].address,
        "PrepaidMeter": ledger.prepaid.address,
    }
    w3 = demo.market.w3
    rpc = w3.provider.endpoint_uri  # type: ignore[attr-defined]
    path = save_deployment(
        Deployment(int(w3.eth.chain_id), rpc, 0, contracts), tmp_path / "deployment.json"
    )
    wallets = tmp_path / "wallets"
    household = create_keystore(wallets / f"{HOUSE}.json", "wallet-pass", scrypt_n=TEST_SCRYPT_N)
    vending_key = ledger.vending_key
    assert vending_key is not None and ledger.prepaid.vending_key() == vending_key.address
    vending = create_keystore(
        tmp_path / "vending.json", "vending-pass", scrypt_n=TEST_SCRYPT_N,
        private_key=bytes(vending_key.key),
    )  # fmt: skip
    monkeypatch.setenv("MCHAIN_WALLETS_PASSWORD", "wallet-pass")
    monkeypatch.setenv(PASSWORD_ENV, "vending-pass")
    chain = _chain_actions(path, None, None, wallets, tmp_path / "vending.json")
    assert chain.has_certificates and chain.has_billing and chain.has_prepaid
    assert [f.address for f in chain.funds] == [ledger.funds[0].address]
    assert chain.wallet_address(HOUSE) == household and not chain.has_wallet(PREPAID)
    assert chain.can_issue_vouchers and vending == vending_key.address
    assert chain.prepaid_status(PREPAID)["enrolled"] is True

    bare = save_deployment(
        Deployment(int(w3.eth.chain_id), rpc, 0, {"EnergyMarket": demo.market.address}),
        tmp_path / "market-only.json",
    )
    plain = _chain_actions(bare, None, None)
    assert not (plain.has_certificates or plain.has_billing or plain.has_prepaid or plain.funds)
    with pytest.raises(NotADirectoryError, match="is not a directory of keystores"):
        _chain_actions(path, None, None, tmp_path / "nowhere")
