"""Nurseries for our context managers: the block's own exception comes out as itself.

With strict exception groups, an exception raised in the body of ``async with
open_gateway(...)`` (or ``connect``, ``connect_replicant``) would come out wrapped in
an ``ExceptionGroup`` by the nursery the context manager runs its tasks in.  Like
trio-websocket, our context managers unwrap it when nothing else went wrong: if every
exception in the group is the body's own or a ``trio.Cancelled`` caused by it, the
body's exception is raised as is; anything else (a background task failed too) keeps
the group, so no error is ever hidden.
"""

from __future__ import annotations

__all__ = ["open_unwrapping_nursery", "sole_exception"]

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio


@asynccontextmanager
async def open_unwrapping_nursery() -> AsyncIterator[trio.Nursery]:
    """``trio.open_nursery()`` that lets the block's exception out unwrapped."""
    body: BaseException | None = None
    unwrapped: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            try:
                yield nursery
            except BaseException as exc:
                body = exc
                raise
    except BaseExceptionGroup as group:
        if body is None:
            raise
        _, rest = group.split(lambda e: e is body or isinstance(e, trio.Cancelled))
        if rest is not None:
            raise
        unwrapped = body
    if unwrapped is not None:
        raise unwrapped


def sole_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside ``group`` (through nested groups), if it holds just one:
    how a failure to start (a port in use) comes out of our context managers as itself."""
    leaves: list[BaseException] = []
    todo: list[BaseException] = [group]
    while todo:
        exc = todo.pop()
        if isinstance(exc, BaseExceptionGroup):
            todo.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves[0] if len(leaves) == 1 else None
