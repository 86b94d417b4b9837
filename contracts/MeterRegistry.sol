// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";

/// @title MeterRegistry
/// @notice Which key signs for which meter, who owns it, what it may do, how much power its
///         connection carries, and which market it belongs to.
/// @dev A meter's signer, kind, revoked flag, connection limit and market share one storage
///      slot (see `lookup`), so a market's per-meter check during settlement is one SLOAD. The
///      owner lives in a second slot: it is only needed when money leaves a market.
///
///      A meter belongs to one market at a time (`assignMarket`): markets ask `lookup`, which
///      says whether the caller is the meter's market, so a meter moved to another market is
///      refused by the first one at once and can never be paid twice for the same energy.
contract MeterRegistry is AccessControl {
    /// @notice Role allowed to add meters, change their signer, limit and market, and revoke them.
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    /// @notice Role of contracts allowed to revoke a meter on proof of equivocation (markets).
    bytes32 public constant ENFORCER_ROLE = keccak256("ENFORCER_ROLE");

    /// @notice What is behind the meter. Only prosumers and generators may sell.
    enum MeterKind {
        Consumer,
        Prosumer,
        Generator,
        EvCharger
    }

    // Bit layout of a record (one slot), as `lookup` returns it.
    uint256 private constant _KIND = 160;
    uint256 private constant _REVOKED = 168;
    uint256 private constant _MAX_POWER = 176; // uint32, W
    uint256 private constant _MARKET = 208; // uint16 market number, 0: none

    mapping(bytes32 meterId => uint256) private _records;
    mapping(bytes32 meterId => address) private _owners;
    /// @notice Number of each market known to the registry (1, 2, …; 0: not a market).
    mapping(address market => uint256) public marketNumber;
    /// @notice Markets by number (index 0 unused).
    address[] private _markets;

    /// @notice A meter was added.
    event MeterRegistered(
        bytes32 indexed meterId, address indexed signer, address indexed owner, MeterKind kind, uint32 maxPowerW
    );
    /// @notice A meter's board key was replaced.
    event SignerRotated(bytes32 indexed meterId, address indexed previousSigner, address indexed newSigner);
    /// @notice A meter was revoked for good: its signatures are no longer accepted.
    event MeterRevoked(bytes32 indexed meterId);
    /// @notice A meter was revoked because its key signed two different messages for one slot.
    event MeterRevokedForEquivocation(bytes32 indexed meterId, address indexed enforcer);
    /// @notice A meter's connection limit changed.
    event MaxPowerSet(bytes32 indexed meterId, uint32 maxPowerW);
    /// @notice A market was added to the registry.
    event MarketAdded(address indexed market, uint256 number);
    /// @notice A meter now belongs to `market` (zero: to none).
    event MeterAssigned(bytes32 indexed meterId, address indexed market, address indexed previousMarket);

    error ZeroMeterId();
    error ZeroSigner(bytes32 meterId);
    error ZeroOwner(bytes32 meterId);
    error ZeroMaxPower(bytes32 meterId);
    error MeterAlreadyRegistered(bytes32 meterId, address signer);
    error UnknownMeter(bytes32 meterId);
    error MeterIsRevoked(bytes32 meterId);
    error UnknownMarket(address market);
    error MarketAlreadyAdded(address market, uint256 number);
    error TooManyMarkets();

    /// @param admin Account that holds DEFAULT_ADMIN_ROLE (grants and revokes roles).
    /// @param registrar First holder of REGISTRAR_ROLE.
    constructor(address admin, address registrar) {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(REGISTRAR_ROLE, registrar);
        _markets.push(address(0));
    }

    /// @notice Add a meter. Meter ids are never reused, not even after revocation.
    /// @param meterId The meter's id (its serial, UTF-8, left-aligned and zero-padded).
    /// @param signer The board key that signs the meter's orders and readings.
    /// @param owner The account that may withdraw the meter's market balance.
    /// @param kind Consumer, prosumer, generator or EV charger.
    /// @param maxPowerW What the meter's connection can carry, in W: readings above it are
    ///        refused as implausible.
    function registerMeter(bytes32 meterId, address signer, address owner, MeterKind kind, uint32 maxPowerW)
        external
        onlyRole(REGISTRAR_ROLE)
    {
        if (meterId == bytes32(0)) revert ZeroMeterId();
        if (signer == address(0)) revert ZeroSigner(meterId);
        if (owner == address(0)) revert ZeroOwner(meterId);
        if (maxPowerW == 0) revert ZeroMaxPower(meterId);
        address existing = address(uint160(_records[meterId]));
        if (existing != address(0)) revert MeterAlreadyRegistered(meterId, existing);
        _records[meterId] =
            uint256(uint160(signer)) | (uint256(kind) << _KIND) | (uint256(maxPowerW) << _MAX_POWER);
        _owners[meterId] = owner;
        emit MeterRegistered(meterId, signer, owner, kind, maxPowerW);
    }

    /// @notice Replace the key that signs for a meter (a new board, a compromised key).
    /// @param meterId A registered, unrevoked meter.
    /// @param newSigner The new board key.
    function rotateSigner(bytes32 meterId, address newSigner) external onlyRole(REGISTRAR_ROLE) {
        if (newSigner == address(0)) revert ZeroSigner(meterId);
        uint256 record = _activeRecord(meterId);
        _records[meterId] = (record & ~uint256(type(uint160).max)) | uint256(uint160(newSigner));
        emit SignerRotated(meterId, address(uint160(record)), newSigner);
    }

    /// @notice Change what a meter's connection can carry (a new contract with the utility).
    /// @param meterId A registered, unrevoked meter.
    /// @param maxPowerW The new limit in W.
    function setMaxPower(bytes32 meterId, uint32 maxPowerW) external onlyRole(REGISTRAR_ROLE) {
        if (maxPowerW == 0) revert ZeroMaxPower(meterId);
        uint256 record = _activeRecord(meterId);
        _records[meterId] = (record & ~(uint256(type(uint32).max) << _MAX_POWER)) | (uint256(maxPowerW) << _MAX_POWER);
        emit MaxPowerSet(meterId, maxPowerW);
    }

    /// @notice Revoke a meter for good: every market refuses its orders and readings from now on.
    /// @param meterId A registered, unrevoked meter.
    function revokeMeter(bytes32 meterId) external onlyRole(REGISTRAR_ROLE) {
        _records[meterId] = _activeRecord(meterId) | (uint256(1) << _REVOKED);
        emit MeterRevoked(meterId);
    }

    /// @notice Revoke a meter whose key was proven to equivocate (called by a market that
    ///         checked two conflicting signatures; see EnergyMarket.proveReadingEquivocation).
    /// @param meterId A registered, unrevoked meter.
    function revokeForEquivocation(bytes32 meterId) external onlyRole(ENFORCER_ROLE) {
        _records[meterId] = _activeRecord(meterId) | (uint256(1) << _REVOKED);
        emit MeterRevoked(meterId);
        emit MeterRevokedForEquivocation(meterId, msg.sender);
    }

    /// @notice Make `market` known to the registry so meters can be assigned to it.
    /// @param market A market contract.
    function addMarket(address market) external onlyRole(REGISTRAR_ROLE) {
        if (market == address(0)) revert UnknownMarket(market);
        uint256 existing = marketNumber[market];
        if (existing != 0) revert MarketAlreadyAdded(market, existing);
        uint256 number = _markets.length;
        if (number > type(uint16).max) revert TooManyMarkets();
        _markets.push(market);
        marketNumber[market] = number;
        emit MarketAdded(market, number);
    }

    /// @notice Move a meter into `market` (zero address: out of every market). The previous
    ///         market refuses the meter's orders and readings from this moment.
    /// @param meterId A registered, unrevoked meter.
    /// @param market A market added with `addMarket`, or the zero address.
    function assignMarket(bytes32 meterId, address market) external onlyRole(REGISTRAR_ROLE) {
        uint256 number;
        if (market != address(0)) {
            number = marketNumber[market];
            if (number == 0) revert UnknownMarket(market);
        }
        uint256 record = _activeRecord(meterId);
        address previous = _markets[(record >> _MARKET) & 0xffff];
        _records[meterId] = (record & ~(uint256(0xffff) << _MARKET)) | (number << _MARKET);
        emit MeterAssigned(meterId, market, previous);
    }

    /// @notice Everything a market needs about a meter in one word, and whether the caller is
    ///         the meter's market: signer (bits 0-159), kind (160-167), revoked (168-175),
    ///         maxPowerW (176-207), market number (208-223). Zero for unknown meters.
    /// @param meterId The meter to look up.
    function lookup(bytes32 meterId) external view returns (uint256 record, bool callerIsMarket) {
        record = _records[meterId];
        uint256 number = (record >> _MARKET) & 0xffff;
        callerIsMarket = number != 0 && number == marketNumber[msg.sender];
    }

    /// @notice The signer and revocation flag in one SLOAD; signer is zero for unknown meters.
    /// @param meterId The meter to look up.
    function signerOf(bytes32 meterId) external view returns (address signer, bool revoked) {
        uint256 record = _records[meterId];
        return (address(uint160(record)), (record >> _REVOKED) & 0xff != 0);
    }

    /// @notice The account that may withdraw the meter's market balance (zero if unknown).
    /// @param meterId The meter to look up.
    function ownerOf(bytes32 meterId) external view returns (address) {
        return _owners[meterId];
    }

    /// @notice The market a meter belongs to (zero if none).
    /// @param meterId The meter to look up.
    function marketOf(bytes32 meterId) external view returns (address) {
        return _markets[(_records[meterId] >> _MARKET) & 0xffff];
    }

    /// @notice Everything the registry knows about a meter; reverts for unknown meters.
    /// @param meterId The meter to look up.
    function meter(bytes32 meterId)
        external
        view
        returns (address signer, address owner, MeterKind kind, bool revoked, uint32 maxPowerW, address market)
    {
        uint256 record = _records[meterId];
        if (address(uint160(record)) == address(0)) revert UnknownMeter(meterId);
        return (
            address(uint160(record)),
            _owners[meterId],
            MeterKind(uint8(record >> _KIND)),
            (record >> _REVOKED) & 0xff != 0,
            uint32(record >> _MAX_POWER),
            _markets[(record >> _MARKET) & 0xffff]
        );
    }

    function _activeRecord(bytes32 meterId) private view returns (uint256 record) {
        record = _records[meterId];
        if (address(uint160(record)) == address(0)) revert UnknownMeter(meterId);
        if ((record >> _REVOKED) & 0xff != 0) revert MeterIsRevoked(meterId);
    }
}
