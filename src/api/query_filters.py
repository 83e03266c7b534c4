"""Lists answer only with the filters they apply: a query parameter a list does not declare
is refused (422 `validation_failed`, naming it and the parameters the list takes) instead of
being ignored, so `?name=` on a list without that filter cannot pass for a filtered answer."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.problems import Problem

DECLARED: dict[int, frozenset[str]] = {}


def declared(route: Any) -> frozenset[str]:
    """The query parameters a route reads, its dependencies' included (kept per route)."""
    key = id(route)
    if key not in DECLARED:
        names: set[str] = set()
        pending = [route.dependant]
        while pending:
            dependant = pending.pop()
            names |= {param.alias for param in dependant.query_params}
            pending += dependant.dependencies
        DECLARED[key] = frozenset(names)
    return DECLARED[key]


def declared_filters_only(request: Request) -> None:
    """A router dependency of the routers with lists (GET requests only)."""
    if request.method != "GET":
        return
    route = request.scope.get("route")
    if getattr(route, "dependant", None) is None:
        return
    known = declared(route)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no query parameters"
        where = f"GET {getattr(route, 'path', request.url.path)}"
        raise Problem(
            "validation_failed",
            f"{', '.join(unknown)}: not a query parameter of {where} (it takes {takes})",
            status=422,
            errors=[
                {"field": name, "message": f"not a query parameter of {where}"} for name in unknown
            ],
        )
