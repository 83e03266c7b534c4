"""Who acts in a member-card call: the merchant or member the caller is."""

from __future__ import annotations

from uuid import UUID

from api.auth import require
from api.principals import Principal, Role


def acting(principal: Principal, role: Role) -> UUID:
    """The member or merchant making the call; any other caller is forbidden."""
    require(principal, role)
    assert principal.subject is not None
    return principal.subject
