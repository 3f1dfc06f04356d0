"""Frozen value classes without the ``dataclasses`` module: importing it pulls in ``inspect`` (and ``ast``, ``dis``,
``tokenize``), a third of what a read-side command paid to start (bench/). Each class lists its fields and
writes its own ``__init__``; this base gives them equality, hashing, ``repr``, immutability and ``replace``."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (a read-side command does not need it)
if TYPE_CHECKING:
    from typing import Any, TypeVar

    V = TypeVar("V", bound="Value")


class Value:
    """Subclasses set ``_fields`` (in order), and may set ``_hidden`` (left out of ``repr``) and ``_uncompared``
    (left out of ``==`` and ``hash``); their ``__init__`` sets every field with ``_set``."""

    _fields: tuple[str, ...] = ()
    _hidden: frozenset[str] = frozenset()
    _uncompared: frozenset[str] = frozenset()

    def _set(self, **values: Any) -> None:
        self.__dict__.update(values)  # what object.__setattr__ per field does here, in one call (a watch makes many)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen {type(self).__name__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen {type(self).__name__}")

    def _key(self) -> tuple[object, ...]:
        return tuple(getattr(self, n) for n in self._fields if n not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{n}={getattr(self, n)!r}" for n in self._fields if n not in self._hidden)
        return f"{type(self).__name__}({shown})"

    def as_dict(self) -> dict[str, Any]:
        return {n: getattr(self, n) for n in self._fields}

    def replace(self: V, **changes: Any) -> V:
        """A copy with ``changes`` (as ``dataclasses.replace``)."""
        unknown = set(changes) - set(self._fields)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {sorted(unknown)[0]!r}")
        return type(self)(**{**self.as_dict(), **changes})
