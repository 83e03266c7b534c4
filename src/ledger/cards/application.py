"""The cards application: each method gets, decides and saves in one atomic step.

Money that must not go negative (a main card's balance) is state of the MainCard aggregate,
and the main card is in the save of every consumption it backs, so two processes spending
the last of a balance at once cannot both append: the loser decides again on fresh state.

Money that moves outside the ledger (a member paying, a withdrawal paid out) goes through a
port keyed by our own id, so a use case repeated with the same id charges or pays once, and a
charge whose recording fails is given back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate

from ledger.applications import LedgerApplication
from ledger.cards.cards import CardPurchase, MainCard
from ledger.cards.consumptions import Consumption, ConsumptionRefund
from ledger.cards.intimate import IntimateCard, limits_of
from ledger.cards.members import Member, check_phone
from ledger.cards.merchants import Activity, Merchant, check_timezone
from ledger.cards.ports import MemberTokens, Payments, Payouts
from ledger.cards.shared import SHARING_PLATFORM_ID, SharedCard, SharingPlatform
from ledger.cards.splits import (
    check_commission,
    check_price,
    check_shared_discount,
    main_card_draw,
    split_shared,
)
from ledger.cards.wallets import Wallet, Withdrawal, wallet_id
from ledger.clock import Clock, utc_now
from ledger.distribution.catalogue import check_name
from ledger.errors import CurrencyMismatch, InvalidAmount, NotFound, NotPermitted, Unavailable
from ledger.money import Money

DEFAULT_SHARE_DEPTH = 1
"""How many times a card the owner shared may be passed on (LEDGER_SHARE_DEPTH, given to the
application as CARDS_SHARE_DEPTH, or SHARE_DEPTH with eventsourcing's name prefix)."""

MAX_USES = 1_000_000

NO_PAYMENTS = "no payment gateway is configured (LEDGER_SANDBOX=true)"
NO_PAYOUTS = "no payout gateway is configured (LEDGER_SANDBOX=true)"
NO_TOKENS = "no member token store is configured"

Card = MainCard | SharedCard | IntimateCard
T = TypeVar("T")
P = TypeVar("P")


class Cards(LedgerApplication, Application[UUID]):
    """Merchants, members, activities, main, shared and intimate cards, consumptions, wallets.

    Built without payments, payouts or member tokens (projection runners, other processes),
    the use cases that need them are refused as unavailable.
    """

    name = "cards"

    def __init__(
        self,
        env: Any = None,
        clock: Clock = utc_now,
        payments: Payments | None = None,
        payouts: Payouts | None = None,
        tokens: MemberTokens | None = None,
    ) -> None:
        super().__init__(env)
        self.clock = clock
        self.payments = payments
        self.payouts = payouts
        self.tokens = tokens
        self.share_depth = int(self.env.get("SHARE_DEPTH", str(DEFAULT_SHARE_DEPTH)))

    # parties and activities

    def register_merchant(self, merchant_id: UUID, name: str, timezone: str) -> Merchant:
        merchant = Merchant(
            id=merchant_id,
            name=check_name(name),
            timezone=check_timezone(timezone),
            key_id=f"mk_{merchant_id.hex}",
        )
        return self._create(merchant)

    def register_member(self, member_id: UUID, name: str, phone: str) -> tuple[Member, str]:
        """A member with a wallet, and their bearer token: shown once, so registering the
        same member again (a rerun after a crash) issues a new one."""
        tokens = needed(self.tokens, NO_TOKENS)
        member = Member(id=member_id, name=check_name(name), phone=check_phone(phone))
        member = self._create(member, Wallet(id=wallet_id(member_id), member_id=member_id))
        return member, tokens.issue(member.id)

    def publish_activity(
        self,
        activity_id: UUID,
        merchant_id: UUID,
        pay: Money,
        bonus: Money | None,
        discount_bp: int,
        shared_cap_bp: int | None = None,
    ) -> Activity:
        bonus = bonus or Money(0, pay.currency)
        Activity.check_terms(pay, bonus, discount_bp, shared_cap_bp)

        def decide() -> Activity:
            merchant = self.merchant(merchant_id)
            activity = Activity(
                id=activity_id,
                merchant_id=merchant.id,
                pay=pay,
                bonus=bonus,
                discount_bp=discount_bp,
                shared_cap_bp=shared_cap_bp,
            )
            merchant.add_activity(activity.id)
            self.save(activity, merchant)
            return activity

        return self._record_once(
            activity_id, decide, lambda: self.activity(activity_id), merchant_id
        )

    # main cards

    def buy_card(self, card_id: UUID, member_id: UUID, activity_id: UUID) -> MainCard:
        """The member pays the activity's `pay` and gets a card holding pay + bonus. The card
        id keys the payment: buying again with it returns the card and charges nothing."""
        payments = needed(self.payments, NO_PAYMENTS)
        if card_id in self.repository:
            return self.main_card(card_id)
        activity = self.activity(activity_id)
        buyer = self.member(member_id)
        receipt = payments.charge(card_id, buyer.id, activity.pay)
        return self._paid_for(
            card_id,
            payments,
            lambda: self.open_card(card_id, buyer.id, activity.id, receipt.reference),
        )

    def open_card(
        self, card_id: UUID, owner_id: UUID, activity_id: UUID, payment_reference: str
    ) -> MainCard:
        """Record a card already paid for under an activity (`pay` was taken as the reference
        says)."""
        activity = self.activity(activity_id)

        def decide() -> MainCard:
            owner = self.member(owner_id)
            card = MainCard(
                id=card_id,
                merchant_id=activity.merchant_id,
                activity_id=activity.id,
                owner_id=owner.id,
                discount_bp=activity.discount_bp,
                balance=activity.pay + activity.bonus,
                shared_cap=activity.shared_cap,
            )
            purchase = CardPurchase.record(
                uuid5(card_id, "purchase"),
                card.id,
                owner.id,
                activity.merchant_id,
                activity.pay,
                activity.bonus,
                payment_reference,
            )
            owner.receive(card.id)
            self.save(purchase, card, owner)
            return card

        return self._record_once(card_id, decide, lambda: self.main_card(card_id), owner_id)

    # shared cards

    def share_card(
        self,
        card_id: UUID,
        owner_id: UUID,
        main_card_id: UUID,
        discount_bp: int,
        commission_bp: int,
        to_member_id: UUID | None,
        expires_at: datetime | None = None,
        cap: Money | None = None,
        max_uses: int | None = None,
    ) -> SharedCard:
        """Send a shared card to a member, or publish it on the sharing platform (no member)."""
        check_commission(commission_bp)
        self._check_terms(expires_at, cap, max_uses)

        def decide() -> SharedCard:
            main = self.main_card_of(owner_id, main_card_id)
            check_shared_discount(discount_bp, main.discount_bp)
            if cap is not None and cap.currency != main.currency:
                raise CurrencyMismatch(f"the card is in {main.currency}")
            card = SharedCard(
                id=card_id,
                main_card_id=main.id,
                merchant_id=main.merchant_id,
                owner_id=main.owner_id,
                discount_bp=discount_bp,
                commission_bp=commission_bp,
                holder_id=to_member_id,
                sharer_id=None,
                depth=0,
                source_id=None,
                expires_at=expires_at.astimezone(UTC) if expires_at else None,
                cap=cap,
                max_uses=max_uses,
            )
            main.add_shared_card(card.id)
            self.save(card, main, *self._deliver(card, owner_id))
            return card

        return self._record_once(card_id, decide, lambda: self.shared_card(card_id), main_card_id)

    def pass_on(
        self, card_id: UUID, holder_id: UUID, shared_card_id: UUID, to_member_id: UUID | None
    ) -> SharedCard:
        """A holder passes their shared card on; they become its sharing user."""

        def decide() -> SharedCard:
            source = self.shared_card_for(holder_id, shared_card_id)
            source.check_holder(holder_id)
            source.check_passable(self.share_depth, self.clock())
            card = source.derive(card_id, to_member_id, holder_id, source.depth + 1)
            main = self.main_card(source.main_card_id)
            main.add_shared_card(card.id)
            self.save(card, main, *self._deliver(card, holder_id))
            return card

        return self._record_once(card_id, decide, lambda: self.shared_card(card_id), shared_card_id)

    def claim(self, card_id: UUID, member_id: UUID, listing_id: UUID) -> SharedCard:
        """A member claims a published card: they get a card of their own on its terms."""

        def decide() -> SharedCard:
            listing = self.shared_card(listing_id)
            if not listing.is_listing:
                raise NotFound(f"no listing {listing_id}")
            if member_id in (listing.owner_id, listing.sharer_id):
                raise NotPermitted("a member does not claim a card they published")
            member = self.member(member_id)
            listing.claim(member.id, self.clock())
            card = listing.derive(card_id, member.id, listing.sharer_id, listing.depth)
            main = self.main_card(listing.main_card_id)
            main.add_shared_card(card.id)
            member.receive(card.id)
            self.save(card, listing, main, member)
            return card

        return self._record_once(card_id, decide, lambda: self.shared_card(card_id), listing_id)

    def listings(self) -> list[SharedCard]:
        """Published cards not yet expired, oldest first."""
        try:
            platform: SharingPlatform = self.repository.get(SHARING_PLATFORM_ID)
        except AggregateNotFoundError:
            return []
        now = self.clock()
        cards = [self.shared_card(card_id) for card_id in platform.listings]
        return [card for card in cards if not card.is_expired(now)]

    def _deliver(self, card: SharedCard, giver_id: UUID) -> list[Aggregate]:
        """The recipient's card list, or the sharing platform's listings: what else changes."""
        if card.holder_id is None:
            platform = self._sharing_platform()
            platform.publish(card, self.clock())
            return [platform]
        if card.holder_id == giver_id:
            raise NotPermitted("a card is shared with someone else")
        recipient = self.member(card.holder_id)
        recipient.receive(card.id)
        return [recipient]

    def _sharing_platform(self) -> SharingPlatform:
        try:
            platform: SharingPlatform = self.repository.get(SHARING_PLATFORM_ID)
        except AggregateNotFoundError:
            platform = SharingPlatform(id=SHARING_PLATFORM_ID)
        return platform

    @staticmethod
    def _check_terms(expires_at: datetime | None, cap: Money | None, max_uses: int | None) -> None:
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidAmount("expires_at needs a time zone")
        if cap is not None:
            cap.require_positive()
        if max_uses is not None and (type(max_uses) is not int or not 1 <= max_uses <= MAX_USES):
            raise InvalidAmount(f"max_uses is 1 to {MAX_USES}")

    # intimate cards

    def offer_intimate(
        self,
        card_id: UUID,
        owner_id: UUID,
        main_card_id: UUID,
        holder_id: UUID,
        monthly_limit: Money,
        per_use_limit: Money | None,
        total_limit: Money | None,
        show_details: bool,
    ) -> IntimateCard:
        limits_of(monthly_limit, per_use_limit, total_limit)

        def decide() -> IntimateCard:
            main = self.main_card_of(owner_id, main_card_id)
            for limit in (monthly_limit, per_use_limit, total_limit):
                if limit is not None and limit.currency != main.currency:
                    raise CurrencyMismatch(f"the card is in {main.currency}")
            if holder_id == owner_id:
                raise NotPermitted("an intimate card is for someone else")
            holder = self.member(holder_id)
            card = IntimateCard(
                id=card_id,
                main_card_id=main.id,
                merchant_id=main.merchant_id,
                owner_id=main.owner_id,
                holder_id=holder.id,
                monthly_limit=monthly_limit,
                per_use_limit=per_use_limit,
                total_limit=total_limit,
                show_details=show_details,
                offered_at=self.clock(),
            )
            main.add_intimate_card(card.id)
            holder.receive(card.id)
            self.save(card, main, holder)
            return card

        return self._record_once(card_id, decide, lambda: self.intimate_card(card_id), main_card_id)

    def accept_intimate(self, card_id: UUID, member_id: UUID) -> IntimateCard:
        return self._change_intimate(
            card_id, member_id, lambda card: card.accept(member_id, self.clock())
        )

    def freeze(self, card_id: UUID, owner_id: UUID) -> IntimateCard:
        return self._change_intimate(card_id, owner_id, IntimateCard.freeze, by_owner=True)

    def unfreeze(self, card_id: UUID, owner_id: UUID) -> IntimateCard:
        return self._change_intimate(card_id, owner_id, IntimateCard.unfreeze, by_owner=True)

    def revoke(self, card_id: UUID, owner_id: UUID) -> IntimateCard:
        return self._change_intimate(card_id, owner_id, IntimateCard.revoke, by_owner=True)

    def _change_intimate(
        self,
        card_id: UUID,
        member_id: UUID,
        change: Callable[[IntimateCard], None],
        by_owner: bool = False,
    ) -> IntimateCard:
        def changed(card: IntimateCard) -> None:
            if by_owner and card.owner_id != member_id:
                raise NotPermitted("only the card's owner may do this")
            change(card)

        return self._change(card_id, lambda i: self.intimate_card_for(member_id, i), changed)

    # consumption and refunds

    def consume(
        self, consumption_id: UUID, merchant_id: UUID, card_id: UUID, price: Money
    ) -> Consumption:
        """At the merchant's till: a main or intimate card draws round(P x d_m) from the main
        card; a shared card's holder pays round(P x d_s) through the payments port, keyed by
        the consumption id, and it is split as stored. A consumption id already recorded
        returns what was recorded, charging nothing again."""
        recorded = self.recorded_consumption(merchant_id, consumption_id)
        if recorded is not None:
            return recorded
        card = self.card_at(merchant_id, card_id)
        payer = card.holder_id if isinstance(card, SharedCard) else None
        if payer is None:
            return self._record_consumption(consumption_id, merchant_id, card_id, price)
        payments = needed(self.payments, NO_PAYMENTS)
        quote, _ = self._decide_consumption(uuid4(), merchant_id, card_id, price)
        payments.charge(consumption_id, payer, quote.consumer_pays)
        return self._paid_for(
            consumption_id,
            payments,
            lambda: self._record_consumption(consumption_id, merchant_id, card_id, price),
        )

    def _record_consumption(
        self, consumption_id: UUID, merchant_id: UUID, card_id: UUID, price: Money
    ) -> Consumption:
        card = self.card_at(merchant_id, card_id)
        main_id = card.id if isinstance(card, MainCard) else card.main_card_id

        def decide() -> Consumption:
            consumption, changed = self._decide_consumption(
                consumption_id, merchant_id, card_id, price
            )
            self.save(consumption, *changed)
            return consumption

        def replay() -> Consumption:
            return self.consumption_at(merchant_id, consumption_id)

        return self._record_once(consumption_id, decide, replay, card_id, main_id)

    def _decide_consumption(
        self, consumption_id: UUID, merchant_id: UUID, card_id: UUID, price: Money
    ) -> tuple[Consumption, list[Aggregate]]:
        check_price(price.amount)
        card = self.card_at(merchant_id, card_id)
        main = card if isinstance(card, MainCard) else self.main_card(card.main_card_id)
        if price.currency != main.currency:
            raise CurrencyMismatch(f"the card is in {main.currency}")
        now = self.clock()
        month = now.astimezone(self.merchant(merchant_id).zone).strftime("%Y-%m")
        if isinstance(card, SharedCard):
            return self._shared_consumption(consumption_id, card, main, price, month)
        drawn = main_card_draw(price.amount, main.discount_bp)
        if isinstance(card, IntimateCard):
            card.draw(consumption_id, drawn, month, now)
        main.draw(consumption_id, drawn, card.id)
        kind = "main" if card is main else "intimate"
        consumption = Consumption.from_balance(
            consumption_id,
            main.merchant_id,
            card.id,
            kind,
            main.id,
            main.owner_id,
            price,
            drawn,
            month,
        )
        return consumption, [main] if card is main else [card, main]

    def _shared_consumption(
        self, consumption_id: UUID, card: SharedCard, main: MainCard, price: Money, month: str
    ) -> tuple[Consumption, list[Aggregate]]:
        card.check_usable(self.clock())
        split = split_shared(
            price.amount,
            main.discount_bp,
            card.discount_bp,
            card.commission_bp,
            has_sharer=card.sharer_id is not None,
        )
        card.use(consumption_id, split.consumer_pays)
        main.count_shared(consumption_id, price.amount, card.id)
        consumption = Consumption.paid_by_consumer(
            consumption_id,
            main.merchant_id,
            card.id,
            main.id,
            main.owner_id,
            card.sharer_id,
            price,
            split,
            month,
        )
        wallets = self._wallets(member for member, _ in consumption.wallet_lines())
        for member, amount in consumption.wallet_lines():
            wallets[member].credit(consumption.id, Money(amount, price.currency))
        return consumption, [card, main, *wallets.values()]

    def _paid_for(self, payment_id: UUID, payments: Payments, record: Callable[[], T]) -> T:
        """Record what was just paid for. If that fails and nothing was recorded under the
        payment's id, the payment is given back before the failure goes on; if the store
        cannot even say, it is kept, and a retry with the same id records it."""
        try:
            return record()
        except Exception:
            if payment_id not in self.repository:
                payments.refund(payment_id)
            raise

    def refund_consumption(
        self, refund_id: UUID, merchant_id: UUID, consumption_id: UUID
    ) -> ConsumptionRefund:
        """Reverse the consumption, then give back what the consumer paid, keyed by the
        consumption id: a refund repeated with its id (after a lost answer) gives it back once."""
        paid = self.consumption_at(merchant_id, consumption_id).consumer_pays.amount > 0
        payments = needed(self.payments, NO_PAYMENTS) if paid else None
        refund = self._reverse(refund_id, merchant_id, consumption_id)
        if payments is not None:
            payments.refund(consumption_id)
        return refund

    def _reverse(
        self, refund_id: UUID, merchant_id: UUID, consumption_id: UUID
    ) -> ConsumptionRefund:
        """Reverse a consumption's stored lines exactly; commission already withdrawn leaves
        the wallet negative."""
        recorded = self.consumption_at(merchant_id, consumption_id)

        def decide() -> ConsumptionRefund:
            consumption = self.consumption_at(merchant_id, consumption_id)
            consumption.mark_refunded(refund_id)
            refund = ConsumptionRefund.reversing(refund_id, consumption)
            main = self.main_card(consumption.main_card_id)
            changed: list[Aggregate] = [consumption, main]
            debited = consumption.card_debited.amount
            if consumption.card_kind == "main":
                main.restore(consumption.id, debited)
            elif consumption.card_kind == "intimate":
                main.restore(consumption.id, debited)
                card = self.intimate_card(consumption.card_id)
                card.restore(consumption.id, debited, consumption.month)
                changed.append(card)
            else:
                main.uncount_shared(consumption.id, consumption.price.amount)
                shared = self.shared_card(consumption.card_id)
                shared.unuse(consumption.id, consumption.consumer_pays.amount)
                lines = consumption.wallet_lines()
                wallets = self._wallets(member for member, _ in lines)
                for member, amount in lines:
                    wallets[member].debit(refund_id, Money(amount, consumption.price.currency))
                changed += [shared, *wallets.values()]
            self.save(refund, *changed)
            return refund

        def replay() -> ConsumptionRefund:
            return self._get(refund_id, ConsumptionRefund, "refund")

        return self._record_once(refund_id, decide, replay, consumption_id, recorded.main_card_id)

    def _wallets(self, members: Iterable[UUID]) -> dict[UUID, Wallet]:
        return {member: self.wallet(member) for member in dict.fromkeys(members)}

    # withdrawals

    def withdraw(self, withdrawal_id: UUID, member_id: UUID, amount: Money) -> Withdrawal:
        """Hold the amount, pay it out keyed by the withdrawal id, then post it (paid) or
        release the hold (refused). A payout whose answer is lost leaves the withdrawal
        pending; withdrawing again with its id asks the payout again, so it is paid once."""
        needed(self.payouts, NO_PAYOUTS)
        withdrawal = self.request_withdrawal(withdrawal_id, member_id, amount)
        return self.pay_out(withdrawal)

    def retry_withdrawal(self, withdrawal_id: UUID) -> Withdrawal:
        """A withdrawal left pending (its process died between hold and payout, or the
        payout's answer was lost): ask the payout again with the same id, which pays it once,
        and finish it. A finished one is left as it is and the payout is not asked."""
        needed(self.payouts, NO_PAYOUTS)
        return self.pay_out(self.withdrawal(withdrawal_id))

    def pay_out(self, withdrawal: Withdrawal) -> Withdrawal:
        if withdrawal.status != "pending":
            return withdrawal
        payouts = needed(self.payouts, NO_PAYOUTS)
        result = payouts.pay_out(withdrawal.id, withdrawal.member_id, withdrawal.amount)
        detail = result.reference if result.paid else result.reason
        return self.finish_withdrawal(withdrawal.id, result.paid, detail)

    def request_withdrawal(self, withdrawal_id: UUID, member_id: UUID, amount: Money) -> Withdrawal:
        """Hold the amount on the member's wallet while the payout is in flight."""
        amount.require_positive()

        def decide() -> Withdrawal:
            wallet = self.wallet(member_id)
            wallet.hold(withdrawal_id, amount)
            withdrawal = Withdrawal.request(withdrawal_id, member_id, amount)
            self.save(withdrawal, wallet)
            return withdrawal

        def replay() -> Withdrawal:
            return self.withdrawal_of(member_id, withdrawal_id)

        return self._record_once(withdrawal_id, decide, replay, wallet_id(member_id))

    def finish_withdrawal(self, withdrawal_id: UUID, paid: bool, detail: str) -> Withdrawal:
        """Post the payout (paid) or release the hold (failed); a finished one stays as it is."""

        def decide() -> Withdrawal:
            withdrawal = self.withdrawal(withdrawal_id)
            if withdrawal.status != "pending":
                return withdrawal
            wallet = self.wallet(withdrawal.member_id)
            if paid:
                withdrawal.pay(detail)
                wallet.pay_out(withdrawal.id, withdrawal.amount)
            else:
                withdrawal.fail(detail)
                wallet.release(withdrawal.id, withdrawal.amount)
            self.save(withdrawal, wallet)
            return withdrawal

        return self.commands.run(decide, withdrawal_id)

    # queries

    def merchant(self, merchant_id: UUID) -> Merchant:
        return self._get(merchant_id, Merchant, "merchant")

    def member(self, member_id: UUID) -> Member:
        return self._get(member_id, Member, "member")

    def activity(self, activity_id: UUID) -> Activity:
        return self._get(activity_id, Activity, "activity")

    def main_card(self, card_id: UUID) -> MainCard:
        return self._get(card_id, MainCard, "card")

    def shared_card(self, card_id: UUID) -> SharedCard:
        return self._get(card_id, SharedCard, "card")

    def intimate_card(self, card_id: UUID) -> IntimateCard:
        return self._get(card_id, IntimateCard, "card")

    def card(self, card_id: UUID) -> Card:
        return self._get(card_id, (MainCard, SharedCard, IntimateCard), "card")

    def consumption(self, consumption_id: UUID) -> Consumption:
        return self._get(consumption_id, Consumption, "consumption")

    def withdrawal(self, withdrawal_id: UUID) -> Withdrawal:
        return self._get(withdrawal_id, Withdrawal, "withdrawal")

    def wallet(self, member_id: UUID) -> Wallet:
        return self._get(wallet_id(member_id), Wallet, "wallet")

    def consumptions_seen_by(self, member_id: UUID, card: Card) -> list[UUID]:
        """A card's consumptions as the member may see them: an intimate card shows its own to
        the owner only when it was offered so (its totals always)."""
        if isinstance(card, MainCard):
            hidden = {i for i in card.intimate_card_ids if not self.intimate_card(i).show_details}
            return [consumption for consumption, used in card.consumptions if used not in hidden]
        if isinstance(card, SharedCard) or member_id == card.holder_id or card.show_details:
            return card.consumption_ids
        return []

    def card_for(self, member_id: UUID, card_id: UUID) -> Card:
        """A card as a member may see it: their own, or one they hold. Others do not exist."""
        card = self.card(card_id)
        visible = (
            card.owner_id == member_id
            if isinstance(card, MainCard)
            else card.is_visible_to(member_id)
        )
        if not visible:
            raise NotFound(f"card {card_id} not found")
        return card

    def main_card_of(self, owner_id: UUID, card_id: UUID) -> MainCard:
        card = self.card_for(owner_id, card_id)
        if not isinstance(card, MainCard):
            raise NotFound(f"main card {card_id} not found")
        return card

    def shared_card_for(self, member_id: UUID, card_id: UUID) -> SharedCard:
        card = self.card_for(member_id, card_id)
        if not isinstance(card, SharedCard):
            raise NotFound(f"shared card {card_id} not found")
        return card

    def intimate_card_for(self, member_id: UUID, card_id: UUID) -> IntimateCard:
        card = self.card_for(member_id, card_id)
        if not isinstance(card, IntimateCard):
            raise NotFound(f"intimate card {card_id} not found")
        return card

    def card_at(self, merchant_id: UUID, card_id: UUID) -> Card:
        """A card presented at a merchant's till: only that merchant's cards exist there."""
        card = self.card(card_id)
        if card.merchant_id != merchant_id:
            raise NotFound(f"card {card_id} not found")
        return card

    def consumption_at(self, merchant_id: UUID, consumption_id: UUID) -> Consumption:
        consumption = self.consumption(consumption_id)
        if consumption.merchant_id != merchant_id:
            raise NotFound(f"consumption {consumption_id} not found")
        return consumption

    def recorded_consumption(self, merchant_id: UUID, consumption_id: UUID) -> Consumption | None:
        """The consumption this command already recorded, if it did."""
        if consumption_id not in self.repository:
            return None
        return self.consumption_at(merchant_id, consumption_id)

    def withdrawal_of(self, member_id: UUID, withdrawal_id: UUID) -> Withdrawal:
        withdrawal = self.withdrawal(withdrawal_id)
        if withdrawal.member_id != member_id:
            raise NotFound(f"withdrawal {withdrawal_id} not found")
        return withdrawal


def needed(port: P | None, missing: str) -> P:
    """A port the use case cannot do without."""
    if port is None:
        raise Unavailable(missing)
    return port
