"""Typed chain errors whose messages say what failed, where, and what to do.

None of them ever carries a private key or a password.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ChainError(Exception):
    """Base of every error the chain layer raises on purpose."""


class ChainUnavailable(ChainError):
    """The node does not answer: down, unreachable or not an Ethereum JSON-RPC endpoint."""

    def __init__(self, rpc_url: str, reason: str) -> None:
        self.rpc_url = rpc_url
        self.reason = reason
        super().__init__(
            f"no answer from the chain node at {rpc_url} ({reason}); is the node running and "
            "the URL right? For a local node run `meterchain chain up`"
        )


class NodeStartError(ChainError):
    """The local anvil node could not be started (missing binary, bad state file, port taken)."""


class TransactionReverted(ChainError):
    """A transaction (or its gas estimate) reverted; names the contract's custom error and args.

    `error_name` is the Solidity error's name (`Error` for `require(…, "text")`, `Panic` for
    assert/overflow, None when the revert carried no data we can decode); `args` holds the
    decoded arguments in order and `named_args` the same by parameter name. `tx_hash` is None
    when the revert was found while estimating gas, before anything was sent.
    """

    def __init__(
        self,
        *,
        error_name: str | None,
        error_args: tuple[Any, ...] = (),
        named_args: Mapping[str, Any] | None = None,
        tx_hash: str | None = None,
        function: str | None = None,
        revert_data: bytes = b"",
        detail: str | None = None,
    ) -> None:
        self.error_name = error_name
        self.named_args = dict(named_args or {})
        self.tx_hash = tx_hash
        self.function = function
        self.revert_data = revert_data
        self.receipts: list[Any] = []
        what = function or "contract call"
        if error_name is None:
            reason = detail or (
                f"without a decodable reason (revert data 0x{revert_data.hex()})"
                if revert_data
                else "without revert data (out of gas, or a require without message)"
            )
            described = f"reverted {reason}"
        else:
            shown = ", ".join(
                f"{name}={_show(value)}" if name else _show(value)
                for name, value in _pairs(error_args, self.named_args)
            )
            described = f"reverted with {error_name}({shown})"
            if detail:
                described += f": {detail}"
        where = f"transaction {tx_hash}" if tx_hash else "found by the gas estimate; not sent"
        self.message = f"{what} {described} ({where})"
        super().__init__(self.message)
        # The agreed interface exposes the decoded error arguments as `.args`.
        self.args = tuple(error_args)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_reverted, (self.__dict__,))


def _rebuild_reverted(state: dict[str, Any]) -> TransactionReverted:
    exc = TransactionReverted.__new__(TransactionReverted)
    exc.__dict__.update(state)
    return exc


def _pairs(values: tuple[Any, ...], named: Mapping[str, Any]) -> list[tuple[str, Any]]:
    names = list(named)
    return [(names[i] if i < len(names) else "", v) for i, v in enumerate(values)]


def _show(value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, tuple | list):
        return "(" + ", ".join(_show(v) for v in value) + ")"
    return str(value)


class TransactionTimeout(ChainError):
    """A sent transaction was not mined in time; it may still be mined later."""


class NonceConflict(ChainError):
    """The node keeps rejecting our nonce even after resynchronising it."""


class KeystoreError(ChainError):
    """A keystore file is missing, unreadable, or its password is wrong or absent."""


class DeploymentError(ChainError):
    """The deployment file is missing, malformed, or lacks a contract."""
