// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title MeterRegistry
/// @notice Which key signs for which meter: meter id → signer, owner, kind and revocation.
/// @dev The signer, kind and revoked flag share one storage slot, so the market's per-meter
///      lookup during settlement is a single SLOAD. The owner lives in a second slot because it
///      is only needed when money leaves the market (withdrawals).
contract MeterRegistry is AccessControl {
    /// @notice Role allowed to add meters, rotate their signer and revoke them.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");

    /// @notice What is behind the meter.
    enum MeterKind {
        Consumer,
        Prosumer,
        Generator,
        EvCharger
    }

    /// @dev 160 + 8 + 8 bits: one slot.
    struct SignerRecord {
        address signer;
        MeterKind kind;
        bool revoked;
    }

    mapping(bytes32 meterId => SignerRecord) private _records;
    mapping(bytes32 meterId => address) private _owners;

    /// @notice A meter was added.
    event MeterRegistered(
        bytes32 indexed meterId, address indexed signer, address indexed owner, MeterKind kind
    );
    /// @notice A meter's board key was replaced.
    event SignerRotated(bytes32 indexed meterId, address indexed previousSigner, address indexed newSigner);
    /// @notice A meter was revoked for good: its signatures are no longer accepted.
    event MeterRevoked(bytes32 indexed meterId);

    error ZeroMeterId();
    error ZeroSigner(bytes32 meterId);
    error ZeroOwner(bytes32 meterId);
    error MeterAlreadyRegistered(bytes32 meterId, address signer);
    error UnknownMeter(bytes32 meterId);
    error MeterIsRevoked(bytes32 meterId);

    /// @param admin Account that holds DEFAULT_ADMIN_ROLE (grants and revokes roles).
    /// @param registrar First holder of REGISTRAR_ROLE.
    constructor(address admin, address registrar) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REGISTRAR_ROLE, registrar);
    }

    /// @notice Add a meter. Meter ids are never reused, not even after revocation.
    /// @param meterId The meter's id (its serial, UTF-8, left-aligned and zero-padded).
    /// @param signer The board key that signs the meter's orders and readings.
    /// @param owner The account that may withdraw the meter's market balance.
    /// @param kind Consumer, prosumer, generator or EV charger.
    function registerMeter(bytes32 meterId, address signer, address owner, MeterKind kind)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (meterId == bytes32(0)) revert ZeroMeterId();
        if (signer == address(0)) revert ZeroSigner(meterId);
        if (owner == address(0)) revert ZeroOwner(meterId);
        address existing = _records[meterId].signer;
        if (existing != address(0)) revert MeterAlreadyRegistered(meterId, existing);
        _records[meterId] = SignerRecord({signer: signer, kind: kind, revoked: false});
        _owners[meterId] = owner;
        emit MeterRegistered(meterId, signer, owner, kind);
    }

    /// @notice Replace the key that signs for a meter (a new board, a compromised key).
    /// @param meterId A registered, unrevoked meter.
    /// @param newSigner The new board key.
    function rotateSigner(bytes32 meterId, address newSigner) external onlyRole(REGISTRAR_ROLE) {
        if (newSigner == address(0)) revert ZeroSigner(meterId);
        SignerRecord storage record = _activeRecord(meterId);
        address previous = record.signer;
        record.signer = newSigner;
        emit SignerRotated(meterId, previous, newSigner);
    }

    /// @notice Revoke a meter for good: the market refuses its orders and readings from now on.
    /// @param meterId A registered, unrevoked meter.
    function revokeMeter(bytes32 meterId) external onlyRole(REGISTRAR_ROLE) {
        _activeRecord(meterId).revoked = true;
        emit MeterRevoked(meterId);
    }

    /// @notice The signer and revocation flag in one SLOAD; signer is zero for unknown meters.
    /// @param meterId The meter to look up.
    function signerOf(bytes32 meterId) external view returns (address signer, bool revoked) {
        SignerRecord storage record = _records[meterId];
        return (record.signer, record.revoked);
    }

    /// @notice The account that may withdraw the meter's market balance (zero if unknown).
    /// @param meterId The meter to look up.
    function ownerOf(bytes32 meterId) external view returns (address) {
        return _owners[meterId];
    }

    /// @notice Everything the registry knows about a meter; reverts for unknown meters.
    /// @param meterId The meter to look up.
    function meter(bytes32 meterId)
        external
        view
        returns (address signer, address owner, MeterKind kind, bool revoked)
    {
        SignerRecord storage record = _records[meterId];
        if (record.signer == address(0)) revert UnknownMeter(meterId);
        return (record.signer, _owners[meterId], record.kind, record.revoked);
    }

    function _activeRecord(bytes32 meterId) private view returns (SignerRecord storage record) {
        record = _records[meterId];
        if (record.signer == address(0)) revert UnknownMeter(meterId);
        if (record.revoked) revert MeterIsRevoked(meterId);
    }
}
