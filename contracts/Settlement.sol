// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title Settlement
/// @notice The money rules of an interval, as pure arithmetic (DESIGN.md §5.2).
/// @dev Units: energy in Wh, prices in credit smallest units per kWh, so Wh × price is exact in
///      thousandths of a smallest unit ("milli-units"). Each meter's credits round down and its
///      debits round up, once per meter and interval; the grid account receives every residue.
///
///      The rules, for a meter that bought `boughtWh` for `costMilli` and sold `soldWh` for
///      `valueMilli` in an interval, then imported `importWh` and exported `exportWh` in it:
///      - what was bought is paid for whether or not it is imported; the unused part is sold
///        back to the grid at the feed-in tariff, import beyond it is bought at retail;
///      - what was sold is paid for; the part not exported is bought from the grid at retail,
///        export beyond it is sold to the grid at feed-in;
///      - energy metered in a gap between settled intervals is settled at the tariffs only.
///      With trade prices held within [feed-in, retail], every deviation costs the deviating
///      meter at least what the grid's tariffs would have, so no coalition of meters gains from
///      energy that did not flow.
library Settlement {
    uint256 internal constant MILLI = 1000;

    /// @dev A meter's net trades in one batch (costMilli, valueMilli in milli-units).
    struct Position {
        bytes32 meterId;
        uint256 boughtWh;
        uint256 costMilli;
        uint256 soldWh;
        uint256 valueMilli;
    }

    /// @dev Energy metered for one meter: in the interval itself and in the gap before it.
    struct Metered {
        uint256 importWh;
        uint256 exportWh;
        uint256 gapImportWh;
        uint256 gapExportWh;
    }

    /// @notice What a batch locks from a meter's balance: a buyer's cost, and a seller's worst
    ///         case beyond what its sale pays (buying all it sold from the grid at retail).
    /// @dev Chosen so that, at delivery, locked + what the sale pays always covers what the
    ///      trades can cost: settlement never has to write a trading obligation off.
    function lockedUnits(Position memory position, uint256 retailPrice) internal pure returns (uint256 locked) {
        locked = ceilDiv(position.costMilli, MILLI);
        uint256 worstUnits = ceilDiv(position.soldWh * retailPrice, MILLI);
        uint256 paidUnits = position.valueMilli / MILLI;
        if (worstUnits > paidUnits) locked += worstUnits - paidUnits;
    }

    /// @notice What a meter earns (`creditMilli`) and owes (`debitMilli`) for an interval.
    function amountsMilli(Position memory position, Metered memory metered, uint256 retailPrice, uint256 feedInPrice)
        internal
        pure
        returns (uint256 creditMilli, uint256 debitMilli)
    {
        debitMilli = position.costMilli + metered.gapImportWh * retailPrice;
        creditMilli = position.valueMilli + metered.gapExportWh * feedInPrice;
        if (metered.importWh > position.boughtWh) {
            debitMilli += (metered.importWh - position.boughtWh) * retailPrice;
        } else {
            creditMilli += (position.boughtWh - metered.importWh) * feedInPrice;
        }
        if (metered.exportWh > position.soldWh) {
            creditMilli += (metered.exportWh - position.soldWh) * feedInPrice;
        } else {
            debitMilli += (position.soldWh - metered.exportWh) * retailPrice;
        }
    }

    /// @notice Credits (locked amount released, plus earnings rounded down) and debit (rounded
    ///         up) of a meter, in smallest units.
    function amounts(Position memory position, Metered memory metered, uint256 retailPrice, uint256 feedInPrice)
        internal
        pure
        returns (uint256 locked, uint256 credits, uint256 debit)
    {
        (uint256 creditMilli, uint256 debitMilli) = amountsMilli(position, metered, retailPrice, feedInPrice);
        locked = lockedUnits(position, retailPrice);
        credits = locked + creditMilli / MILLI;
        debit = ceilDiv(debitMilli, MILLI);
    }

    /// @notice The most energy a connection of `maxPowerW` can carry in `seconds_`, in Wh
    ///         (rounded up: a meter's registers count whole Wh).
    function maxEnergyWh(uint256 maxPowerW, uint256 seconds_) internal pure returns (uint256) {
        return ceilDiv(maxPowerW * seconds_, 3600);
    }

    function ceilDiv(uint256 a, uint256 b) internal pure returns (uint256) {
        return a == 0 ? 0 : (a - 1) / b + 1;
    }
}
