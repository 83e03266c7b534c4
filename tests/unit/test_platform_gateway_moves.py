"""A platform's partner API address moves (the demo follows the sandbox platform `ledger serve`
actually started): recorded once when it differs, nothing when it is the same, the same
platform loading the demo again keeps its registration."""

from __future__ import annotations

from uuid import uuid4

import pytest

from ledger.distribution.application import Distribution
from ledger.distribution.catalogue import Platform
from ledger.errors import NotFound


def events_of(app: Distribution, platform_id: object) -> list[type]:
    return [type(e) for e in app.repository.event_store.get(platform_id)]


def test_a_gateway_moves_once_and_not_to_where_it_is() -> None:
    app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
    platform_id = uuid4()
    app.register_platform(platform_id, "iQiyi", "http://127.0.0.1:8100")

    same = app.point_platform_gateway(platform_id, "http://127.0.0.1:8100")
    assert same.gateway_url == "http://127.0.0.1:8100"
    assert events_of(app, platform_id) == [Platform.Registered], "nothing recorded"

    moved = app.point_platform_gateway(platform_id, "http://127.0.0.1:8101")
    again = app.point_platform_gateway(platform_id, "http://127.0.0.1:8101")
    assert moved.gateway_url == again.gateway_url == "http://127.0.0.1:8101"
    assert app.platform(platform_id).gateway_url == "http://127.0.0.1:8101"
    assert events_of(app, platform_id) == [Platform.Registered, Platform.GatewayMoved]

    registered_again = app.register_platform(platform_id, "iQiyi", "http://127.0.0.1:8100")
    assert registered_again.gateway_url == "http://127.0.0.1:8101", "registering is idempotent"


def test_an_unknown_platform_is_not_found() -> None:
    app = Distribution(env={"CODE_HASH_KEY": "unit-test-code-key"})
    with pytest.raises(NotFound):
        app.point_platform_gateway(uuid4(), "http://127.0.0.1:8101")
