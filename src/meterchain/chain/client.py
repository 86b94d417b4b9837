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
    RejectReason,
    decode_positions,
    decode_settlements,
    pack_batch,
    pack_delivery,
    pack_positions,
)
from meterchain.chain.errors import TransactionReverted
from meterchain.chain.sender import RevertDecoder, TransactionSender
from meterchain.chain.signing import (
    MarketDomain,
    OrderMessage,
    SignedOrder,
    SignedReading,
    meter_id_to_bytes32,
)
from meterchain.chain.units import from_units, to_units


class MeterKind(IntEnum):
    """MeterRegistry.MeterKind."""

    CONSUMER = 0
    PROSUMER = 1
    GENERATOR = 2
    EV_CHARGER = 3

    @property
    def can_sell(self) -> bool:
        """Only meters that can export may sign sell orders the market accepts."""
        return self in (MeterKind.PROSUMER, MeterKind.GENERATOR)


class IntervalStatus(IntEnum):
    """EnergyMarket.intervalStatus."""

    OPEN = 0
    BATCH_SETTLED = 1
    DELIVERED = 2
    REFUNDED = 3  # void: the batch's locks went back, the energy settles with the next reading


@dataclass(frozen=True)
class MeterRecord:
    """What MeterRegistry knows about a meter."""

    meter_id: bytes
    signer: str
    owner: str
    kind: MeterKind
    revoked: bool
    max_power_w: int
    market: str  # the zero address when the meter belongs to no market


@dataclass(frozen=True)
class MeterLookup:
    """A meter's registry record as markets see it (MeterRegistry.lookup), in one word."""

    signer: str
    kind: MeterKind
    revoked: bool
    max_power_w: int
    market_number: int  # 0: no market

    @property
    def known(self) -> bool:
        return int(self.signer, 16) != 0

    @classmethod
    def decode(cls, record: int) -> MeterLookup:
        return cls(
            signer=to_checksum_address(f"0x{record & (2**160 - 1):040x}"),
            kind=MeterKind((record >> 160) & 0xFF),
            revoked=(record >> 168) & 0xFF != 0,
            max_power_w=(record >> 176) & 0xFFFFFFFF,
            market_number=(record >> 208) & 0xFFFF,
        )


@dataclass(frozen=True)
class BatchTerms:
    """What an interval's batch fixed for its delivery: tariffs and positions."""

    retail_price: int
    feed_in_price: int
    positions: list[Position]


@dataclass(frozen=True)
class RejectedReading:
    """A ReadingRejected event: the reading counted as absent."""

    interval: int
    meter_id: bytes
    reason: RejectReason


@dataclass(frozen=True)
class MeterAccount:
    """A meter's slot in EnergyMarket: last settled reading and internal balance."""

    last_interval: int
    import_wh: int
    export_wh: int
    balance: int  # smallest credit units


@dataclass(frozen=True)
class BatchResult:
    """A settled batch: its receipt and the terms (tariffs, positions) it fixed."""

    receipt: TxReceipt
    terms: BatchTerms

    @property
    def positions(self) -> list[Position]:
        return self.terms.positions

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
        self,
        meter_id: str | bytes,
        signer: str,
        owner: str,
        kind: MeterKind,
        max_power_w: int,
    ) -> TxReceipt:
        """Add a meter (REGISTRAR_ROLE); `max_power_w` is what its connection can carry."""
        fn = self.contract.functions.registerMeter(
            _meter_bytes(meter_id),
            to_checksum_address(signer),
            to_checksum_address(owner),
            int(kind),
            max_power_w,
        )
        return self._transact(fn)

    def set_max_power(self, meter_id: str | bytes, max_power_w: int) -> TxReceipt:
        """Change what a meter's connection can carry (REGISTRAR_ROLE)."""
        fn = self.contract.functions.setMaxPower(_meter_bytes(meter_id), max_power_w)
        return self._transact(fn)

    def add_market(self, market: str) -> TxReceipt:
        """Make a market known so meters can be assigned to it (REGISTRAR_ROLE)."""
        return self._transact(self.contract.functions.addMarket(to_checksum_address(market)))

    def assign_market(self, meter_id: str | bytes, market: str) -> TxReceipt:
        """Move a meter into `market` (the zero address: out of every market; REGISTRAR_ROLE)."""
        fn = self.contract.functions.assignMarket(
            _meter_bytes(meter_id), to_checksum_address(market)
        )
        return self._transact(fn)

    def market_number(self, market: str) -> int:
        """The registry's number for a market (0: not added)."""
        return int(self._call("marketNumber", to_checksum_address(market)))

    def lookups(self, meter_ids: Iterable[str | bytes]) -> dict[bytes, MeterLookup]:
        """The records of several meters, by on-chain meter id, in one JSON-RPC batch
        (unknown meters have the zero signer)."""
        ids = [_meter_bytes(m) for m in meter_ids]
        if not ids:
            return {}
        selector = function_signature_to_4byte_selector("lookup(bytes32)")
        returned = self.sender.call_many([(self.address, selector + i) for i in ids])
        return {
            i: MeterLookup.decode(int.from_bytes(data[:32], "big"))
            for i, data in zip(ids, returned, strict=True)
        }

    def market_of(self, meter_id: str | bytes) -> str:
        """The market a meter belongs to (the zero address if none)."""
        return str(self._call("marketOf", _meter_bytes(meter_id)))

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
            signer, owner, kind, revoked, max_power_w, market = self._call("meter", raw)
        except Exception as exc:
            raise _as_reverted(self, exc, "meter") from None
        return MeterRecord(
            raw, str(signer), str(owner), MeterKind(kind), bool(revoked), int(max_power_w),
            str(market),
        )  # fmt: skip

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
    """EnergyMarket: internal balances, batches of trades, delivery settlement, refunds."""

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

    def request_withdrawal(self, meter_id: str | bytes, amount: int) -> TxReceipt:
        """Ask to withdraw `amount` (0 cancels); payable after the market's withdrawal delay,
        so credit a batch may still need stays in place (only the meter's owner may)."""
        fn = self.contract.functions.requestWithdrawal(_meter_bytes(meter_id), amount)
        return self._transact(fn)

    def withdraw(self, meter_id: str | bytes, to: str) -> TxReceipt:
        """Pay the meter's requested withdrawal once its delay has passed (owner only)."""
        fn = self.contract.functions.withdraw(_meter_bytes(meter_id), to_checksum_address(to))
        return self._transact(fn)

    def pending_withdrawal(self, meter_id: str | bytes) -> tuple[int, int]:
        """(amount, Unix time it may be paid) of the meter's pending withdrawal; (0, 0): none."""
        amount, available_at = self._call("pendingWithdrawal", _meter_bytes(meter_id))
        return int(amount), int(available_at)

    def pending_withdrawals(self, meter_ids: Iterable[str | bytes]) -> dict[bytes, int]:
        """Pending withdrawal amounts of several meters, by on-chain meter id: one batch."""
        ids = [_meter_bytes(m) for m in meter_ids]
        selector = function_signature_to_4byte_selector("pendingWithdrawal(bytes32)")
        returned = self.sender.call_many([(self.address, selector + i) for i in ids]) if ids else []
        return {i: int.from_bytes(data[:32], "big") for i, data in zip(ids, returned, strict=True)}

    def deposit_grid(self, amount: int, *, approve: bool = True) -> TxReceipt:
        """Move `amount` smallest units from the caller into the grid account."""
        if approve:
            self.credit.approve(self.address, amount)
        return self._transact(self.contract.functions.depositGrid(amount))

    def withdraw_grid(self, amount: int, to: str) -> TxReceipt:
        """Withdraw from the grid account (GRID_ROLE)."""
        return self._transact(self.contract.functions.withdrawGrid(amount, to_checksum_address(to)))

    def set_tariffs(self, retail_price: int, feed_in_price: int) -> TxReceipt:
        """Set retail and feed-in prices in smallest units per kWh (GRID_ROLE), within
        0 <= feed-in <= retail <= the market's maximum retail price."""
        return self._transact(self.contract.functions.setTariffs(retail_price, feed_in_price))

    def set_baseline(
        self,
        meter_id: str | bytes,
        interval: int,
        import_wh: int,
        export_wh: int,
        reason: str = "enrolled",
    ) -> TxReceipt:
        """Record a meter's registers at the end of `interval` (GRID_ROLE): when it joins the
        market, when it is replaced, or after a fault. Readings after it count from there."""
        raw_reason = reason.encode("utf-8")
        if len(raw_reason) > 32:
            raise ValueError(f"baseline reason {reason!r} is longer than 32 bytes; shorten it")
        fn = self.contract.functions.setBaseline(
            _meter_bytes(meter_id), interval, import_wh, export_wh, raw_reason.ljust(32, b"\0")
        )
        return self._transact(fn)

    @cached_property
    def interval_seconds(self) -> int:
        """Length of a market interval; interval numbers are multiples of it."""
        return int(self._call("intervalSeconds"))

    @cached_property
    def max_retail_price(self) -> int:
        return int(self._call("maxRetailPrice"))

    @cached_property
    def withdrawal_delay(self) -> int:
        return int(self._call("withdrawalDelay"))

    @cached_property
    def refund_delay(self) -> int:
        return int(self._call("refundDelay"))

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
        receipt = self._transact(fn, key=key, gas=gas)
        events = self.events_in(receipt, "BatchSettled")
        if events:
            retail, feed_in = (
                int(events[0]["args"]["retailPrice"]),
                int(events[0]["args"]["feedInPrice"]),
            )
        else:  # an outbox receipt of an earlier run: the event is in that block
            terms = self.batch_terms(interval)
            retail, feed_in = terms.retail_price, terms.feed_in_price
        return BatchResult(receipt, BatchTerms(retail, feed_in, packed.positions))

    def settle_delivery(
        self,
        interval: int,
        readings: Sequence[SignedReading],
        *,
        terms: BatchTerms | None = None,
        key: str | None = None,
        gas: int | None = None,
    ) -> TxReceipt:
        """Settle an interval's delivery from the meters' signed readings.

        `terms` (the batch's tariffs and positions) default to what the interval's batch
        recorded, read from its event, or to the tariffs in force if it had no batch.
        """
        if terms is None:
            terms = self.batch_terms(interval)
        entries = pack_delivery(terms.positions, readings)
        fn = self.contract.functions.settleDelivery(
            interval, terms.retail_price, terms.feed_in_price, entries
        )
        return self._transact(fn, key=key, gas=gas)

    def refund_interval(
        self, interval: int, terms: BatchTerms | None = None, *, key: str | None = None
    ) -> TxReceipt:
        """Void an undelivered interval: its locks go back to the meters (anyone, after the
        refund delay; the operator at any time)."""
        if terms is None:
            terms = self.batch_terms(interval)
        fn = self.contract.functions.refundInterval(
            interval, terms.retail_price, terms.feed_in_price, pack_positions(terms.positions)
        )
        return self._transact(fn, key=key)

    def prove_reading_equivocation(self, first: SignedReading, second: SignedReading) -> TxReceipt:
        """Submit two different readings a meter's key signed for one interval: the key is
        revoked and the evidence recorded (anyone may)."""
        a, b = first.reading, second.reading
        fn = self.contract.functions.proveReadingEquivocation(
            a.meter_id, a.interval, a.packed_registers, first.signature, b.packed_registers,
            second.signature,
        )  # fmt: skip
        return self._transact(fn)

    def prove_order_equivocation(self, first: SignedOrder, second: SignedOrder) -> TxReceipt:
        """Submit two different orders a meter's key signed with one nonce for one interval."""
        a, b = first.order, second.order

        def terms(order: OrderMessage) -> int:
            return (int(order.side) << 128) | (order.quantity_wh << 64) | order.limit_price

        fn = self.contract.functions.proveOrderEquivocation(
            a.meter_id, a.interval, a.nonce, terms(a), first.signature, terms(b), second.signature
        )
        return self._transact(fn)

    def settle_batch_packed(
        self, interval: int, orders: bytes, trades: bytes, *, key: str | None = None
    ) -> TxReceipt:
        """settleBatch with calldata packed by the caller (see meterchain.chain.batch)."""
        fn = self.contract.functions.settleBatch(interval, orders, trades)
        return self._transact(fn, key=key)

    def settle_delivery_packed(
        self,
        interval: int,
        entries: bytes,
        *,
        tariffs: tuple[int, int] | None = None,
        key: str | None = None,
    ) -> TxReceipt:
        """settleDelivery with entries packed by the caller (see meterchain.chain.batch);
        `tariffs` (retail, feed-in) default to those in force."""
        retail, feed_in = tariffs if tariffs is not None else self.tariffs()
        fn = self.contract.functions.settleDelivery(interval, retail, feed_in, entries)
        return self._transact(fn, key=key)

    def batch_terms(self, interval: int) -> BatchTerms:
        """The tariffs and positions the interval's batch fixed, from its BatchSettled event;
        the tariffs in force and no positions if it had no batch."""
        events = self.events("BatchSettled", interval=interval)
        if not events:
            retail, feed_in = self.tariffs()
            return BatchTerms(retail, feed_in, [])
        args = events[-1]["args"]
        return BatchTerms(
            int(args["retailPrice"]),
            int(args["feedInPrice"]),
            decode_positions(bytes(args["positions"])),
        )

    def positions(self, interval: int) -> list[Position]:
        """The positions the interval's batch recorded (empty if none), sorted by meter id."""
        return self.batch_terms(interval).positions

    def rejected_readings(
        self, *, interval: int | None = None, from_block: int = 0
    ) -> list[RejectedReading]:
        """ReadingRejected events: readings the contract counted as absent, and why."""
        filters = {} if interval is None else {"interval": interval}
        return [
            RejectedReading(
                int(e["args"]["interval"]),
                bytes(e["args"]["meterId"]),
                RejectReason(int(e["args"]["reason"])),
            )
            for e in self.events("ReadingRejected", from_block=from_block, **filters)
        ]

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
        status, _, _ = self._call("intervalStatus", interval)
        return IntervalStatus(status)

    def delivery_hash(self, interval: int) -> bytes:
        """keccak256(settlements ‖ positions) of a delivered interval (32 zero bytes before)."""
        return bytes(self._call("deliveryHash", interval))

    def batch_time(self, interval: int) -> int:
        """Unix time the interval's batch settled (0 unless its delivery is pending)."""
        _, batch_time, _ = self._call("intervalStatus", interval)
        return int(batch_time)

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
        return bytes(self._call("hashReading", r.meter_id, r.interval, *r.registers))


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
