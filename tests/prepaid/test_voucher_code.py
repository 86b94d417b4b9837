"""The printed voucher code: round trip, typos caught before the chain, clear errors."""

from __future__ import annotations

import pytest
from eth_account import Account

from meterchain.prepaid.voucher import (
    PrepaidDomain,
    SignedVoucher,
    VoucherError,
    decode_code,
    encode_code,
    new_voucher,
    sign_voucher,
    voucher_signer,
)

DOMAIN = PrepaidDomain(31337, "0x" + "ab" * 20)
KEY = Account.from_key(b"\x5e" * 32)


def signed_voucher(amount: int = 2_000, serial: int = 7) -> SignedVoucher:
    return sign_voucher(DOMAIN, new_voucher("30010006", amount, serial, 1_800_000_000), KEY)


def test_a_code_round_trips_and_carries_the_vending_key_s_signature() -> None:
    signed = signed_voucher()
    code = encode_code(signed)
    assert all(len(group) <= 5 for group in code.split("-"))
    decoded = decode_code(code.lower().replace("-", " "))
    assert decoded == signed
    assert voucher_signer(DOMAIN, decoded) == KEY.address
    assert decoded.voucher.meter == "30010006"


def test_a_mistyped_character_is_caught_by_the_checksum() -> None:
    code = encode_code(signed_voucher())
    position = 12
    typo = code[:position] + ("A" if code[position] != "A" else "B") + code[position + 1 :]
    with pytest.raises(VoucherError, match="does not check out"):
        decode_code(typo)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "empty"),
        ("AB0C1-DEFGH", "only letters A-Z and digits 2-7"),
        ("ABCDE-F", "does not check out|wrong length"),
    ],
)
def test_malformed_codes_say_what_is_wrong(code: str, message: str) -> None:
    with pytest.raises(VoucherError, match=message):
        decode_code(code)


def test_a_voucher_for_nothing_or_a_bad_meter_is_refused() -> None:
    with pytest.raises(VoucherError, match="0 credit"):
        new_voucher("30010006", 0, 1)
    with pytest.raises(VoucherError, match="32 UTF-8 bytes"):
        new_voucher("x" * 40, 100, 1)
