"""Keyword options checked against the annotations of the callable they are meant for. Pure.

`SharedWebPhone` takes the options of the `WebPhone` it will run while it is the group's real,
and that may be much later than its construction (a dummy is promoted when the real dies). An
option the phone cannot take must fail at once, on every member, not at the promotion: so the
options are checked here when they are given, by name (an unknown name is a `TypeError` with the
closest known names) and by type (the annotation of the parameter they go to).

The type check covers the forms our signatures use: classes, ``X | None`` and other unions,
``tuple[...]``, ``Literal[...]``, ``Callable`` (any callable), generic containers (their
container type only) and ``Any``. ``float`` takes an ``int``; ``int`` and ``float`` never take a
``bool``. A form it does not know (a Protocol, a TypeVar) passes: the check never refuses a
value the callable would take.
"""

from __future__ import annotations

import builtins
import collections.abc
import difflib
import functools
import inspect
import sys
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["check_values", "conforms", "keyword_options"]


class _Lenient(dict[str, Any]):
    """Names for resolving annotations: the module's, the builtins, else `Any` (names imported
    only under TYPE_CHECKING cannot be checked at run time)."""

    def __init__(self, module_globals: Mapping[str, Any]) -> None:
        super().__init__()
        self._globals = module_globals

    def __missing__(self, key: str) -> Any:
        if key in self._globals:
            return self._globals[key]
        return getattr(builtins, key, Any)


@functools.cache
def _hints(func: Callable[..., Any]) -> Mapping[str, Any]:
    module = sys.modules.get(func.__module__)
    names = _Lenient(vars(module) if module is not None else {})
    return typing.get_type_hints(func, localns=names)


def keyword_options(func: Callable[..., Any], exclude: Iterable[str] = (), *,
                    keyword_only: bool = True) -> dict[str, Any]:
    """{name: annotation} of the keyword-only parameters of `func` (with `keyword_only=False`:
    of every named parameter but `self`), but those in `exclude`."""
    skip = {"self", *exclude}
    kinds = ((inspect.Parameter.KEYWORD_ONLY,) if keyword_only else
             (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD))
    hints = _hints(func)
    return {name: hints.get(name, Any)
            for name, p in inspect.signature(func).parameters.items()
            if p.kind in kinds and name not in skip}


def check_values(owner: str, values: Mapping[str, Any], accepted: Mapping[str, Any]) -> None:
    """Raise TypeError unless every item of `values` names a key of `accepted` and conforms
    to its annotation. `owner` names the callable in the message."""
    for name, value in values.items():
        if name not in accepted:
            close = difflib.get_close_matches(name, list(accepted), n=2)
            hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
            raise TypeError(f"{owner}() got an unexpected keyword argument {name!r}{hint}; it "
                            f"takes: {', '.join(sorted(accepted))}")
        expected = accepted[name]
        if not conforms(value, expected):
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            raise TypeError(f"{owner}(): {name} must be {_describe(expected)}, got "
                            f"{type(value).__name__} {shown}")


def conforms(value: object, tp: Any) -> bool:
    """True if `value` fits annotation `tp` (see the module docstring for the forms)."""
    if tp is Any or tp is object:
        return True
    if tp is None or tp is type(None):
        return value is None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return any(conforms(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, tuple) and _tuple_conforms(value, args)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is not None:
        return not isinstance(origin, type) or isinstance(value, origin)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(tp, type) and not getattr(tp, "_is_protocol", False):
        return isinstance(value, tp)
    return True


def _tuple_conforms(value: tuple[Any, ...], args: tuple[Any, ...]) -> bool:
    if len(args) == 2 and args[1] is Ellipsis:
        return all(conforms(item, args[0]) for item in value)
    return len(value) == len(args) and all(map(conforms, value, args))


def _describe(tp: Any) -> str:
    if isinstance(tp, type) and typing.get_origin(tp) is None:
        return tp.__name__
    return str(tp).replace("typing.", "").replace("collections.abc.", "")
