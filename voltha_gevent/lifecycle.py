"""``with thing:`` for the project's objects that have ``start()`` and ``stop()``.

A node, a dev agent, a test cluster, a Prometheus server and the fault beds are all used
the same way - start on entry (``start()`` returns the object), stop on the way out however
the block ends - so the two dunder methods live here once.
"""

from __future__ import annotations

from typing import Any, TypeVar

_T = TypeVar("_T", bound="StartStop")


class StartStop:
    """Mixin: ``__enter__`` is ``start()``, ``__exit__`` is ``stop()``."""

    def __enter__(self: _T) -> _T:
        started: Any = self.start()  # type: ignore[attr-defined]
        return started  # type: ignore[no-any-return]

    def __exit__(self, *exc: object) -> None:
        self.stop()  # type: ignore[attr-defined]


__all__ = ["StartStop"]
