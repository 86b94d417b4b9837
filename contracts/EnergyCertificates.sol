// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";

/// @notice The part of MeterRegistry the certificates read.
interface ICertificateRegistry {
    function lookup(bytes32 meterId) external view returns (uint256 record, bool callerIsMarket);
    function ownerOf(bytes32 meterId) external view returns (address);
    function marketNumber(address market) external view returns (uint256);
}

/// @notice The part of EnergyMarket the certificates read.
interface IDeliveredMarket {
    function deliveryHash(uint64 interval) external view returns (bytes32);
    function intervalSeconds() external view returns (uint256);
}

/// @title EnergyCertificates
/// @notice Renewable-energy certificates with guarantee of origin, one per generating meter and
///         market interval (15 minutes by default), issued from the energy a market's delivery
///         settlement measured from signed readings. An ERC-1155 in the spirit of ERC-1888
///         (Energy Web Origin) and of EnergyTag's granular certificates; 1 token = 1 Wh.
/// @dev Issuance is a separate, permissionless call after `EnergyMarket.settleDelivery`
///      (the market is at the EIP-170 size limit): anyone re-submits the delivery's
///      `DeliverySettled.settlements` and its batch's positions, which must hash to the market's
///      `deliveryHash(interval)`. A market the registry does not know is refused, so a fake
///      market cannot vouch for energy.
///
///      Certificate id = device index << 64 | interval: one id per meter and interval. Each
///      device has a bitmap of its certified intervals (one bit each, 256 per slot), and every
///      market must use this contract's interval length, so the same energy is never certified
///      twice, whichever market settled it. Only meters the issuer registered as devices (with
///      their origin) get certificates, and only for the energy they exported in the interval
///      (never imported energy, never a gap's energy), up to what the device's rated capacity
///      generates in an interval. How much each certificate holds is in
///      its IntervalCertified event and its ERC-1155 mint; retired Wh are burnt (`Retired`).
///
///      Energy sold on the local market travels with its certificates: at issuance, the part
///      of each seller's certified energy that it sold (min(exported, sold)) is shared among
///      the interval's buyers pro rata of what they bought and imported (min(bought,
///      imported) / everything bought), and retired at once in the name of the buyers who
///      asked for it (`setAutoRetirement`). Shares of buyers who did not ask stay with the
///      seller. No loop runs over anything but the re-submitted delivery.
///
///      Minting does not call `onERC1155Received`: a meter owned by a contract (a community
///      fund) cannot block an interval's issuance by refusing tokens.
contract EnergyCertificates is ERC1155, AccessControl {
    /// @notice Role that registers generating devices and vouches for their origin data.
    bytes32 public constant ISSUER_ROLE = keccak256("ISSUER_ROLE");

    uint256 private constant _U64 = 0xffffffffffffffff;
    uint256 private constant _SETTLEMENT_BYTES = 64;
    uint256 private constant _POSITION_BYTES = 80;
    /// @dev IntervalCertified.certificates: id 12 | certifiedWh 8 | retiredWh 8.
    uint256 private constant _CERTIFICATE_BYTES = 28;
    /// @dev IntervalCertified.autoRetirements: id 12 | buyer meterId 32 | wh 8.
    uint256 private constant _PIECE_BYTES = 52;
    uint256 private constant _KIND_PROSUMER = 1;
    uint256 private constant _KIND_GENERATOR = 2;
    uint256 private constant _MAX_TEXT_BYTES = 200;

    /// @notice Where each device is and what it is: its guarantee of origin.
    struct Device {
        bytes32 meterId;
        uint64 capacityW;
        uint64 commissionedAt; // Unix seconds
        string site;
        string technology; // e.g. "Solar;Photovoltaic;Roof mounted"
        string location; // e.g. "-3.7319,-38.5267 Fortaleza CE BR"
    }

    /// @dev A seller of one interval while it is issued.
    struct Seller {
        uint256 id;
        address owner;
        uint256 certifiedWh;
        uint256 localWh; // min(exported, sold): what travels with the energy sold locally
        uint256 remainingWh; // of localWh, not retired for a buyer yet
    }

    /// @dev A buyer of one interval while it is issued.
    struct Buyer {
        bytes32 meterId;
        uint256 matchedWh; // min(bought, imported)
    }

    /// @dev What one issuance found in the delivery.
    struct Walk {
        address market;
        uint64 interval;
        Seller[] sellers;
        Buyer[] buyers;
        uint256 sellerCount;
        uint256 buyerCount;
        uint256 tradedWh; // everything bought in the interval (= everything sold)
    }

    /// @notice The meter registry (owners, kinds, known markets).
    ICertificateRegistry public immutable registry;
    /// @notice Length of a certificate's interval, the same as every certified market's.
    uint256 public immutable intervalSeconds;

    /// @dev meterId → device index (1, 2, …; 0: not a device) in the low 64 bits, and the most
    ///      Wh its rated capacity generates in an interval above them (one SLOAD per seller).
    mapping(bytes32 meterId => uint256) private _deviceIndex;
    /// @dev device index → device (index 0 unused).
    Device[] private _devices;
    /// @dev device index → bitmap of certified intervals (interval number / 256 → 256 bits).
    mapping(uint256 index => mapping(uint256 word => uint256)) private _certified;
    /// @dev market → bitmap of intervals issued (interval number / 256 → 256 bits).
    mapping(address market => mapping(uint256 word => uint256)) private _issuedIntervals;
    /// @dev meterId → 1 if its owner asked for local purchases to be retired in its name.
    mapping(bytes32 meterId => uint256) private _autoRetirement;

    /// @notice A generating device and its origin data were registered.
    event DeviceRegistered(
        bytes32 indexed meterId,
        uint256 index,
        uint64 capacityW,
        uint64 commissionedAt,
        string site,
        string technology,
        string location
    );
    /// @notice A meter's owner asked (beneficiary non-empty) or stopped asking (empty) for the
    ///         certificates of the energy the meter buys locally to be retired in its name.
    event AutoRetirementSet(bytes32 indexed meterId, address indexed owner, string beneficiary, string purpose);
    /// @notice An interval of `market` was certified. `certificates` packs each certificate
    ///         issued (id 12 | certifiedWh 8 | retiredWh 8), `autoRetirements` each part retired
    ///         for a buyer at once (id 12 | buyer meterId 32 | wh 8); big-endian, no padding.
    event IntervalCertified(
        address indexed market,
        uint64 indexed interval,
        uint256 certifiedWh,
        uint256 autoRetiredWh,
        bytes certificates,
        bytes autoRetirements
    );
    /// @notice A meter's energy of `interval` was already certified (through another market):
    ///         it was not certified again.
    event AlreadyCertified(bytes32 indexed meterId, uint64 indexed interval, address market);
    /// @notice `wh` of certificate `id` held by `holder` were retired (claimed) for `beneficiary`'s
    ///         consumption in [periodStart, periodEnd), for `purpose`. Retired energy is burnt.
    event Retired(
        uint256 indexed id,
        address indexed holder,
        uint256 wh,
        string beneficiary,
        uint64 periodStart,
        uint64 periodEnd,
        string purpose
    );

    error UnknownMarket(address market);
    error NotDelivered(address market, uint64 interval);
    error DeliveryMismatch(address market, uint64 interval, bytes32 expected, bytes32 provided);
    error IntervalAlreadyIssued(address market, uint64 interval);
    error MalformedDelivery(uint256 settlementsLength, uint256 positionsLength);
    error UnknownMeter(bytes32 meterId);
    error DeviceCannotGenerate(bytes32 meterId, uint256 kind);
    error DeviceAlreadyRegistered(bytes32 meterId, uint256 index);
    error InvalidOrigin(bytes32 meterId);
    error NotMeterOwner(bytes32 meterId, address caller);
    error UnknownDevice(uint256 index);
    error IntervalLengthMismatch(address market, uint256 intervalSeconds, uint256 expected);
    error ZeroAmount();
    error InvalidClaim(uint256 id);
    error InvalidPeriod(uint64 periodStart, uint64 periodEnd);

    /// @param registry_ The meter registry whose markets may have their deliveries certified.
    /// @param intervalSeconds_ The markets' interval length (900: 15-minute certificates).
    /// @param admin Holder of DEFAULT_ADMIN_ROLE.
    /// @param issuer First holder of ISSUER_ROLE.
    constructor(ICertificateRegistry registry_, uint256 intervalSeconds_, address admin, address issuer)
        ERC1155("")
    {
        if (intervalSeconds_ == 0) revert IntervalLengthMismatch(address(0), 0, 1);
        registry = registry_;
        intervalSeconds = intervalSeconds_;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        _grantRole(ISSUER_ROLE, issuer);
        _devices.push();
    }

    // ---------------------------------------------------------------- devices

    /// @notice Register a generating meter and its origin data (the issuer vouches for them).
    /// @param origin The meter (a prosumer or generator of the registry), its rated capacity
    ///        (W), when it started generating (Unix seconds), its site's name, its technology
    ///        (e.g. "Solar;Photovoltaic;Roof mounted") and where it is.
    function registerDevice(Device calldata origin) external onlyRole(ISSUER_ROLE) {
        bytes32 meterId = origin.meterId;
        (uint256 record,) = registry.lookup(meterId);
        if (address(uint160(record)) == address(0)) revert UnknownMeter(meterId);
        uint256 kind = (record >> 160) & 0xff;
        if (kind != _KIND_PROSUMER && kind != _KIND_GENERATOR) revert DeviceCannotGenerate(meterId, kind);
        uint256 existing = _deviceIndex[meterId] & _U64;
        if (existing != 0) revert DeviceAlreadyRegistered(meterId, existing);
        if (
            origin.capacityW == 0 || bytes(origin.technology).length == 0
                || bytes(origin.site).length > _MAX_TEXT_BYTES || bytes(origin.technology).length > _MAX_TEXT_BYTES
                || bytes(origin.location).length > _MAX_TEXT_BYTES
        ) revert InvalidOrigin(meterId);
        uint256 index = _devices.length;
        _devices.push(origin);
        _deviceIndex[meterId] = index | (((uint256(origin.capacityW) * intervalSeconds + 3599) / 3600) << 64);
        emit DeviceRegistered(
            meterId, index, origin.capacityW, origin.commissionedAt, origin.site, origin.technology, origin.location
        );
    }

    // ---------------------------------------------------------------- issuance

    /// @notice Certify an interval's exported energy from a market's settled delivery. Anyone
    ///         may call it, once per market and interval.
    /// @param market A market the registry knows.
    /// @param interval A delivered interval of that market.
    /// @param settlements The delivery's DeliverySettled `settlements` (64 B per meter).
    /// @param positions The interval's batch positions (80 B per meter; empty without a batch).
    /// @return certificates How many certificates were issued.
    function issue(address market, uint64 interval, bytes calldata settlements, bytes calldata positions)
        external
        returns (uint256 certificates)
    {
        if (settlements.length % _SETTLEMENT_BYTES != 0 || positions.length % _POSITION_BYTES != 0) {
            revert MalformedDelivery(settlements.length, positions.length);
        }
        _claimInterval(market, interval, settlements, positions);
        Walk memory walk;
        walk.market = market;
        walk.interval = interval;
        _walk(walk, settlements, positions);
        uint256 autoRetiredWh;
        bytes memory pieces;
        if (walk.tradedWh != 0 && walk.sellerCount != 0) {
            (autoRetiredWh, pieces) = _retireForBuyers(walk.sellers, walk.buyers, walk.tradedWh);
        }
        (uint256 certifiedWh, bytes memory packed) = _mint(walk.sellers);
        emit IntervalCertified(market, interval, certifiedWh, autoRetiredWh, packed, pieces);
        return walk.sellerCount;
    }

    /// @dev Checks the market, the delivery's hash and that the interval was not issued; marks it.
    function _claimInterval(address market, uint64 interval, bytes calldata settlements, bytes calldata positions)
        private
    {
        if (registry.marketNumber(market) == 0) revert UnknownMarket(market);
        bytes32 expected = IDeliveredMarket(market).deliveryHash(interval);
        if (expected == bytes32(0)) revert NotDelivered(market, interval);
        bytes32 provided = keccak256(abi.encodePacked(settlements, positions));
        if (provided != expected) revert DeliveryMismatch(market, interval, expected, provided);
        uint256 length = IDeliveredMarket(market).intervalSeconds();
        if (length != intervalSeconds) revert IntervalLengthMismatch(market, length, intervalSeconds);
        uint256 number = interval / length;
        uint256 bit = uint256(1) << (number & 0xff);
        uint256 bits = _issuedIntervals[market][number >> 8];
        if (bits & bit != 0) revert IntervalAlreadyIssued(market, interval);
        _issuedIntervals[market][number >> 8] = bits | bit;
    }

    /// @dev One walk over the settlements (sorted by meter) with the positions (sorted by meter,
    ///      each with a settlement row): the certifiable sellers and the buyers.
    function _walk(Walk memory walk, bytes calldata settlements, bytes calldata positions) private {
        walk.sellers = new Seller[](settlements.length / _SETTLEMENT_BYTES);
        walk.buyers = new Buyer[](positions.length / _POSITION_BYTES);
        uint256 p; // offset into positions
        for (uint256 at; at < settlements.length; at += _SETTLEMENT_BYTES) {
            bytes32 meterId = bytes32(_word(settlements, at));
            uint256 flows = _word(settlements, at + 32); // importedWh 8 | exportedWh 8 | change 16
            uint256 traded; // boughtWh << 64 | soldWh
            if (p < positions.length && bytes32(_word(positions, p)) == meterId) {
                traded = ((_word(positions, p + 32) >> 192) << 64) | (_word(positions, p + 56) >> 192);
                p += _POSITION_BYTES;
            }
            if ((flows >> 128) & _U64 != 0) _addSeller(walk, meterId, flows, traded);
            uint256 boughtWh = traded >> 64;
            if (boughtWh != 0) {
                walk.tradedWh += boughtWh;
                uint256 importedWh = flows >> 192;
                walk.buyers[walk.buyerCount++] = Buyer(meterId, boughtWh < importedWh ? boughtWh : importedWh);
            }
        }
        Seller[] memory sellers = walk.sellers;
        Buyer[] memory buyers = walk.buyers;
        uint256 sellerCount = walk.sellerCount;
        uint256 buyerCount = walk.buyerCount;
        assembly ("memory-safe") {
            mstore(sellers, sellerCount)
            mstore(buyers, buyerCount)
        }
    }

    /// @dev Adds the exporting meter as a seller if it is a device whose interval is not
    ///      certified yet.
    function _addSeller(Walk memory walk, bytes32 meterId, uint256 flows, uint256 traded) private {
        uint256 record = _deviceIndex[meterId];
        uint256 index = record & _U64;
        if (index == 0) return;
        if (!_markCertified(index, walk.interval)) {
            emit AlreadyCertified(meterId, walk.interval, walk.market);
            return;
        }
        Seller memory seller = walk.sellers[walk.sellerCount++];
        seller.id = (index << 64) | walk.interval;
        seller.owner = registry.ownerOf(meterId);
        // No more than the device's rated capacity can generate in the interval: a site's
        // battery or a glitching register cannot be certified as generation beyond it.
        uint256 certifiedWh = (flows >> 128) & _U64;
        if (certifiedWh > record >> 64) certifiedWh = record >> 64;
        uint256 soldWh = traded & _U64;
        seller.certifiedWh = certifiedWh;
        seller.localWh = soldWh < certifiedWh ? soldWh : certifiedWh;
        seller.remainingWh = seller.localWh;
    }

    /// @dev Sets the device's bit of `interval`; false if it was set already.
    function _markCertified(uint256 index, uint64 interval) private returns (bool) {
        uint256 number = interval / intervalSeconds;
        uint256 bit = uint256(1) << (number & 0xff);
        uint256 bits = _certified[index][number >> 8];
        if (bits & bit != 0) return false;
        _certified[index][number >> 8] = bits | bit;
        return true;
    }

    /// @dev Shares the sellers' locally sold certified energy among the buyers pro rata of
    ///      min(bought, imported) / everything bought (rounded down, so never more than the
    ///      pool), and retires the shares of the buyers who asked for it, taking from the
    ///      sellers in meter order.
    function _retireForBuyers(Seller[] memory sellers, Buyer[] memory buyers, uint256 tradedWh)
        private
        view
        returns (uint256 retiredWh, bytes memory pieces)
    {
        uint256 poolWh;
        for (uint256 s; s < sellers.length; ++s) {
            poolWh += sellers[s].localWh;
        }
        if (poolWh == 0) return (0, "");
        // Each piece is written as whole words: room for the last one's tail, trimmed below.
        pieces = new bytes((buyers.length + sellers.length) * _PIECE_BYTES + 24);
        uint256 count;
        uint256 cursor;
        for (uint256 b; b < buyers.length; ++b) {
            Buyer memory buyer = buyers[b];
            if (buyer.matchedWh == 0 || _autoRetirement[buyer.meterId] == 0) continue;
            uint256 shareWh = poolWh * buyer.matchedWh / tradedWh;
            retiredWh += shareWh;
            while (shareWh != 0) {
                Seller memory seller = sellers[cursor];
                uint256 takeWh = seller.remainingWh < shareWh ? seller.remainingWh : shareWh;
                if (takeWh != 0) {
                    seller.remainingWh -= takeWh;
                    shareWh -= takeWh;
                    _packPiece(pieces, count++, seller.id, buyer.meterId, takeWh);
                }
                if (seller.remainingWh == 0) ++cursor;
            }
        }
        assembly ("memory-safe") {
            mstore(pieces, mul(count, 52)) // _PIECE_BYTES
        }
    }

    /// @dev Packs each certificate (issued and retired Wh) for the event and mints what was not
    ///      retired to the meter's owner, without an acceptance call.
    function _mint(Seller[] memory sellers) private returns (uint256 certifiedWh, bytes memory packed) {
        // Each record is written as a whole word: room for the last one's tail, trimmed below.
        packed = new bytes(sellers.length * _CERTIFICATE_BYTES + 4);
        uint256[] memory ids = new uint256[](1);
        uint256[] memory values = new uint256[](1);
        for (uint256 s; s < sellers.length; ++s) {
            Seller memory seller = sellers[s];
            uint256 retiredWh = seller.localWh - seller.remainingWh;
            certifiedWh += seller.certifiedWh;
            uint256 word = (seller.id << 160) | (seller.certifiedWh << 96) | (retiredWh << 32);
            assembly ("memory-safe") {
                mstore(add(add(packed, 0x20), mul(s, 28)), word) // 28 bytes, then 4 zero bytes
            }
            uint256 heldWh = seller.certifiedWh - retiredWh;
            if (heldWh != 0) {
                ids[0] = seller.id;
                values[0] = heldWh;
                _update(address(0), seller.owner, ids, values);
            }
        }
        assembly ("memory-safe") {
            mstore(packed, mul(mload(sellers), 28)) // _CERTIFICATE_BYTES
        }
    }

    function _packPiece(bytes memory pieces, uint256 index, uint256 id, bytes32 buyer, uint256 wh) private pure {
        assembly ("memory-safe") {
            let at := add(add(pieces, 0x20), mul(index, 52))
            mstore(at, shl(160, id)) // id in 12 bytes
            mstore(add(at, 12), buyer)
            let tail := add(at, 44)
            mstore(tail, shl(192, wh))
        }
    }

    // ---------------------------------------------------------------- retirement

    /// @notice Ask that the certificates of the energy this meter buys locally be retired in
    ///         `beneficiary`'s name at issuance (an empty beneficiary stops it). Owner only.
    /// @param meterId A meter of the registry.
    /// @param beneficiary Whose consumption the certificates back, e.g. the household's name.
    /// @param purpose Why, e.g. "24/7 renewable supply".
    function setAutoRetirement(bytes32 meterId, string calldata beneficiary, string calldata purpose) external {
        if (registry.ownerOf(meterId) != msg.sender) revert NotMeterOwner(meterId, msg.sender);
        if (bytes(beneficiary).length > _MAX_TEXT_BYTES || bytes(purpose).length > _MAX_TEXT_BYTES) {
            revert InvalidOrigin(meterId);
        }
        _autoRetirement[meterId] = bytes(beneficiary).length == 0 ? 0 : 1;
        emit AutoRetirementSet(meterId, msg.sender, beneficiary, purpose);
    }

    /// @notice Retire (claim) `wh` of certificate `id` that the caller holds, for `beneficiary`'s
    ///         consumption in [periodStart, periodEnd), for `purpose`. The retired Wh are burnt:
    ///         they can never be retired again nor move on.
    function retire(
        uint256 id,
        uint256 wh,
        string calldata beneficiary,
        uint64 periodStart,
        uint64 periodEnd,
        string calldata purpose
    ) external {
        _retire(msg.sender, id, wh, beneficiary, periodStart, periodEnd, purpose);
    }

    /// @notice `retire` from `holder`'s certificates by an operator it approved (ERC-1155
    ///         `setApprovalForAll`), as ERC-1888's claim-from.
    function retireFrom(
        address holder,
        uint256 id,
        uint256 wh,
        string calldata beneficiary,
        uint64 periodStart,
        uint64 periodEnd,
        string calldata purpose
    ) external {
        if (holder != msg.sender && !isApprovedForAll(holder, msg.sender)) {
            revert ERC1155MissingApprovalForAll(msg.sender, holder);
        }
        _retire(holder, id, wh, beneficiary, periodStart, periodEnd, purpose);
    }

    function _retire(
        address holder,
        uint256 id,
        uint256 wh,
        string calldata beneficiary,
        uint64 periodStart,
        uint64 periodEnd,
        string calldata purpose
    ) private {
        if (wh == 0) revert ZeroAmount();
        if (
            bytes(beneficiary).length == 0 || bytes(purpose).length == 0 || bytes(beneficiary).length > _MAX_TEXT_BYTES
                || bytes(purpose).length > _MAX_TEXT_BYTES
        ) revert InvalidClaim(id);
        if (periodEnd <= periodStart) revert InvalidPeriod(periodStart, periodEnd);
        _burn(holder, id, wh); // reverts with ERC1155InsufficientBalance beyond what `holder` holds
        emit Retired(id, holder, wh, beneficiary, periodStart, periodEnd, purpose);
    }

    // ---------------------------------------------------------------- views

    /// @notice The certificate id of a meter's interval (0 if the meter is not a device).
    function certificateId(bytes32 meterId, uint64 interval) external view returns (uint256) {
        uint256 index = _deviceIndex[meterId] & _U64;
        return index == 0 ? 0 : (index << 64) | interval;
    }

    /// @notice A certificate's meter and interval, and whether it was issued.
    function certificate(uint256 id) external view returns (bytes32 meterId, uint64 interval, bool issued) {
        uint256 index = id >> 64;
        if (index == 0 || index >= _devices.length) return (bytes32(0), uint64(id), false);
        uint256 number = uint64(id) / intervalSeconds;
        issued = _certified[index][number >> 8] & (uint256(1) << (number & 0xff)) != 0;
        return (_devices[index].meterId, uint64(id), issued);
    }

    /// @notice A device's origin data by meter id.
    function device(bytes32 meterId) external view returns (Device memory) {
        uint256 index = _deviceIndex[meterId] & _U64;
        if (index == 0) revert UnknownMeter(meterId);
        return _devices[index];
    }

    /// @notice A device's origin data by its index (id >> 64 of its certificates).
    function deviceAt(uint256 index) external view returns (Device memory) {
        if (index == 0 || index >= _devices.length) revert UnknownDevice(index);
        return _devices[index];
    }

    /// @notice Number of registered devices (their indexes run from 1).
    function deviceCount() external view returns (uint256) {
        return _devices.length - 1;
    }

    /// @notice Whether a meter's owner asked for auto-retirement of its local purchases.
    function autoRetirement(bytes32 meterId) external view returns (bool) {
        return _autoRetirement[meterId] != 0;
    }

    /// @notice Whether an interval of `market` was certified.
    function intervalIssued(address market, uint64 interval) external view returns (bool) {
        uint256 number = interval / intervalSeconds;
        return _issuedIntervals[market][number >> 8] & (uint256(1) << (number & 0xff)) != 0;
    }

    /// @inheritdoc ERC1155
    function supportsInterface(bytes4 interfaceId) public view override(ERC1155, AccessControl) returns (bool) {
        return super.supportsInterface(interfaceId);
    }

    function _word(bytes calldata data, uint256 at) private pure returns (uint256 value) {
        assembly ("memory-safe") {
            value := calldataload(add(data.offset, at))
        }
    }
}
