"""A request and its idempotent call hold each other (the call its request, the request's state
the call) only while an exception handler may still need the call: once the command ran, or
the handler has given the claim up, the request's objects are freed by reference counting.
Left to the cyclic garbage collector, every request's objects (about 60) were collected in
pauses of 20-60 ms of the API process (topology benchmark, 2026-12-03)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import weakref
from collections.abc import Iterator
from typing import Any

from starlette.requests import Request

from api.idempotency import IdempotentCall
from api.principals import Principal
from api.problems import give_up_unran_claim


class Connection:
    def execute(self, *_: Any) -> Connection:
        return self


class Pool:
    @contextlib.contextmanager
    def connection(self) -> Iterator[Connection]:
        yield Connection()


@contextlib.contextmanager
def no_cyclic_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def a_call() -> tuple[Request, IdempotentCall]:
    scope = {"type": "http", "method": "POST", "path": "/v1/recharges", "headers": []}
    request = Request(scope)
    call = IdempotentCall(Pool(), request, Principal("channel", "c"), "key", b"digest")
    call.claimed = True
    request.state.idempotent_call = call
    return request, call


def test_a_call_that_ran_is_freed_with_its_request_without_the_collector() -> None:
    with no_cyclic_collection():
        request, call = a_call()
        reply = call.run(lambda _: (202, {"status": "pending"}))
        assert reply.status_code == 202
        gone = weakref.ref(call), weakref.ref(request)
        del request, call
        assert [ref() for ref in gone] == [None, None]


def test_a_refused_call_is_freed_once_the_handler_has_looked_at_it() -> None:
    with no_cyclic_collection():
        request, call = a_call()
        call.claimed = False  # nothing to give up: the handler only lets go of it
        asyncio.run(give_up_unran_claim(request))
        gone = weakref.ref(call), weakref.ref(request)
        del request, call
        assert [ref() for ref in gone] == [None, None]
