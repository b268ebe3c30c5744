// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Multicall} from "@openzeppelin/contracts/utils/Multicall.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {IDepositCollector} from "./interfaces/IDepositCollector.sol";

/// @title BatchSettlement
/// @notice Payment-channel escrow of the x402 `batch-settlement` scheme on EVM
///         (specs/schemes/batch-settlement/scheme_batch_settlement_evm.md), call-compatible with the
///         reference `x402BatchSettlement` at 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003.
///
///         A payer funds a channel once; each request carries a voucher, the payer's signature over a
///         cumulative ceiling. The receiver side records vouchers of many channels in one `claim`, and
///         `settle` later pays everything claimed for a (receiver, token) in one transfer. The payer
///         leaves cooperatively (`refund`) or alone after the channel's withdraw delay.
///
/// @dev Accounting, per channel: `balance` is what was deposited minus what went back to the payer;
///      `totalClaimed` is the part the receiver has earned, and it never leaves through a payer path
///      (refunds and withdrawals draw only on `balance - totalClaimed`). Claimed tokens stay in the
///      escrow until `settle`, which tracks them per (receiver, token).
///
///      Nothing is set in a constructor but the EIP-712 name and version, and OpenZeppelin's EIP712
///      rebuilds its domain separator whenever `address(this)` or the chain differ from the ones it
///      cached: the runtime code works unchanged when placed at another address (`anvil_setCode`).
///      The guard is transient (EIP-1153), so it too needs no initialised storage.
contract BatchSettlement is EIP712, Multicall, ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    /// @notice A channel's immutable terms; its EIP-712 hash is the channel id.
    /// @dev `payerAuthorizer` is an EOA that signs vouchers for the payer, or zero to have the payer sign
    ///      (ECDSA or ERC-1271). `receiverAuthorizer` signs claim batches and refunds for the receiver.
    struct ChannelConfig {
        address payer;
        address payerAuthorizer;
        address receiver;
        address receiverAuthorizer;
        address token;
        uint40 withdrawDelay;
        bytes32 salt;
    }

    struct ChannelState {
        uint128 balance;
        uint128 totalClaimed;
    }

    /// @dev `initiatedAt` is zero when no withdrawal is pending.
    struct WithdrawalState {
        uint128 amount;
        uint40 initiatedAt;
    }

    struct ReceiverState {
        uint128 totalClaimed;
        uint128 totalSettled;
    }

    /// @notice What the payer signs, with the full config in place of the channel id it hashes to.
    struct Voucher {
        ChannelConfig channel;
        uint128 maxClaimableAmount;
    }

    /// @notice One row of a claim: a signed voucher and the cumulative total the receiver takes under it
    ///         (at most the voucher's ceiling). A row at or below the recorded total changes nothing.
    struct VoucherClaim {
        Voucher voucher;
        bytes signature;
        uint128 totalClaimed;
    }

    uint40 public constant MIN_WITHDRAW_DELAY = 15 minutes;
    uint40 public constant MAX_WITHDRAW_DELAY = 30 days;

    bytes32 public constant CHANNEL_CONFIG_TYPEHASH = keccak256(
        "ChannelConfig(address payer,address payerAuthorizer,address receiver,address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
    );
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(bytes32 channelId,uint128 maxClaimableAmount)");
    bytes32 public constant REFUND_TYPEHASH = keccak256("Refund(bytes32 channelId,uint256 nonce,uint128 amount)");
    bytes32 public constant CLAIM_ENTRY_TYPEHASH =
        keccak256("ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)");
    bytes32 public constant CLAIM_BATCH_TYPEHASH = keccak256(
        "ClaimBatch(ClaimEntry[] claims)ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
    );

    mapping(bytes32 channelId => ChannelState) public channels;
    /// @notice The nonce the next `refundWithSignature` of a channel must carry; every refund advances it.
    mapping(bytes32 channelId => uint256) public refundNonce;
    mapping(bytes32 channelId => WithdrawalState) public pendingWithdrawals;
    mapping(address receiver => mapping(address token => ReceiverState)) public receivers;

    event ChannelCreated(bytes32 indexed channelId, ChannelConfig config);
    event ChannelClosed(bytes32 indexed channelId, ChannelConfig config);
    event Deposited(bytes32 indexed channelId, address indexed sender, uint128 amount, uint128 newBalance);
    event Claimed(bytes32 indexed channelId, address indexed sender, uint128 claimAmount, uint128 newTotalClaimed);
    event Settled(address indexed receiver, address indexed token, address indexed sender, uint128 amount);
    event Refunded(bytes32 indexed channelId, address indexed sender, uint128 amount);
    event WithdrawInitiated(bytes32 indexed channelId, uint128 amount, uint40 finalizeAfter);
    event WithdrawFinalized(bytes32 indexed channelId, address indexed sender, uint128 amount);

    error InvalidChannel();
    error ZeroDeposit();
    error DepositOverflow();
    error InvalidSignature();
    error NotReceiverAuthorizer();
    error NotAuthorizedToClaim();
    error NotAuthorizedToRefund();
    error NotAuthorizedToWithdraw();
    error ClaimExceedsCeiling();
    error ClaimExceedsBalance();
    error WithdrawalAlreadyPending();
    error WithdrawalNotPending();
    error NotAuthorizedToFinalizeWithdraw();
    error WithdrawDelayNotElapsed();
    error NothingToWithdraw();
    error WithdrawAmountExceedsAvailable();
    error WithdrawDelayOutOfRange();
    error EmptyBatch();
    error DepositCollectionFailed();
    error InvalidCollector();
    error InvalidRefundNonce();
    error ZeroRefund();

    constructor() EIP712("x402 Batch Settlement", "1") {}

    // Deposit

    /// @notice Adds `amount` to the channel of `config`, pulled from the payer by `collector`.
    /// @dev Anyone may call: the collector's own authorization (an EIP-3009 signature, a Permit2 witness)
    ///      is what the payer signed, and it binds the channel id. The balance check after `collect`
    ///      makes a lying or fee-charging collector fail the deposit rather than credit unbacked funds.
    function deposit(ChannelConfig calldata config, uint128 amount, address collector, bytes calldata collectorData)
        external
        nonReentrant
    {
        if (
            config.payer == address(0) || config.receiver == address(0) || config.receiverAuthorizer == address(0)
                || config.token == address(0)
        ) revert InvalidChannel();
        if (config.withdrawDelay < MIN_WITHDRAW_DELAY || config.withdrawDelay > MAX_WITHDRAW_DELAY) {
            revert WithdrawDelayOutOfRange();
        }
        if (amount == 0) revert ZeroDeposit();
        if (collector == address(0)) revert InvalidCollector();

        bytes32 channelId = getChannelId(config);
        ChannelState storage channel = channels[channelId];
        uint128 before = channel.balance;
        if (amount > type(uint128).max - before) revert DepositOverflow();
        channel.balance = before + amount;

        IERC20 token = IERC20(config.token);
        uint256 held = token.balanceOf(address(this));
        IDepositCollector(collector).collect(config.payer, config.token, amount, channelId, collectorData);
        if (token.balanceOf(address(this)) != held + amount) revert DepositCollectionFailed();

        // `totalClaimed <= balance` always holds, so an empty balance means a fresh (or drained) channel.
        if (before == 0) emit ChannelCreated(channelId, config);
        emit Deposited(channelId, msg.sender, amount, before + amount);
    }

    // Claim and settle

    /// @notice Records voucher claims of channels whose receiver or receiver authorizer is the caller.
    function claim(VoucherClaim[] calldata voucherClaims) external nonReentrant {
        if (voucherClaims.length == 0) revert EmptyBatch();
        for (uint256 i; i < voucherClaims.length; ++i) {
            ChannelConfig calldata config = voucherClaims[i].voucher.channel;
            if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) revert NotAuthorizedToClaim();
            _claim(voucherClaims[i], getChannelId(config));
        }
    }

    /// @notice Records voucher claims that one receiver authorizer signed as a `ClaimBatch`; anyone may relay.
    function claimWithSignature(VoucherClaim[] calldata voucherClaims, bytes calldata authorizerSignature)
        external
        nonReentrant
    {
        if (voucherClaims.length == 0) revert EmptyBatch();
        address authorizer = voucherClaims[0].voucher.channel.receiverAuthorizer;
        for (uint256 i = 1; i < voucherClaims.length; ++i) {
            if (voucherClaims[i].voucher.channel.receiverAuthorizer != authorizer) revert NotReceiverAuthorizer();
        }
        (bytes32 digest, bytes32[] memory channelIds) = _claimBatchDigest(voucherClaims);
        if (!SignatureChecker.isValidSignatureNow(authorizer, digest, authorizerSignature)) revert InvalidSignature();
        for (uint256 i; i < voucherClaims.length; ++i) {
            _claim(voucherClaims[i], channelIds[i]);
        }
    }

    /// @notice Pays `receiver` everything claimed for it in `token` and not yet paid. Anyone may call.
    function settle(address receiver, address token) external nonReentrant {
        ReceiverState storage state = receivers[receiver][token];
        uint128 amount = state.totalClaimed - state.totalSettled;
        if (amount == 0) return;
        state.totalSettled = state.totalClaimed;
        IERC20(token).safeTransfer(receiver, amount);
        emit Settled(receiver, token, msg.sender, amount);
    }

    // Withdrawal by the payer

    /// @notice Announces that the payer takes back `amount` of unclaimed escrow after the withdraw delay.
    /// @dev Only claims recorded on chain count against `amount`: the receiver must claim its vouchers
    ///      before `finalizeWithdraw`, which pays out whatever is unclaimed then, up to `amount`.
    function initiateWithdraw(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) revert NotAuthorizedToWithdraw();
        if (amount == 0) revert NothingToWithdraw();
        bytes32 channelId = getChannelId(config);
        WithdrawalState storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) revert WithdrawalAlreadyPending();
        ChannelState storage channel = channels[channelId];
        if (amount > channel.balance - channel.totalClaimed) revert WithdrawAmountExceedsAvailable();

        pending.amount = amount;
        pending.initiatedAt = uint40(block.timestamp);
        emit WithdrawInitiated(channelId, amount, uint40(block.timestamp) + config.withdrawDelay);
    }

    /// @notice Pays the payer its pending withdrawal, capped at what is still unclaimed, once the delay passed.
    function finalizeWithdraw(ChannelConfig calldata config) external nonReentrant {
        if (msg.sender != config.payer && msg.sender != config.payerAuthorizer) {
            revert NotAuthorizedToFinalizeWithdraw();
        }
        bytes32 channelId = getChannelId(config);
        WithdrawalState memory pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt == 0) revert WithdrawalNotPending();
        if (block.timestamp < uint256(pending.initiatedAt) + config.withdrawDelay) revert WithdrawDelayNotElapsed();

        delete pendingWithdrawals[channelId];
        ChannelState storage channel = channels[channelId];
        uint128 amount = _min(pending.amount, channel.balance - channel.totalClaimed);
        channel.balance -= amount;
        emit WithdrawFinalized(channelId, msg.sender, amount);
        if (amount == 0) return;
        if (channel.balance == 0) emit ChannelClosed(channelId, config);
        IERC20(config.token).safeTransfer(config.payer, amount);
    }

    // Cooperative refund

    /// @notice The receiver side returns up to `amount` of unclaimed escrow to the payer.
    function refund(ChannelConfig calldata config, uint128 amount) external nonReentrant {
        if (msg.sender != config.receiver && msg.sender != config.receiverAuthorizer) revert NotAuthorizedToRefund();
        _refund(config, getChannelId(config), amount);
    }

    /// @notice Like `refund`, authorized by the receiver authorizer's `Refund` signature at the channel's
    ///         current `refundNonce`; anyone may relay.
    function refundWithSignature(
        ChannelConfig calldata config,
        uint128 amount,
        uint256 nonce,
        bytes calldata receiverAuthorizerSignature
    ) external nonReentrant {
        bytes32 channelId = getChannelId(config);
        if (nonce != refundNonce[channelId]) revert InvalidRefundNonce();
        bytes32 digest = getRefundDigest(channelId, nonce, amount);
        if (!SignatureChecker.isValidSignatureNow(config.receiverAuthorizer, digest, receiverAuthorizerSignature)) {
            revert InvalidSignature();
        }
        _refund(config, channelId, amount);
    }

    // Views

    /// @notice The channel id: the EIP-712 hash of `config` under this contract's domain, so the same
    ///         terms name different channels on different chains or deployments.
    function getChannelId(ChannelConfig calldata config) public view returns (bytes32) {
        // Every member is a static type, so `abi.encode` of the struct is its EIP-712 `encodeData`.
        return _hashTypedDataV4(keccak256(abi.encode(CHANNEL_CONFIG_TYPEHASH, config)));
    }

    function getVoucherDigest(bytes32 channelId, uint128 maxClaimableAmount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(VOUCHER_TYPEHASH, channelId, maxClaimableAmount)));
    }

    function getRefundDigest(bytes32 channelId, uint256 nonce, uint128 amount) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REFUND_TYPEHASH, channelId, nonce, amount)));
    }

    /// @notice The digest a receiver authorizer signs for `claimWithSignature` (EIP-712 `ClaimBatch`).
    function getClaimBatchDigest(VoucherClaim[] calldata voucherClaims) public view returns (bytes32) {
        (bytes32 digest,) = _claimBatchDigest(voucherClaims);
        return digest;
    }

    // Internals

    function _claimBatchDigest(VoucherClaim[] calldata voucherClaims)
        private
        view
        returns (bytes32 digest, bytes32[] memory channelIds)
    {
        channelIds = new bytes32[](voucherClaims.length);
        bytes32[] memory entries = new bytes32[](voucherClaims.length);
        for (uint256 i; i < voucherClaims.length; ++i) {
            VoucherClaim calldata row = voucherClaims[i];
            channelIds[i] = getChannelId(row.voucher.channel);
            entries[i] = keccak256(
                abi.encode(CLAIM_ENTRY_TYPEHASH, channelIds[i], row.voucher.maxClaimableAmount, row.totalClaimed)
            );
        }
        // EIP-712 hashes an array as the keccak of its members' struct hashes, concatenated.
        digest = _hashTypedDataV4(keccak256(abi.encode(CLAIM_BATCH_TYPEHASH, keccak256(abi.encodePacked(entries)))));
    }

    function _claim(VoucherClaim calldata row, bytes32 channelId) private {
        ChannelState storage channel = channels[channelId];
        uint128 claimed = channel.totalClaimed;
        uint128 target = row.totalClaimed;
        // Cumulative totals make a replayed or superseded row a no-op instead of a failed batch.
        if (target <= claimed) return;
        if (target > row.voucher.maxClaimableAmount) revert ClaimExceedsCeiling();
        if (target > channel.balance) revert ClaimExceedsBalance();
        _checkVoucher(row.voucher, channelId, row.signature);

        uint128 amount = target - claimed;
        channel.totalClaimed = target;
        receivers[row.voucher.channel.receiver][row.voucher.channel.token].totalClaimed += amount;
        emit Claimed(channelId, msg.sender, amount, target);
    }

    function _checkVoucher(Voucher calldata voucher, bytes32 channelId, bytes calldata signature) private view {
        bytes32 digest = getVoucherDigest(channelId, voucher.maxClaimableAmount);
        address payerAuthorizer = voucher.channel.payerAuthorizer;
        bool valid;
        if (payerAuthorizer != address(0)) {
            // A committed authorizer key is ECDSA only, so vouchers verify off chain without an RPC call.
            (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecover(digest, signature);
            valid = error == ECDSA.RecoverError.NoError && signer == payerAuthorizer;
        } else {
            valid = SignatureChecker.isValidSignatureNow(voucher.channel.payer, digest, signature);
        }
        if (!valid) revert InvalidSignature();
    }

    /// @dev The nonce advances even when nothing is left to refund, as the reference does: a refund the
    ///      receiver side signed is spent once any refund of the channel went through.
    function _refund(ChannelConfig calldata config, bytes32 channelId, uint128 amount) private {
        if (amount == 0) revert ZeroRefund();
        unchecked {
            ++refundNonce[channelId];
        }
        ChannelState storage channel = channels[channelId];
        uint128 refunded = _min(amount, channel.balance - channel.totalClaimed);
        if (refunded == 0) return;
        channel.balance -= refunded;

        // What the payer got back cooperatively no longer needs to wait for the withdraw delay.
        WithdrawalState storage pending = pendingWithdrawals[channelId];
        if (pending.initiatedAt != 0) {
            if (refunded >= pending.amount) delete pendingWithdrawals[channelId];
            else pending.amount -= refunded;
        }

        emit Refunded(channelId, msg.sender, refunded);
        if (channel.balance == 0) emit ChannelClosed(channelId, config);
        IERC20(config.token).safeTransfer(config.payer, refunded);
    }

    function _min(uint128 a, uint128 b) private pure returns (uint128) {
        return a < b ? a : b;
    }
}
