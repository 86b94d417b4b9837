"""Vouchers: top-up codes the utility prints, signed by its vending key (EIP-712).

A voucher names one meter, an amount in credit smallest units, a serial (one use: the contract
keeps a bitmap of redeemed serials) and an expiry (0: none), signed for one PrepaidMeter on one
chain. Its printed form is a code of base32 groups, e.g. `AEAJ4-…`, carrying the meter id, the
terms, the signature and a checksum, so a mistyped code is caught before it reaches the chain.

PrepaidMeter.hashVoucher computes the same digest on chain (tests compare them).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_keys.datatypes import PrivateKey
from eth_utils.address import to_checksum_address

from meterchain.chain.signing import bytes32_to_meter_id, meter_id_to_bytes32

DOMAIN_NAME = "meterchain PrepaidMeter"
DOMAIN_VERSION = "1"
VOUCHER_TYPE = "Voucher(bytes32 meterId,uint64 amount,uint64 serial,uint64 expiry)"
VOUCHER_TYPEHASH = keccak(VOUCHER_TYPE.encode())
DOMAIN_TYPEHASH = keccak(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
PACKED_BYTES = 121  # meterId 32 | amount 8 | serial 8 | expiry 8 | r 32 | s 32 | v 1
CODE_VERSION = 1
CHECKSUM_BYTES = 4
GROUP = 5
UINT64_MAX = 2**64 - 1


class VoucherError(ValueError):
    """A voucher or its code is malformed (one line saying what is wrong and what to do)."""


@dataclass(frozen=True)
class PrepaidDomain:
    """The EIP-712 domain of one PrepaidMeter deployment."""

    chain_id: int
    contract_address: str

    def separator(self) -> bytes:
        """PrepaidMeter.domainSeparator()."""
        address = bytes.fromhex(to_checksum_address(self.contract_address)[2:])
        return keccak(
            DOMAIN_TYPEHASH
            + keccak(DOMAIN_NAME.encode())
            + keccak(DOMAIN_VERSION.encode())
            + self.chain_id.to_bytes(32, "big")
            + address.rjust(32, b"\0")
        )


@dataclass(frozen=True)
class Voucher:
    """What a voucher entitles: `amount` smallest units for one meter, once."""

    meter_id: bytes
    amount: int
    serial: int
    expiry: int = 0  # Unix seconds; 0: never expires

    def __post_init__(self) -> None:
        if len(self.meter_id) != 32 or self.meter_id == bytes(32):
            raise VoucherError("a voucher names a meter by its 32-byte on-chain id")
        for name in ("amount", "serial", "expiry"):
            value = getattr(self, name)
            if not isinstance(value, int) or not 0 <= value <= UINT64_MAX:
                raise VoucherError(f"voucher {name}={value!r} is not an integer in 0..2**64-1")
        if self.amount == 0:
            raise VoucherError("a voucher for 0 credit tops nothing up; give an amount")

    @property
    def meter(self) -> str:
        """The meter id as text."""
        return bytes32_to_meter_id(self.meter_id)


@dataclass(frozen=True)
class SignedVoucher:
    """A voucher and the vending key's 65-byte signature (r ‖ s ‖ v)."""

    voucher: Voucher
    signature: bytes

    @property
    def packed(self) -> bytes:
        """The bytes PrepaidMeter.redeemVoucher takes."""
        v = self.voucher
        return (
            v.meter_id
            + v.amount.to_bytes(8, "big")
            + v.serial.to_bytes(8, "big")
            + v.expiry.to_bytes(8, "big")
            + self.signature
        )

    @classmethod
    def from_packed(cls, packed: bytes) -> SignedVoucher:
        if len(packed) != PACKED_BYTES:
            raise VoucherError(f"a packed voucher is {PACKED_BYTES} bytes, not {len(packed)}")
        voucher = Voucher(
            meter_id=packed[:32],
            amount=int.from_bytes(packed[32:40], "big"),
            serial=int.from_bytes(packed[40:48], "big"),
            expiry=int.from_bytes(packed[48:56], "big"),
        )
        return cls(voucher, packed[56:])


def voucher_digest(domain: PrepaidDomain, voucher: Voucher) -> bytes:
    """The EIP-712 digest the vending key signs (PrepaidMeter.hashVoucher)."""
    struct = keccak(
        VOUCHER_TYPEHASH
        + voucher.meter_id
        + voucher.amount.to_bytes(32, "big")
        + voucher.serial.to_bytes(32, "big")
        + voucher.expiry.to_bytes(32, "big")
    )
    return keccak(b"\x19\x01" + domain.separator() + struct)


def sign_voucher(
    domain: PrepaidDomain, voucher: Voucher, vending_key: LocalAccount | bytes
) -> SignedVoucher:
    """Sign a voucher with the utility's vending key."""
    raw = vending_key.key if isinstance(vending_key, LocalAccount) else vending_key
    signature = PrivateKey(bytes(raw)).sign_msg_hash(voucher_digest(domain, voucher))
    r, s, v = int(signature.r), int(signature.s), int(signature.v)
    return SignedVoucher(voucher, r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v + 27]))


def voucher_signer(domain: PrepaidDomain, signed: SignedVoucher) -> str:
    """The address that signed a voucher (checksummed)."""
    recovered: str = Account._recover_hash(
        voucher_digest(domain, signed.voucher), signature=signed.signature
    )
    return recovered


def new_voucher(meter_id: str, amount: int, serial: int, expiry: int = 0) -> Voucher:
    """A voucher for a meter named by its id as text."""
    try:
        raw = meter_id_to_bytes32(meter_id)
    except ValueError as exc:
        raise VoucherError(str(exc)) from None
    return Voucher(raw, amount, serial, expiry)


# ---------------------------------------------------------------- the printed code


def encode_code(signed: SignedVoucher) -> str:
    """The code printed on the voucher: base32 groups of five, with a checksum."""
    meter = signed.voucher.meter.encode()
    v = signed.voucher
    body = (
        bytes([CODE_VERSION, len(meter)])
        + meter
        + v.amount.to_bytes(8, "big")
        + v.serial.to_bytes(8, "big")
        + v.expiry.to_bytes(8, "big")
        + signed.signature
    )
    text = base64.b32encode(body + _checksum(body)).decode().rstrip("=")
    return "-".join(text[i : i + GROUP] for i in range(0, len(text), GROUP))


def decode_code(code: str) -> SignedVoucher:
    """The voucher back from its printed code (spaces, dashes and case do not matter)."""
    text = re.sub(r"[\s-]", "", code).upper()
    if not text:
        raise VoucherError("the voucher code is empty; type the code printed on the voucher")
    bad = sorted(set(re.sub(r"[A-Z2-7]", "", text)))
    if bad:
        raise VoucherError(
            f"the voucher code contains {', '.join(repr(c) for c in bad)}, which no voucher "
            "code has (only letters A-Z and digits 2-7): check what was typed"
        )
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError:
        raise VoucherError("the voucher code has the wrong length: a group is missing") from None
    body, checksum = raw[:-CHECKSUM_BYTES], raw[-CHECKSUM_BYTES:]
    if len(raw) < 2 + CHECKSUM_BYTES or _checksum(body) != checksum:
        raise VoucherError(
            "the voucher code does not check out (a character is wrong or missing); type it "
            "again from the printed voucher"
        )
    if body[0] != CODE_VERSION:
        raise VoucherError(f"voucher code version {body[0]} is not known (expected {CODE_VERSION})")
    length = body[1]
    meter = body[2 : 2 + length]
    rest = body[2 + length :]
    if len(rest) != 24 + 65:
        raise VoucherError("the voucher code is truncated; type it again from the printed voucher")
    voucher = new_voucher(
        meter.decode("utf-8", errors="replace"),
        int.from_bytes(rest[0:8], "big"),
        int.from_bytes(rest[8:16], "big"),
        int.from_bytes(rest[16:24], "big"),
    )
    return SignedVoucher(voucher, rest[24:])


def _checksum(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()[:CHECKSUM_BYTES]


def describe(signed: SignedVoucher, decimals: int) -> dict[str, Any]:
    """A voucher's terms as JSON (amount in currency units)."""
    from meterchain.chain.units import from_units

    v = signed.voucher
    return {
        "meter_id": v.meter,
        "amount": float(from_units(v.amount, decimals)),
        "serial": v.serial,
        "expiry": v.expiry,
    }
