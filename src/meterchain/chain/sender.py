"""The one transaction sender: nonces, batching, receipts, safe retries and the outbox.

Every transaction meterchain sends goes through a TransactionSender, so one place decides:
- nonces: kept locally (one RPC per burst, not per transaction) and resynchronised from the
  node whenever it says a nonce is wrong or a send's fate is unknown;
- batching: `transact_many` pre-signs with consecutive nonces and sends one JSON-RPC batch;
- retries: a signed transaction has a fixed hash, so re-sending it after a connection error is
  safe (the chain takes it at most once); a revert is never retried;
- the outbox: with a key, the signed bytes are stored before they are sent, so a crash between
  sign and send (or send and receipt) is finished later by re-sending the same bytes;
- reverts: decoded into TransactionReverted naming the contract's custom error and arguments.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import requests
from eth_abi.abi import decode as abi_decode
from eth_abi.grammar import TupleType, parse
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from eth_typing import ChecksumAddress, HexStr
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3RPCError
from web3.types import TxParams, TxReceipt

from meterchain.chain.errors import (
    ChainError,
    ChainUnavailable,
    NonceConflict,
    TransactionReverted,
    TransactionTimeout,
)
from meterchain.store.outbox import Outbox, OutboxEntry, OutboxStatus

ERROR_STRING_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256)
PANIC_REASONS = {
    0x00: "generic compiler panic",
    0x01: "assert failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "invalid enum value",
    0x22: "bad storage byte array encoding",
    0x31: "pop on an empty array",
    0x32: "array index out of bounds",
    0x41: "out of memory",
    0x51: "call to an uninitialised function pointer",
}
BATCH_LIMIT = 500  # transactions per JSON-RPC batch request
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.ConnectionError,
    requests.Timeout,
    ConnectionError,
    TimeoutError,
)
_NONCE_TOO_LOW = ("nonce too low", "nonce is too low", "old nonce", "already been used")
_NONCE_TOO_HIGH = ("nonce too high", "nonce gap")
_ALREADY_KNOWN = ("already known", "already imported", "known transaction", "alreadyknown")


class Transactable(Protocol):
    """A bound contract function or constructor: what `transact` accepts."""

    def estimate_gas(self, transaction: TxParams | None = None) -> int: ...

    def build_transaction(self, transaction: TxParams | None = None) -> TxParams: ...


@dataclass
class _Signed:
    """One signed transaction on its way to the chain."""

    fn: Transactable
    label: str
    key: str | None
    nonce: int
    tx_hash: str
    raw_tx: bytes
    abi: Sequence[Mapping[str, Any]]
    receipt: TxReceipt | None = None  # already mined (found through the outbox)


class RevertDecoder:
    """Maps 4-byte error selectors to the custom errors declared in ABIs, and decodes them."""

    def __init__(self, abis: Iterable[Sequence[Mapping[str, Any]]] = ()) -> None:
        self._errors: dict[bytes, tuple[str, list[str], list[str]]] = {}
        for abi in abis:
            self.add(abi)

    def add(self, abi: Sequence[Mapping[str, Any]]) -> None:
        for item in abi:
            if item.get("type") != "error":
                continue
            inputs = list(item.get("inputs", []))
            types = [_canonical_type(p) for p in inputs]
            names = [str(p.get("name", "")) for p in inputs]
            selector = keccak(f"{item['name']}({','.join(types)})".encode())[:4]
            self._errors[selector] = (str(item["name"]), names, types)

    def decode(self, data: bytes) -> tuple[str | None, tuple[Any, ...], dict[str, Any], str | None]:
        """(error name, args, named args, detail); name None when the data is not decodable."""
        selector, body = data[:4], data[4:]
        try:
            if selector == ERROR_STRING_SELECTOR:
                (text,) = abi_decode(["string"], body)
                return "Error", (text,), {"message": text}, None
            if selector == PANIC_SELECTOR:
                (code,) = abi_decode(["uint256"], body)
                reason = PANIC_REASONS.get(code, "unknown panic code")
                return "Panic", (code,), {"code": code}, reason
            if selector in self._errors:
                name, names, types = self._errors[selector]
                values = tuple(
                    _checksummed(parse(t), v)
                    for t, v in zip(types, abi_decode(types, body), strict=True)
                )
                named = {
                    n or f"arg{i}": v for i, (n, v) in enumerate(zip(names, values, strict=True))
                }
                return name, values, named, None
        except Exception as exc:  # malformed data: report it rather than hide it
            return None, (), {}, f"with undecodable revert data 0x{data.hex()} ({exc})"
        return None, (), {}, None


def _checksummed(kind: Any, value: Any) -> Any:
    """Addresses as checksum strings, as web3 returns them everywhere else."""
    if kind.is_array:
        return tuple(_checksummed(kind.item_type, v) for v in value)
    if isinstance(kind, TupleType):
        return tuple(_checksummed(c, v) for c, v in zip(kind.components, value, strict=True))
    if getattr(kind, "base", None) == "address":
        return Web3.to_checksum_address(value)
    return value


def _canonical_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(c) for c in param.get("components", []))
        return f"({inner}){kind[len('tuple') :]}"
    return kind


class TransactionSender:
    """Sends contract transactions for one account; safe to share between threads."""

    def __init__(
        self,
        w3: Web3,
        account: LocalAccount,
        *,
        outbox: Outbox | None = None,
        abis: Sequence[Sequence[Mapping[str, Any]]] = (),
        gas_multiplier: float = 1.2,
        receipt_timeout_s: float = 120.0,
        send_retries: int = 3,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.w3 = w3
        self.account = account
        self.address = account.address
        self.outbox = outbox
        self.abis = list(abis)
        self.gas_multiplier = gas_multiplier
        self.receipt_timeout_s = receipt_timeout_s
        self.send_retries = send_retries
        self.retry_backoff_s = retry_backoff_s
        self.rpc_url = str(getattr(w3.provider, "endpoint_uri", None) or "the chain node")
        self._lock = threading.RLock()
        self._next_nonce: int | None = None
        self.chain_id: int = self._rpc(lambda: w3.eth.chain_id)

    # ---- public API -------------------------------------------------------------------------

    def transact(
        self, fn: Transactable, *, key: str | None = None, gas: int | None = None
    ) -> TxReceipt:
        """Build, sign, send and wait for one transaction; raise TransactionReverted on revert.

        With `key` (and an outbox) the signed transaction is recorded under the key before it
        is sent; calling again with the same key after a crash finishes that same transaction
        instead of making a new one.
        """
        return self.transact_many([fn], keys=[key], gas=[gas])[0]

    def transact_many(
        self,
        fns: Sequence[Transactable],
        *,
        keys: Sequence[str | None] | None = None,
        gas: int | Sequence[int | None] | None = None,
    ) -> list[TxReceipt]:
        """Pre-sign `fns` with consecutive nonces, send them in JSON-RPC batches, wait for all.

        Gas is estimated for each against the current state before anything is sent (a revert
        there raises and sends nothing), so calls that depend on an earlier call of the same
        burst need an explicit `gas`. Receipts come back in order; if any transaction reverted,
        TransactionReverted is raised for the first one after all were mined (its `receipts`
        holds them all).
        """
        if not fns:
            return []
        keys = list(keys) if keys is not None else [None] * len(fns)
        if len(keys) != len(fns):
            raise ValueError(f"{len(fns)} functions but {len(keys)} keys")
        gases = list(gas) if isinstance(gas, Sequence) else [gas] * len(fns)
        if len(gases) != len(fns):
            raise ValueError(f"{len(fns)} functions but {len(gases)} gas limits")
        if any(k is not None for k in keys) and self.outbox is None:
            raise ValueError("idempotency keys need an outbox: pass outbox= to TransactionSender")
        if len({k for k in keys if k is not None}) != sum(k is not None for k in keys):
            raise ValueError("the same key appears twice in one transact_many call")
        with self._lock:
            signed = self._prepare_all(fns, keys, gases)
            self._send_all(signed)
        receipts = self._wait_receipts(signed)
        return self._check_receipts(signed, receipts)

    def deploy(
        self,
        abi: Sequence[Mapping[str, Any]],
        bytecode: str | bytes,
        *args: Any,
        key: str | None = None,
    ) -> tuple[ChecksumAddress, TxReceipt]:
        """Deploy a contract; returns its checksum address and the receipt."""
        constructor = self.w3.eth.contract(abi=abi, bytecode=HexBytes(bytecode)).constructor(*args)
        receipt = self.transact(cast(Transactable, constructor), key=key)
        address = receipt["contractAddress"]
        if address is None:
            raise ChainError(
                f"deployment {receipt['transactionHash'].to_0x_hex()} made no contract"
            )
        return Web3.to_checksum_address(address), receipt

    def resume_outbox(self) -> list[OutboxEntry]:
        """Re-send every unfinished outbox transaction of this account (after a crash).

        Transactions whose nonce was meanwhile taken by another are marked dropped: calling
        `transact` again with their key rebuilds them. Returns the entries as they end up.
        """
        if self.outbox is None:
            return []
        with self._lock:
            entries = self.outbox.unfinished(self.address, self.chain_id)
            items = [
                _Signed(
                    fn=cast(Transactable, None), label=f"outbox transaction {e.key!r}", key=e.key,
                    nonce=e.nonce, tx_hash=e.tx_hash, raw_tx=e.raw_tx, abi=(),
                )
                for e in entries
            ]  # fmt: skip
            for item in items:
                item.receipt = self._receipt_or_none(item.tx_hash)
            self._send_all([i for i in items if i.receipt is None], rebuild=False)
        results = []
        for item in items:
            entry = self.outbox.get(item.key or "")
            if entry is not None and entry.status is not OutboxStatus.DROPPED:
                receipt = item.receipt or self._wait_receipt(item)
                entry = self._finish_in_outbox(item, receipt)
            if entry is not None:
                results.append(entry)
        return results

    def resync_nonce(self) -> int:
        """Forget the local nonce and read the next one from the node (pending included)."""
        with self._lock:
            self._next_nonce = self._rpc(
                lambda: self.w3.eth.get_transaction_count(self.address, "pending")
            )
            return self._next_nonce

    # ---- preparing --------------------------------------------------------------------------

    def _prepare_all(
        self, fns: Sequence[Transactable], keys: list[str | None], gases: list[int | None]
    ) -> list[_Signed]:
        fresh: list[int] = []
        signed: list[_Signed | None] = []
        for index, (fn, key) in enumerate(zip(fns, keys, strict=True)):
            existing = self._from_outbox(fn, key)
            signed.append(existing)
            if existing is None:
                fresh.append(index)
        if fresh:
            built = self._build([fns[i] for i in fresh], [gases[i] for i in fresh])
            new_items = self._sign([fns[i] for i in fresh], [keys[i] for i in fresh], built)
            for index, item in zip(fresh, new_items, strict=True):
                signed[index] = item
        return [s for s in signed if s is not None]

    def _from_outbox(self, fn: Transactable, key: str | None) -> _Signed | None:
        """The transaction already recorded under `key`, or None if a new one must be built."""
        if key is None or self.outbox is None:
            return None
        entry = self.outbox.get(key)
        if entry is None:
            return None
        if entry.sender != self.address or entry.chain_id != self.chain_id:
            raise ChainError(
                f"outbox key {key!r} belongs to {entry.sender} on chain {entry.chain_id}, not "
                f"{self.address} on chain {self.chain_id}; use another key or another store"
            )
        item = _Signed(
            fn=fn, label=_label(fn), key=key, nonce=entry.nonce, tx_hash=entry.tx_hash,
            raw_tx=entry.raw_tx, abi=_abi_of(fn),
        )  # fmt: skip
        if entry.status is OutboxStatus.DROPPED:
            return self._rebuild(item)
        item.receipt = self._receipt_or_none(entry.tx_hash)
        if entry.status in (OutboxStatus.MINED, OutboxStatus.FAILED) and item.receipt is None:
            raise ChainError(
                f"outbox says {key!r} was mined as {entry.tx_hash}, but {self.rpc_url} has no "
                "receipt for it: is this the same chain (was the node reset)?"
            )
        return item

    def _build(self, fns: Sequence[Transactable], gases: Sequence[int | None]) -> list[TxParams]:
        """Transaction dicts with fees and gas (estimated in one batch where not given)."""
        block = self._rpc(lambda: self.w3.eth.get_block("latest"))
        fees = self._fees(block)
        base: dict[str, Any] = {
            "from": self.address, "chainId": self.chain_id, "nonce": 0, "gas": 1, **fees,
        }  # fmt: skip
        txs = [
            dict(self._rpc(lambda fn=fn: fn.build_transaction(cast(TxParams, dict(base)))))
            for fn in fns
        ]
        to_estimate = [i for i, g in enumerate(gases) if g is None]
        estimates = self._estimate_batch(
            [txs[i] for i in to_estimate], [fns[i] for i in to_estimate]
        )
        limit = int(block["gasLimit"])
        for i, estimate in zip(to_estimate, estimates, strict=True):
            txs[i]["gas"] = min(int(estimate * self.gas_multiplier), limit)
        for i, g in enumerate(gases):
            if g is not None:
                txs[i]["gas"] = g
        return [cast(TxParams, tx) for tx in txs]

    def _estimate_batch(self, txs: list[dict[str, Any]], fns: list[Transactable]) -> list[int]:
        if not txs:
            return []
        results: list[int] = []
        for start in range(0, len(txs), BATCH_LIMIT):
            chunk = txs[start : start + BATCH_LIMIT]
            requests_ = [("eth_estimateGas", [_call_params(tx)]) for tx in chunk]
            responses = self._batch(requests_)
            for offset, response in enumerate(responses):
                fn = fns[start + offset]
                error = response.get("error")
                if error:
                    raise self._estimate_failure(fn, error, start + offset, len(txs))
                results.append(int(response["result"], 16))
        return results

    def _estimate_failure(
        self, fn: Transactable, error: Mapping[str, Any], index: int, count: int
    ) -> ChainError:
        data = _revert_bytes(error.get("data"))
        message = str(error.get("message", ""))
        if data or "revert" in message.lower():
            exc = self._reverted(fn, data, tx_hash=None)
            if count > 1:
                exc.message = f"call {index + 1} of {count}: {exc.message}; nothing was sent"
            return exc
        return ChainError(f"{self.rpc_url} cannot estimate gas for {_label(fn)}: {message}")

    def _sign(
        self, fns: Sequence[Transactable], keys: Sequence[str | None], txs: Sequence[TxParams]
    ) -> list[_Signed]:
        items = []
        first = self._allocate_nonces(len(txs))
        for offset, (fn, key, tx) in enumerate(zip(fns, keys, txs, strict=True)):
            items.append(self._sign_one(fn, key, {**tx, "nonce": first + offset}))
        keyed = [i for i in items if i.key is not None]
        if keyed and self.outbox is not None:
            for item in keyed:  # recorded BEFORE anything is sent
                assert item.key is not None
                self.outbox.record(
                    key=item.key, sender=self.address, chain_id=self.chain_id,
                    nonce=item.nonce, tx_hash=item.tx_hash, raw_tx=item.raw_tx,
                )  # fmt: skip
        return items

    def _sign_one(self, fn: Transactable, key: str | None, tx: Mapping[str, Any]) -> _Signed:
        signed = self.account.sign_transaction(dict(tx))
        return _Signed(
            fn=fn, label=_label(fn), key=key, nonce=int(tx["nonce"]),
            tx_hash=signed.hash.to_0x_hex(), raw_tx=bytes(signed.raw_transaction), abi=_abi_of(fn),
        )  # fmt: skip

    def _rebuild(self, item: _Signed) -> _Signed:
        """Re-sign a transaction whose nonce was taken by another, under the same key."""
        (tx,) = self._build([item.fn], [None])
        nonce = self._allocate_nonces(1)
        fresh = self._sign_one(item.fn, item.key, {**tx, "nonce": nonce})
        if item.key is not None and self.outbox is not None:
            self.outbox.replace(
                item.key, nonce=fresh.nonce, tx_hash=fresh.tx_hash, raw_tx=fresh.raw_tx
            )
        return fresh

    def _allocate_nonces(self, count: int) -> int:
        if self._next_nonce is None:
            self.resync_nonce()
        assert self._next_nonce is not None
        first = self._next_nonce
        self._next_nonce += count
        return first

    def _fees(self, block: Mapping[str, Any]) -> dict[str, int]:
        base_fee = block.get("baseFeePerGas")
        if base_fee is None:  # a pre-London chain: legacy gas price
            return {"gasPrice": int(self._rpc(lambda: self.w3.eth.gas_price))}
        try:
            tip = int(self.w3.eth.max_priority_fee)
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(self.rpc_url, str(exc).splitlines()[0]) from None
        except Exception:  # nodes without eth_maxPriorityFeePerGas
            tip = 1_000_000_000
        return {"maxFeePerGas": 2 * int(base_fee) + tip, "maxPriorityFeePerGas": tip}

    # ---- sending ----------------------------------------------------------------------------

    def _send_all(self, items: list[_Signed], *, rebuild: bool = True) -> None:
        """Send what has no receipt yet; resolve nonce trouble by resync + rebuild (once)."""
        pending = [i for i in items if i.receipt is None]
        for _round in range(3):
            if not pending:
                return
            errors = self._send_raw_batch(pending)
            retry: list[_Signed] = []
            for item, error in zip(pending, errors, strict=True):
                if error is None:
                    self._mark_sent(item)
                    if self._next_nonce is not None:
                        self._next_nonce = max(self._next_nonce, item.nonce + 1)
                    continue
                lowered = error.lower()
                if any(s in lowered for s in _ALREADY_KNOWN):
                    self._mark_sent(item)
                    continue
                if any(s in lowered for s in _NONCE_TOO_LOW):
                    item.receipt = self._receipt_or_none(item.tx_hash)
                    if item.receipt is not None:  # it was ours, and it is mined
                        continue
                    self._next_nonce = None
                    if item.key is not None and self.outbox is not None:
                        self.outbox.mark_dropped(item.key, f"nonce {item.nonce} taken: {error}")
                    if rebuild:
                        retry.append(item)
                    continue
                self._next_nonce = None
                if any(s in lowered for s in _NONCE_TOO_HIGH):
                    raise NonceConflict(
                        f"{self.rpc_url} refused nonce {item.nonce} of {self.address} for "
                        f"{item.label}: {error}; the local nonce was reset, try again"
                    )
                raise ChainError(
                    f"{self.rpc_url} refused {item.label} (nonce {item.nonce}): {error}"
                )
            if not retry:
                return
            self._next_nonce = None
            pending = [self._rebuild(item) for item in retry]
            for old, new in zip(retry, pending, strict=True):
                items[next(i for i, x in enumerate(items) if x is old)] = new
        raise NonceConflict(
            f"{self.rpc_url} kept refusing the nonces of {self.address} after resynchronising "
            "three times: is another process sending from the same account?"
        )

    def _send_raw_batch(self, items: list[_Signed]) -> list[str | None]:
        """Send signed transactions; None per success, else the node's error message.

        Connection errors are retried: the same signed bytes can only be taken once.
        """
        errors: list[str | None] = []
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            requests_ = [("eth_sendRawTransaction", ["0x" + i.raw_tx.hex()]) for i in chunk]
            responses = self._batch(requests_, retries=self.send_retries)
            for response in responses:
                error = response.get("error")
                errors.append(None if not error else str(error.get("message", error)))
        return errors

    def call_many(self, calls: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """eth_call each (contract address, calldata) in one JSON-RPC batch; the return data.

        For views read for many meters at once, where web3's per-call formatting would cost
        more than the node's work.
        """
        requests_ = [
            ("eth_call", [{"to": to, "data": "0x" + data.hex()}, "latest"]) for to, data in calls
        ]
        results = self._batch(requests_, retries=self.send_retries)
        returned = []
        for (to, _), result in zip(calls, results, strict=True):
            if "error" in result:
                raise ChainError(f"{self.rpc_url}: a call to {to} failed: {result['error']}")
            returned.append(bytes.fromhex(str(result["result"])[2:]))
        return returned

    def _batch(
        self, calls: list[tuple[str, list[Any]]], *, retries: int = 1
    ) -> list[dict[str, Any]]:
        """One JSON-RPC batch (web3's batch_requests refuses eth_sendRawTransaction)."""
        provider: Any = self.w3.provider
        if len(calls) == 1:  # some nodes (and proxies) do not take batches: a plain request

            def send() -> list[dict[str, Any]]:
                method, params = calls[0]
                return [dict(provider.make_request(method, params))]
        else:

            def send() -> list[dict[str, Any]]:
                result = provider.make_batch_request(calls)
                if not isinstance(result, list):  # the whole batch was refused
                    error = result.get("error", result)
                    raise ChainError(f"{self.rpc_url} refused a JSON-RPC batch: {error}")
                return [dict(r) for r in result]

        last: BaseException | None = None
        for attempt in range(max(1, retries + 1)):
            try:
                return send()
            except _TRANSPORT_ERRORS as exc:
                last = exc
                if attempt < retries:
                    time.sleep(self.retry_backoff_s * 2**attempt)
        self._next_nonce = None  # we cannot know what the node received
        raise ChainUnavailable(self.rpc_url, _reason(last)) from None

    def _mark_sent(self, item: _Signed) -> None:
        if item.key is not None and self.outbox is not None:
            self.outbox.mark_sent(item.key)

    # ---- receipts ---------------------------------------------------------------------------

    def _receipt_or_none(self, tx_hash: str) -> TxReceipt | None:
        try:
            receipt: TxReceipt = self._rpc(
                lambda: self.w3.eth.get_transaction_receipt(HexStr(tx_hash))
            )
            return receipt
        except TransactionNotFound:
            return None

    def _wait_receipts(self, items: list[_Signed]) -> list[TxReceipt]:
        """Receipts for all items, in order: polled in JSON-RPC batches, not one call each."""
        waiting = [i for i in items if i.receipt is None]
        if len(waiting) <= 1:
            return [i.receipt or self._wait_receipt(i) for i in items]
        deadline = time.monotonic() + self.receipt_timeout_s
        delay = 0.005
        while waiting:
            try:
                found = self._batch(
                    [("eth_getTransactionReceipt", [i.tx_hash]) for i in waiting],
                    retries=self.send_retries,
                )
            except ChainUnavailable as exc:
                first = waiting[0]
                raise ChainUnavailable(
                    self.rpc_url,
                    f"{exc.reason} while waiting for {len(waiting)} sent transactions from "
                    f"{first.tx_hash} (nonce {first.nonce}) on; they may still be mined",
                ) from None
            mined = [i for i, r in zip(waiting, found, strict=True) if r.get("result")]
            if mined:
                self._fetch_receipts(mined)
            waiting = [i for i in waiting if i.receipt is None]
            if waiting and time.monotonic() > deadline:
                self._wait_receipt(waiting[0])  # raises TransactionTimeout with the details
            if waiting and not mined:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
        return [cast(TxReceipt, i.receipt) for i in items]

    def _fetch_receipts(self, items: list[_Signed]) -> None:
        """Formatted receipts of mined transactions, BATCH_LIMIT per request."""
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            try:
                with self.w3.batch_requests() as batch:
                    for item in chunk:
                        batch.add(self.w3.eth.get_transaction_receipt(HexStr(item.tx_hash)))
                    receipts = batch.execute()
            except _TRANSPORT_ERRORS as exc:
                raise ChainUnavailable(self.rpc_url, _reason(exc)) from None
            for item, receipt in zip(chunk, receipts, strict=True):
                item.receipt = cast(TxReceipt, receipt)

    def _wait_receipt(self, item: _Signed) -> TxReceipt:
        """Poll for the receipt until `receipt_timeout_s`; give up early if the node is gone."""
        deadline = time.monotonic() + self.receipt_timeout_s
        delay = 0.005
        transport_failures = 0
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(HexStr(item.tx_hash))
            except TransactionNotFound:
                transport_failures = 0
            except _TRANSPORT_ERRORS as exc:
                transport_failures += 1
                if transport_failures > self.send_retries:
                    resume = f"; call again with key {item.key!r} to finish it" if item.key else ""
                    raise ChainUnavailable(
                        self.rpc_url,
                        f"{_reason(exc)} while waiting for {item.tx_hash} (nonce {item.nonce}), "
                        f"which was sent and may still be mined{resume}",
                    ) from None
                time.sleep(self.retry_backoff_s * 2 ** (transport_failures - 1))
                continue
            if time.monotonic() > deadline:
                raise TransactionTimeout(
                    f"{item.label} ({item.tx_hash}, nonce {item.nonce}) was sent to "
                    f"{self.rpc_url} but not mined within {self.receipt_timeout_s:g} s; it may "
                    "still be mined"
                    + (f": call again with key {item.key!r} to keep waiting" if item.key else "")
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _check_receipts(self, items: list[_Signed], receipts: list[TxReceipt]) -> list[TxReceipt]:
        first_failure: TransactionReverted | None = None
        for item, receipt in zip(items, receipts, strict=True):
            self._finish_in_outbox(item, receipt)
            if receipt["status"] == 1 or first_failure is not None:
                continue
            first_failure = self._reverted_on_chain(item, receipt)
        if first_failure is not None:
            first_failure.receipts = list(receipts)
            if len(items) > 1:
                index = next(i for i, r in enumerate(receipts) if r["status"] != 1)
                first_failure.message = (
                    f"transaction {index + 1} of {len(items)}: " + first_failure.message
                )
            raise first_failure
        return receipts

    def _finish_in_outbox(self, item: _Signed, receipt: TxReceipt) -> OutboxEntry | None:
        if item.key is None or self.outbox is None:
            return None
        block = int(receipt["blockNumber"])
        if receipt["status"] == 1:
            return self.outbox.mark_mined(item.key, block)
        return self.outbox.mark_failed(item.key, block, "reverted")

    # ---- reverts ----------------------------------------------------------------------------

    def _reverted_on_chain(self, item: _Signed, receipt: TxReceipt) -> TransactionReverted:
        """Replay the failed transaction with eth_call to get its revert data, then decode it."""
        tx = self._rpc(lambda: self.w3.eth.get_transaction(HexStr(item.tx_hash)))
        call: dict[str, Any] = {"from": tx["from"], "data": tx["input"], "gas": tx["gas"]}
        if tx.get("to"):
            call["to"] = tx["to"]
        if tx.get("value"):
            call["value"] = tx["value"]
        block = int(receipt["blockNumber"])
        data = b""
        for at in (block, max(block - 1, 0)):  # state after its block, then before it
            data = self._revert_data_of_call(call, at)
            if data:
                break
        detail = None
        if not data and receipt["gasUsed"] >= tx["gas"]:
            detail = f"out of gas (used all {tx['gas']} gas)"
        return self._reverted(item, data, tx_hash=item.tx_hash, detail=detail)

    def _revert_data_of_call(self, call: Mapping[str, Any], block: int) -> bytes:
        try:
            self._rpc(lambda: self.w3.eth.call(call, block))  # type: ignore[arg-type]
        except ContractLogicError as exc:
            return _revert_bytes(exc.data)
        except Web3RPCError as exc:
            response = exc.rpc_response or {}
            error = response.get("error")
            if isinstance(error, Mapping):
                return _revert_bytes(error.get("data"))
        return b""

    def _reverted(
        self,
        fn_or_item: Transactable | _Signed,
        data: bytes,
        *,
        tx_hash: str | None,
        detail: str | None = None,
    ) -> TransactionReverted:
        if isinstance(fn_or_item, _Signed):
            abi, label = fn_or_item.abi, fn_or_item.label
        else:
            abi, label = _abi_of(fn_or_item), _label(fn_or_item)
        decoder = RevertDecoder([*self.abis, abi])
        name, values, named, decode_detail = decoder.decode(data)
        return TransactionReverted(
            error_name=name, error_args=values, named_args=named, tx_hash=tx_hash,
            function=label, revert_data=data, detail=detail or decode_detail,
        )  # fmt: skip

    # ---- plumbing ---------------------------------------------------------------------------

    def _rpc(self, call: Any) -> Any:
        """Run one web3 call, turning transport failures into ChainUnavailable."""
        try:
            return call()
        except _TRANSPORT_ERRORS as exc:
            raise ChainUnavailable(self.rpc_url, _reason(exc)) from None


def _label(fn: Transactable) -> str:
    name = getattr(fn, "fn_name", None)
    address = getattr(fn, "address", None)
    if name and address:
        return f"{name}() on {address}"
    if name:
        return f"{name}()"
    return "contract deployment"


def _abi_of(fn: Transactable) -> Sequence[Mapping[str, Any]]:
    abi = getattr(fn, "contract_abi", None)
    if abi is None:  # a constructor carries the contract's ABI as `abi`
        abi = getattr(fn, "abi", None)
    return list(abi) if isinstance(abi, list) else []


def _call_params(tx: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {"from": tx["from"], "data": _hex(tx.get("data", "0x"))}
    if tx.get("to"):
        params["to"] = tx["to"]
    if tx.get("value"):
        params["value"] = hex(int(tx["value"]))
    return params


def _hex(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return str(value)


def _revert_bytes(data: Any) -> bytes:
    if isinstance(data, Mapping):  # some nodes nest it: {"data": "0x…"} or {"message": …}
        data = data.get("data") or data.get("result")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if isinstance(data, str):
        text = data.strip()
        if text.startswith("Reverted "):  # ganache/hardhat style
            text = text.split(" ", 1)[1]
        try:
            return bytes.fromhex(text.removeprefix("0x"))
        except ValueError:
            return b""
    return b""


def _reason(exc: BaseException | None) -> str:
    if exc is None:
        return "no answer"
    if isinstance(exc, requests.Timeout | TimeoutError):
        return "timed out"
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    first = (text.strip() or type(exc).__name__).splitlines()[0]
    return first if len(first) <= 200 else first[:200] + "…"
