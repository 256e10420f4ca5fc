"""A cheaper constructor for the frozen keyword-only record dataclasses, where millions are built.

A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__`` (its
frozen guard): ~1 µs and ~80 ns a field. Re-judging OONI's measurements builds ~15 records a
measurement (issue 14 part 7): :func:`builder` gives a function that makes the very same object
(same class, same fields, equal and hashed alike) by filling its ``__dict__`` in two updates.

Only for classes whose ``__init__`` does nothing else: frozen, keyword-only, no ``__post_init__``,
no ``slots``, every field ``init=True`` (:func:`builder` refuses the others). Callers pass every
field without a default, as they would to the class (tests/test_fastrec.py checks the records
built this way equal the class's own).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from probe.errors import KzprobeError

T = TypeVar("T")
P = ParamSpec("P")

__all__ = ["builder"]


class BuilderError(KzprobeError, TypeError):
    """The class cannot be built without its ``__init__`` (the message names the class and why)."""


def builder(cls: Callable[P, T]) -> Callable[P, T]:
    """``cls(**kw)`` without the generated ``__init__``: fields not given take their defaults.

    Args:
        cls: a frozen, keyword-only dataclass without ``__post_init__`` or ``slots`` (module doc).

    Returns:
        A function of the class's keyword arguments returning a ``cls`` instance, typed with the class's
        own signature (``Callable[P, T]``), so mypy checks every call's keywords and types as it checks
        ``cls(...)``. At run time it checks nothing: a field without a default left out is missing
        (AttributeError when read), a misspelt keyword becomes an extra attribute.

    Raises:
        BuilderError: ``cls`` is not such a dataclass (the message names the class, or the field, and why).
    """
    klass: Any = cls
    params = getattr(klass, "__dataclass_params__", None)
    if params is None:
        raise BuilderError(f"{getattr(klass, '__name__', klass)!r} is not a dataclass")
    if hasattr(klass, "__post_init__") or hasattr(klass, "__slots__") or not params.frozen:
        raise BuilderError(f"{klass.__name__}: only frozen dataclasses without __post_init__ or slots")
    defaults: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for f in dataclasses.fields(klass):
        if not f.init or not f.kw_only:
            raise BuilderError(f"{klass.__name__}.{f.name}: only keyword-only init fields")
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            factories.append((f.name, f.default_factory))
    new = object.__new__

    if factories:
        def build_with_factories(**kw: Any) -> T:
            o: Any = new(klass)
            d = o.__dict__
            d.update(defaults)
            for name, factory in factories:
                if name not in kw:
                    d[name] = factory()
            d.update(kw)
            return o
        return cast("Callable[P, T]", build_with_factories)

    def build(**kw: Any) -> T:
        o: Any = new(klass)
        d = o.__dict__
        d.update(defaults)
        d.update(kw)
        return o
    return cast("Callable[P, T]", build)
