"""Typed wrappers over the meterchain contracts: agents never build raw transactions.

Each client sends through one TransactionSender (nonces, batching, outbox, decoded reverts)
and takes on-chain units: energy in Wh, money in integer smallest credit units, prices in
smallest units per kWh. `meterchain.chain.units` converts currency amounts and prices (half
up); the `*_currency` helpers here do it for the common cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from functools import cached_property
from typing import Any, ClassVar, Self, cast

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3._utils.events import EventLogErrorFlags
from web3.contract import Contract
from web3.types import EventData, TxReceipt

from meterchain.chain.artifacts import all_abis, load_artifact
from meterchain.chain.batch import (
    BatchTrade,
    DeliveredMeter,
    Position,
    decode_positions,
    decode_settlements,
    pack_batch,
    pack_delivery,
)
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.sender import RevertDecoder, TransactionSender
from meterchain.chain.signing import MarketDomain, SignedOrder, SignedReading, meter_id_to_bytes32
from meterchain.chain.units import from_units, to_units


class MeterKind(IntEnum):
    """MeterRegistry.MeterKind."""

    CONSUMER = 0
    PROSUMER = 1
    GENERATOR = 2
    EV_CHARGER = 3


class IntervalStatus(IntEnum):
    """EnergyMarket.intervalStatus."""

    OPEN = 0
    BATCH_SETTLED = 1
    DELIVERED = 2


@dataclass(frozen=True)
class MeterRecord:
    """What MeterRegistry knows about a meter."""

    meter_id: bytes
    signer: str
    owner: str
    kind: MeterKind
    revoked: bool


@dataclass(frozen=True)
class MeterAccount:
    """A meter's slot in EnergyMarket: last settled reading and internal balance."""

    last_interval: int
    import_wh: int
    export_wh: int
    balance: int  # smallest credit units


@dataclass(frozen=True)
class BatchResult:
    """A settled batch: its receipt and the positions it recorded."""

    receipt: TxReceipt
    positions: list[Position]

    @property
    def gas_used(self) -> int:
        return int(self.receipt["gasUsed"])


def _meter_bytes(meter_id: str | bytes) -> bytes:
    return meter_id if isinstance(meter_id, bytes) else meter_id_to_bytes32(meter_id)


class _ContractClient:
    """One deployed contract, called through one sender."""

    NAME: ClassVar[str]

    def __init__(self, sender: TransactionSender, address: str) -> None:
        self.sender = sender
        self.w3 = sender.w3
        self.contract: Contract = self.w3.eth.contract(
            address=to_checksum_address(address), abi=load_artifact(self.NAME).abi
        )
        for abi in all_abis():  # decode errors raised by the other contracts of the suite too
            if abi not in sender.abis:
                sender.abis.append(abi)

    @property
    def address(self) -> str:
        return str(self.contract.address)

    def with_sender(self, sender: TransactionSender) -> Self:
        """The same contract, called by another account."""
        return type(self)(sender, self.address)

    def _transact(self, fn: Any, *, key: str | None = None, gas: int | None = None) -> TxReceipt:
        return self.sender.transact(fn, key=key, gas=gas)

    def _call(self, name: str, *args: Any) -> Any:
        return self.contract.functions[name](*args).call()

    def role(self, name: str) -> bytes:
        """The bytes32 id of a role, e.g. "OPERATOR_ROLE" (DEFAULT_ADMIN_ROLE is zero)."""
        if name == "DEFAULT_ADMIN_ROLE":
            return bytes(32)
        return bytes(self._call(name))

    def has_role(self, name: str, account: str) -> bool:
        return bool(self._call("hasRole", self.role(name), to_checksum_address(account)))

    def grant_role(self, name: str, account: str) -> TxReceipt:
        """Grant a role (the caller needs DEFAULT_ADMIN_ROLE)."""
        fn = self.contract.functions.grantRole(self.role(name), to_checksum_address(account))
        return self._transact(fn)

    def revoke_role(self, name: str, account: str) -> TxReceipt:
        """Revoke a role (the caller needs DEFAULT_ADMIN_ROLE)."""
        fn = self.contract.functions.revokeRole(self.role(name), to_checksum_address(account))
        return self._transact(fn)

    def events(
        self,
        name: str,
        *,
        from_block: int = 0,
        to_block: int | str = "latest",
        **filters: Any,
    ) -> list[EventData]:
        """Decoded logs of event `name`, optionally filtered on its indexed arguments."""
        event = self.contract.events[name]()
        logs = event.get_logs(
            argument_filters=filters or None,
            from_block=from_block,
            to_block=cast(Any, to_block),
        )
        return list(logs)

    def events_in(self, receipt: TxReceipt, name: str) -> list[EventData]:
        """Decoded logs of event `name` emitted by this contract in one transaction."""
        event = self.contract.events[name]()
        return list(event.process_receipt(receipt, errors=EventLogErrorFlags.Discard))


class MeterRegistryClient(_ContractClient):
    """MeterRegistry: which key signs for which meter."""

    NAME = "MeterRegistry"

    def register_meter(
        self, meter_id: str | bytes, signer: str, owner: str, kind: MeterKind
    ) -> TxReceipt:
        """Add a meter (REGISTRAR_ROLE)."""
        fn = self.contract.functions.registerMeter(
            _meter_bytes(meter_id),
            to_checksum_address(signer),
            to_checksum_address(owner),
            int(kind),
        )
        return self._transact(fn)

    def rotate_signer(self, meter_id: str | bytes, new_signer: str) -> TxReceipt:
        """Replace a meter's board key (REGISTRAR_ROLE)."""
        fn = self.contract.functions.rotateSigner(
            _meter_bytes(meter_id), to_checksum_address(new_signer)
        )
        return self._transact(fn)

    def revoke_meter(self, meter_id: str | bytes) -> TxReceipt:
        """Revoke a meter for good (REGISTRAR_ROLE)."""
        return self._transact(self.contract.functions.revokeMeter(_meter_bytes(meter_id)))

    def meter(self, meter_id: str | bytes) -> MeterRecord:
        """Everything the registry knows; raises TransactionReverted(UnknownMeter) if unknown."""
        raw = _meter_bytes(meter_id)
        try:
            signer, owner, kind, revoked = self._call("meter", raw)
        except Exception as exc:
            raise _as_reverted(self, exc, "meter") from None
        return MeterRecord(raw, str(signer), str(owner), MeterKind(kind), bool(revoked))

    def signer_of(self, meter_id: str | bytes) -> tuple[str, bool]:
        """(signer, revoked); the signer is the zero address for unknown meters."""
        signer, revoked = self._call("signerOf", _meter_bytes(meter_id))
        return str(signer), bool(revoked)


class EnergyCreditClient(_ContractClient):
    """EnergyCredit: the ERC-20 payment token."""

    NAME = "EnergyCredit"

    @cached_property
    def decimals(self) -> int:
        return int(self._call("decimals"))

    def balance_of(self, account: str) -> int:
        """Smallest units held by `account`."""
        return int(self._call("balanceOf", to_checksum_address(account)))

    def total_supply(self) -> int:
        return int(self._call("totalSupply"))

    def allowance(self, owner: str, spender: str) -> int:
        return int(
            self._call("allowance", to_checksum_address(owner), to_checksum_address(spender))
        )

    def mint(self, account: str, amount: int) -> TxReceipt:
        """Issue `amount` smallest units to `account` (TREASURY_ROLE)."""
        return self._transact(self.contract.functions.mint(to_checksum_address(account), amount))

    def top_up(self, account: str, amount: float | Decimal | str) -> TxReceipt:
        """Issue credit worth `amount` currency units (rounded half up to a smallest unit)."""
        return self.mint(account, to_units(amount, self.decimals))

    def approve(self, spender: str, amount: int) -> TxReceipt:
        """Let `spender` take up to `amount` smallest units from the caller."""
        return self._transact(self.contract.functions.approve(to_checksum_address(spender), amount))

    def transfer(self, to: str, amount: int) -> TxReceipt:
        return self._transact(self.contract.functions.transfer(to_checksum_address(to), amount))

    def redeem_from(self, account: str, amount: int) -> TxReceipt:
        """Burn credit `account` approved to the treasury (TREASURY_ROLE)."""
        fn = self.contract.functions.redeemFrom(to_checksum_address(account), amount)
        return self._transact(fn)

    def redeem(self, amount: int) -> TxReceipt:
        """Burn credit the treasury holds itself (TREASURY_ROLE)."""
        return self._transact(self.contract.functions.redeem(amount))

    def to_currency(self, amount: int) -> Decimal:
        """Smallest units → currency units."""
        return from_units(amount, self.decimals)

    def sign_permit(
        self, owner: LocalAccount, spender: str, value: int, deadline: int
    ) -> tuple[int, bytes, bytes]:
        """An EIP-2612 permit signed by `owner`: (v, r, s)."""
        nonce = int(self._call("nonces", owner.address))
        domain = {
            "name": str(self._call("name")),
            "version": "1",
            "chainId": self.sender.chain_id,
            "verifyingContract": self.address,
        }
        types = {
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ]
        }
        message = {
            "owner": owner.address,
            "spender": to_checksum_address(spender),
            "value": value,
            "nonce": nonce,
            "deadline": deadline,
        }
        signed = Account.sign_typed_data(owner.key, domain, types, message)
        return int(signed.v), int(signed.r).to_bytes(32, "big"), int(signed.s).to_bytes(32, "big")


class EnergyMarketClient(_ContractClient):
    """EnergyMarket: internal balances, batches of trades, delivery settlement."""

    NAME = "EnergyMarket"

    @cached_property
    def domain(self) -> MarketDomain:
        """The EIP-712 domain meters sign orders and readings under."""
        return MarketDomain(chain_id=self.sender.chain_id, market_address=self.address)

    @cached_property
    def credit(self) -> EnergyCreditClient:
        """The payment token, called by the same sender."""
        return EnergyCreditClient(self.sender, str(self._call("credit")))

    @cached_property
    def registry(self) -> MeterRegistryClient:
        """The meter registry, called by the same sender."""
        return MeterRegistryClient(self.sender, str(self._call("registry")))

    # ---- money in and out

    def deposit(self, meter_id: str | bytes, amount: int, *, approve: bool = True) -> TxReceipt:
        """Move `amount` smallest units from the caller into a meter's balance.

        With `approve` the caller first approves exactly that amount to the market.
        """
        if approve:
            self.credit.approve(self.address, amount)
        return self._transact(self.contract.functions.deposit(_meter_bytes(meter_id), amount))

    def deposit_with_permit(
        self, meter_id: str | bytes, amount: int, owner: LocalAccount, deadline: int
    ) -> TxReceipt:
        """Deposit with an EIP-2612 permit instead of an approval (the caller must be `owner`)."""
        v, r, s = self.credit.sign_permit(owner, self.address, amount, deadline)
        fn = self.contract.functions.depositWithPermit(
            _meter_bytes(meter_id), amount, deadline, v, r, s
        )
        return self._transact(fn)

    def withdraw(self, meter_id: str | bytes, amount: int, to: str) -> TxReceipt:
        """Withdraw from a meter's balance (only its owner may)."""
        fn = self.contract.functions.withdraw(
            _meter_bytes(meter_id), amount, to_checksum_address(to)
        )
        return self._transact(fn)

    def deposit_grid(self, amount: int, *, approve: bool = True) -> TxReceipt:
        """Move `amount` smallest units from the caller into the grid account."""
        if approve:
            self.credit.approve(self.address, amount)
        return self._transact(self.contract.functions.depositGrid(amount))

    def withdraw_grid(self, amount: int, to: str) -> TxReceipt:
        """Withdraw from the grid account (GRID_ROLE)."""
        return self._transact(self.contract.functions.withdrawGrid(amount, to_checksum_address(to)))

    def set_tariffs(self, retail_price: int, feed_in_price: int) -> TxReceipt:
        """Set retail and feed-in prices in smallest units per kWh (OPERATOR_ROLE)."""
        return self._transact(self.contract.functions.setTariffs(retail_price, feed_in_price))

    # ---- settlement

    def settle_batch(
        self,
        interval: int,
        trades: Sequence[BatchTrade],
        orders: Iterable[SignedOrder],
        *,
        key: str | None = None,
        gas: int | None = None,
    ) -> BatchResult:
        """Post an interval's matched trades with the signed orders they came from.

        Orders are sorted and packed here; the contract checks every signature, limit and
        quantity and escrows the buyers' payments. With `key` (and an outbox in the sender) a
        crash between signing and sending never loses nor doubles the batch.
        """
        packed = pack_batch(orders, trades)
        fn = self.contract.functions.settleBatch(interval, packed.orders, packed.trades)
        return BatchResult(self._transact(fn, key=key, gas=gas), packed.positions)

    def settle_delivery(
        self,
        interval: int,
        readings: Sequence[SignedReading],
        *,
        positions: Sequence[Position] | None = None,
        key: str | None = None,
        gas: int | None = None,
    ) -> TxReceipt:
        """Settle an interval's delivery from the meters' signed end-of-interval readings.

        `positions` default to those the interval's batch recorded (read from its events).
        """
        if positions is None:
            positions = self.positions(interval)
        entries = pack_delivery(positions, readings)
        return self._transact(
            self.contract.functions.settleDelivery(interval, entries), key=key, gas=gas
        )

    def settle_batch_packed(
        self, interval: int, orders: bytes, trades: bytes, *, key: str | None = None
    ) -> TxReceipt:
        """settleBatch with calldata packed by the caller (see meterchain.chain.batch)."""
        fn = self.contract.functions.settleBatch(interval, orders, trades)
        return self._transact(fn, key=key)

    def settle_delivery_packed(
        self, interval: int, entries: bytes, *, key: str | None = None
    ) -> TxReceipt:
        """settleDelivery with entries packed by the caller (see meterchain.chain.batch)."""
        return self._transact(self.contract.functions.settleDelivery(interval, entries), key=key)

    def positions(self, interval: int) -> list[Position]:
        """The positions the interval's batch recorded (empty if none), sorted by meter id."""
        events = self.events("BatchSettled", interval=interval)
        if not events:
            return []
        return decode_positions(bytes(events[-1]["args"]["positions"]))

    def settlements(self, interval: int) -> list[DeliveredMeter]:
        """What the interval's delivery did to each meter (empty if not settled yet)."""
        events = self.events("DeliverySettled", interval=interval)
        if not events:
            return []
        return decode_settlements(bytes(events[-1]["args"]["settlements"]))

    # ---- views

    def balance_of(self, meter_id: str | bytes) -> int:
        """A meter's internal balance in smallest units."""
        return int(self._call("balanceOf", _meter_bytes(meter_id)))

    def balances(self, meter_ids: Iterable[str | bytes]) -> dict[bytes, int]:
        """Internal balances of several meters, by on-chain meter id: one JSON-RPC batch."""
        ids = [_meter_bytes(m) for m in meter_ids]
        if len(ids) <= 1:
            return {i: self.balance_of(i) for i in ids}
        selector = function_signature_to_4byte_selector("balanceOf(bytes32)")
        returned = self.sender.call_many([(self.address, selector + i) for i in ids])
        return {i: int.from_bytes(data, "big") for i, data in zip(ids, returned, strict=True)}

    def meter_account(self, meter_id: str | bytes) -> MeterAccount:
        last_interval, import_wh, export_wh, balance = self._call(
            "meterAccount", _meter_bytes(meter_id)
        )
        return MeterAccount(int(last_interval), int(import_wh), int(export_wh), int(balance))

    def grid_balance(self) -> int:
        return int(self._call("gridBalance"))

    def escrow_total(self) -> int:
        """Credit held for batches whose delivery is not settled yet."""
        return int(self._call("escrowTotal"))

    def tariffs(self) -> tuple[int, int]:
        """(retail, feed-in) in smallest units per kWh."""
        retail, feed_in = self._call("tariffs")
        return int(retail), int(feed_in)

    def interval_status(self, interval: int) -> IntervalStatus:
        status, _ = self._call("intervalStatus", interval)
        return IntervalStatus(status)

    def domain_separator(self) -> bytes:
        return bytes(self._call("domainSeparator"))

    def hash_order(self, signed_or_fields: SignedOrder) -> bytes:
        """The contract's EIP-712 digest of an order (for cross-checks)."""
        o = signed_or_fields.order
        return bytes(
            self._call(
                "hashOrder", o.meter_id, o.interval, int(o.side), o.quantity_wh, o.limit_price,
                o.nonce,
            )
        )  # fmt: skip

    def hash_reading(self, signed: SignedReading) -> bytes:
        """The contract's EIP-712 digest of a reading (for cross-checks)."""
        r = signed.reading
        return bytes(self._call("hashReading", r.meter_id, r.interval, r.import_wh, r.export_wh))


def _as_reverted(client: _ContractClient, exc: Exception, function: str) -> Exception:
    """Turn a reverted eth_call into TransactionReverted naming the custom error."""
    data = getattr(exc, "data", None)
    raw = bytes.fromhex(data[2:]) if isinstance(data, str) and data.startswith("0x") else b""
    if not raw:
        return exc
    name, values, named, detail = RevertDecoder(all_abis()).decode(raw)
    return TransactionReverted(
        error_name=name,
        error_args=values,
        named_args=named,
        function=f"{client.NAME}.{function}",
        revert_data=raw,
        detail=detail,
    )
