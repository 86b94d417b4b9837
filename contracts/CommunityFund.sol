// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC1155} from "@openzeppelin/contracts/token/ERC1155/IERC1155.sol";
import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @notice The part of EnergyMarket a fund that owns a meter uses.
interface IFundMarket {
    function balanceOf(bytes32 meterId) external view returns (uint256);
    function pendingWithdrawal(bytes32 meterId) external view returns (uint256 amount, uint256 availableAt);
    function requestWithdrawal(bytes32 meterId, uint256 amount) external;
    function withdraw(bytes32 meterId, address to) external;
}

/// @title CommunityFund
/// @notice Raises EnergyCredit for a community PV plant, all or nothing, and pays the plant's
///         market revenue to the holders of its shares (this ERC-20, whole shares).
/// @dev Campaign: shares sell at `pricePerShare` until `deadline` or until `cap` is raised.
///      Below `goal` at the deadline every holder takes back what its shares cost (`refund`);
///      at or above it the plant's owner (MANAGER_ROLE) draws the funds once.
///
///      The plant is a generator meter whose registry owner is this contract: it sells in the
///      market like any meter, and its balance there is revenue. Anyone moves it here in two
///      steps (`collect`: a withdrawal request, then after the market's withdrawal delay the
///      withdrawal), keeping `reserve` in the market for the locks its sales need. Any credit
///      that arrives beyond what the fund owes is revenue (`distribute`, also run by `collect`).
///
///      Revenue is paid pro rata by the dividend-per-share accumulator (no loop over holders):
///      `_perShare` grows by revenue × 2^128 / shares at each distribution (the remainder is
///      carried to the next one, so nothing is lost), and each account's `_corrections` are
///      moved on every mint, burn and transfer, so revenue distributed before a transfer stays
///      with the sender. A holder's claimable amount is rounded down, once per holder: Σ claims
///      ≤ revenue, and what stays behind is less than one smallest unit per holder.
contract CommunityFund is ERC20, AccessControl, ReentrancyGuard {
    using SafeERC20 for IERC20;

    /// @notice Role of the plant's owner: draws the raised funds, sets the reserve.
    bytes32 public constant MANAGER_ROLE = keccak256("MANAGER_ROLE");

    uint256 private constant _MAGNITUDE = 2 ** 128;

    /// @notice The credit token raised and paid out.
    IERC20 public immutable credit;
    /// @notice The market where the plant's meter sells.
    IFundMarket public immutable market;
    /// @notice The plant's meter (a generator whose registry owner is this fund).
    bytes32 public immutable plantMeterId;
    /// @notice Price of one share, in credit smallest units.
    uint256 public immutable pricePerShare;
    /// @notice The least the campaign must raise (credit smallest units).
    uint256 public immutable goal;
    /// @notice The most it may raise (credit smallest units).
    uint256 public immutable cap;
    /// @notice When the campaign ends (Unix seconds).
    uint256 public immutable deadline;

    /// @notice Credit raised by the campaign (shares sold × price, refunds deducted).
    uint256 public raised;
    /// @notice Whether the plant's owner drew the raised funds.
    bool public drawn;
    /// @notice Credit kept in the market's meter balance for the locks of the plant's sales.
    uint256 public reserve;
    /// @notice Revenue distributed to shareholders so far, and claimed so far.
    uint256 public totalDistributed;
    uint256 public totalClaimed;

    uint256 private _perShare; // revenue per share × 2^128
    uint256 private _carry; // remainder of revenue × 2^128 not yet per share
    mapping(address account => int256) private _corrections;
    mapping(address account => uint256) private _claimed;

    /// @notice `buyer` paid `cost` for `shares` shares.
    event SharesBought(address indexed buyer, uint256 shares, uint256 cost);
    /// @notice A failed campaign paid `holder` back `amount` for `shares` shares.
    event Refunded(address indexed holder, uint256 shares, uint256 amount);
    /// @notice The plant's owner drew the raised funds.
    event FundsDrawn(address indexed by, address indexed to, uint256 amount);
    /// @notice Revenue was distributed to shareholders.
    event RevenueDistributed(uint256 amount, uint256 shares);
    /// @notice `account` claimed its revenue.
    event RevenueClaimed(address indexed account, uint256 amount);
    /// @notice The plant's market balance: a withdrawal was requested (`requested`) and/or paid
    ///         to the fund (`withdrawn`).
    event Collected(uint256 withdrawn, uint256 requested);
    /// @notice The reserve left in the market for the plant's sales changed.
    event ReserveSet(uint256 reserve);
    /// @notice Certificates the fund received (as the plant's owner) were sent on.
    event CertificatesReleased(address indexed certificates, address indexed to, uint256[] ids, uint256[] amounts);

    error InvalidCampaign();
    error ZeroShares();
    error CampaignClosed(uint256 deadline);
    error CampaignOpen(uint256 deadline);
    error CapExceeded(uint256 cost, uint256 remaining);
    error CampaignSucceeded(uint256 raised, uint256 goal);
    error GoalNotReached(uint256 raised, uint256 goal);
    error AlreadyDrawn();
    error NothingToRefund(address account);
    error NothingToClaim(address account);
    error NothingToDistribute();
    error NothingToCollect(uint256 pending, uint256 availableAt);

    /// @dev Constructor settings (a struct keeps the constructor's stack small).
    struct Campaign {
        string name;
        string symbol;
        IERC20 credit;
        IFundMarket market;
        bytes32 plantMeterId;
        uint256 pricePerShare;
        uint256 goal;
        uint256 cap;
        uint256 deadline;
        address admin;
        address manager;
    }

    /// @param campaign Share name and symbol, token, market, plant meter, price, goal, cap,
    ///        deadline, first admin and manager (the plant's owner).
    constructor(Campaign memory campaign) ERC20(campaign.name, campaign.symbol) {
        if (
            campaign.pricePerShare == 0 || campaign.goal == 0 || campaign.cap < campaign.goal
                || campaign.deadline <= block.timestamp || campaign.cap / campaign.pricePerShare > type(uint128).max
        ) revert InvalidCampaign();
        credit = campaign.credit;
        market = campaign.market;
        plantMeterId = campaign.plantMeterId;
        pricePerShare = campaign.pricePerShare;
        goal = campaign.goal;
        cap = campaign.cap;
        deadline = campaign.deadline;
        _grantRole(DEFAULT_ADMIN_ROLE, campaign.admin);
        _grantRole(MANAGER_ROLE, campaign.manager);
    }

    /// @notice Shares are whole.
    function decimals() public pure override returns (uint8) {
        return 0;
    }

    // ---------------------------------------------------------------- the campaign

    /// @notice Buy `shares` shares at `pricePerShare` (approve the cost first), before the
    ///         deadline and within the cap.
    function buy(uint256 shares) external nonReentrant {
        _buy(shares);
    }

    /// @notice `buy` with an EIP-2612 permit of the credit signed by the caller.
    function buyWithPermit(uint256 shares, uint256 permitDeadline, uint8 v, bytes32 r, bytes32 s)
        external
        nonReentrant
    {
        // A front-run permit is not an error: the allowance it set is what the purchase needs.
        try IERC20Permit(address(credit)).permit(
            msg.sender, address(this), shares * pricePerShare, permitDeadline, v, r, s
        ) {} catch {}
        _buy(shares);
    }

    function _buy(uint256 shares) private {
        if (shares == 0) revert ZeroShares();
        if (block.timestamp >= deadline) revert CampaignClosed(deadline);
        uint256 cost = shares * pricePerShare;
        if (raised + cost > cap) revert CapExceeded(cost, cap - raised);
        raised += cost;
        _mint(msg.sender, shares);
        emit SharesBought(msg.sender, shares, cost);
        credit.safeTransferFrom(msg.sender, address(this), cost);
    }

    /// @notice After a campaign that missed its goal, take back what the caller's shares cost
    ///         (the shares are burnt).
    function refund() external nonReentrant {
        if (block.timestamp < deadline) revert CampaignOpen(deadline);
        if (raised >= goal) revert CampaignSucceeded(raised, goal);
        uint256 shares = balanceOf(msg.sender);
        if (shares == 0) revert NothingToRefund(msg.sender);
        uint256 amount = shares * pricePerShare;
        raised -= amount;
        _burn(msg.sender, shares);
        emit Refunded(msg.sender, shares, amount);
        credit.safeTransfer(msg.sender, amount);
    }

    /// @notice The plant's owner draws what the campaign raised, once it reached its goal and
    ///         closed (deadline passed or cap reached).
    /// @param to Receiver of the funds (the plant's builder, say).
    function draw(address to) external onlyRole(MANAGER_ROLE) nonReentrant {
        if (drawn) revert AlreadyDrawn();
        if (raised < goal) revert GoalNotReached(raised, goal);
        if (block.timestamp < deadline && raised < cap) revert CampaignOpen(deadline);
        drawn = true;
        emit FundsDrawn(msg.sender, to, raised);
        credit.safeTransfer(to, raised);
    }

    /// @notice Whether the campaign reached its goal and closed: revenue flows from then on.
    function succeeded() public view returns (bool) {
        return raised >= goal && (block.timestamp >= deadline || raised == cap);
    }

    // ---------------------------------------------------------------- revenue

    /// @notice Move the plant's market balance here (anyone may): pays the pending withdrawal
    ///         once due, asks for the balance beyond `reserve`, and distributes what arrived.
    function collect() external nonReentrant {
        if (!succeeded()) revert GoalNotReached(raised, goal);
        (uint256 pending, uint256 availableAt) = market.pendingWithdrawal(plantMeterId);
        uint256 balance = market.balanceOf(plantMeterId);
        uint256 withdrawn;
        if (pending != 0 && block.timestamp >= availableAt && balance >= pending) {
            market.withdraw(plantMeterId, address(this));
            withdrawn = pending;
            balance -= pending;
            pending = 0;
        }
        uint256 requested;
        // A request still waiting is left alone unless the balance fell below it (a lock was
        // taken since): then it is replaced by what is there now.
        if (pending == 0 || balance < pending) {
            requested = balance > reserve ? balance - reserve : 0;
            if (requested != 0 || pending != 0) market.requestWithdrawal(plantMeterId, requested);
        }
        if (withdrawn == 0 && requested == 0) revert NothingToCollect(pending, availableAt);
        emit Collected(withdrawn, requested);
        if (undistributed() != 0) _distribute();
    }

    /// @notice Distribute the credit that arrived beyond what the fund owes (anyone may).
    function distribute() external nonReentrant {
        if (!succeeded()) revert GoalNotReached(raised, goal);
        _distribute();
    }

    /// @notice Credit held beyond the raised funds not yet drawn and the revenue not yet claimed.
    function undistributed() public view returns (uint256) {
        uint256 owed = (drawn ? 0 : raised) + (totalDistributed - totalClaimed);
        uint256 held = credit.balanceOf(address(this));
        return held > owed ? held - owed : 0;
    }

    function _distribute() private {
        uint256 amount = undistributed();
        uint256 shares = totalSupply();
        if (amount == 0 || shares == 0) revert NothingToDistribute();
        uint256 magnified = amount * _MAGNITUDE + _carry;
        _perShare += magnified / shares;
        _carry = magnified % shares;
        totalDistributed += amount;
        emit RevenueDistributed(amount, shares);
    }

    /// @notice Pay the caller the revenue its shares earned so far.
    function claim() external nonReentrant {
        uint256 amount = claimable(msg.sender);
        if (amount == 0) revert NothingToClaim(msg.sender);
        _claimed[msg.sender] += amount;
        totalClaimed += amount;
        emit RevenueClaimed(msg.sender, amount);
        credit.safeTransfer(msg.sender, amount);
    }

    /// @notice Revenue `account` may claim now (smallest units, rounded down).
    function claimable(address account) public view returns (uint256) {
        return earned(account) - _claimed[account];
    }

    /// @notice Revenue `account` earned so far, claimed or not.
    function earned(address account) public view returns (uint256) {
        int256 magnified = int256(_perShare * balanceOf(account)) + _corrections[account];
        return uint256(magnified) / _MAGNITUDE;
    }

    /// @notice Revenue `account` claimed so far.
    function claimed(address account) external view returns (uint256) {
        return _claimed[account];
    }

    // ---------------------------------------------------------------- the plant's owner

    /// @notice Credit to keep in the market for the locks of the plant's sales.
    function setReserve(uint256 amount) external onlyRole(MANAGER_ROLE) {
        reserve = amount;
        emit ReserveSet(amount);
    }

    /// @notice Send on certificates the fund received as the plant meter's owner (to sell or
    ///         retire them elsewhere).
    function releaseCertificates(IERC1155 certificates, address to, uint256[] calldata ids, uint256[] calldata amounts)
        external
        onlyRole(MANAGER_ROLE)
        nonReentrant
    {
        emit CertificatesReleased(address(certificates), to, ids, amounts);
        certificates.safeBatchTransferFrom(address(this), to, ids, amounts, "");
    }

    /// @dev Keeps revenue distributed before a transfer with its sender: the accumulator times
    ///      the moved shares goes from the receiver's correction to the sender's.
    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        int256 moved = int256(_perShare * value);
        if (from != address(0)) _corrections[from] += moved;
        if (to != address(0)) _corrections[to] -= moved;
    }

    /// @inheritdoc AccessControl
    function supportsInterface(bytes4 interfaceId) public view override returns (bool) {
        return super.supportsInterface(interfaceId);
    }
}
