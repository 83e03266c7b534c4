"""Recharges: the saga that credits a redeemed code's membership at the video platform."""
