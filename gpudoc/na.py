"""The explicit "not available" value for readings a device, kernel or permission withholds."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


class NotAvailable:
    """The value of a field the device, driver or permissions do not provide.

    A singleton that is falsy, prints as ``N/A`` and serialises to JSON ``null``.
    """

    _instance: NotAvailable | None = None

    def __new__(cls) -> NotAvailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NA"

    def __str__(self) -> str:
        return "N/A"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> tuple[type[NotAvailable], tuple[()]]:
        return (NotAvailable, ())


NA = NotAvailable()


def available(value: T | NotAvailable) -> bool:
    """True when ``value`` is a real reading (``0`` included), not ``NA``."""
    return value is not NA


def na_map(value: T | NotAvailable, fn: Callable[[T], U]) -> U | NotAvailable:
    """``fn(value)``, or ``NA`` when ``value`` is ``NA``."""
    return NA if isinstance(value, NotAvailable) else fn(value)
