"""The layering of the package, read from the source: no import cycles, pure cores without I/O,
and a pinned public surface that docs/api.md lists.

Imports are read with `ast` from every module under src/webphone, wherever they are: at module
level, under ``if TYPE_CHECKING:`` and inside functions (a lazy import hides a cycle, it does not
remove it). ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module,
else of ``pkg``; importing a module is not counted as importing its parent packages (every
package ``__init__`` would otherwise be in a cycle with its own children).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import webphone

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "webphone"

#: Import cycles that still exist, each named by its modules. The test fails on a cycle that is
#: not listed AND on a listed one that is gone. Empty since issue #10: keep it so (a child gets a
#: Protocol of what it needs, never its owner's class).
KNOWN_CYCLES: set[frozenset[str]] = set()

#: Sans-I/O modules: they and everything of webphone they import use no event loop, no socket
#: library, no media stack and no Redis client.
PURE = re.compile(r"^webphone\.(sip(\..+)?|shared\.(protocol|hot_frames|coordinator|lease|routing"
                  r"|views)|_backoff|_options|errors|sip_info)$")
IO_PACKAGES = {"asyncio", "websockets", "aiortc", "aioice", "av", "redis"}

_GROUP_CORE = r"(protocol|hot_frames|schema|actions|coordinator|routing|views|lease)"
#: The layers of docs/internals.md, top down: a module imports only from its own layer and those
#: below. The first matching pattern names a module's layer.
LAYERS: list[tuple[str, str]] = [
    ("app", r"^webphone\.(cli|sandbox|integrations|rc_api|__main__)(\..+)?$"),
    ("face", r"^webphone$"),
    ("group shell", rf"^webphone\.shared(?!\.{_GROUP_CORE}$)(\..+)?$"),
    ("group core", rf"^webphone\.shared\.{_GROUP_CORE}$"),
    ("phone shell", r"^webphone\.(phone|call_session|_call_base|_call_actions|call|sip_client|"
                    r"transport|media)(\..+)?$"),
    ("SIP core", r"^webphone\.sip(\..+)?$"),
    ("base", r"^webphone\.(errors|sip_info|_[a-z_]+)$"),
]
#: layers that do not depend on each other, side by side in the picture
_SIDE_BY_SIDE = {"group core", "phone shell"}

#: the public surface: `from webphone import *` gives exactly these
PUBLIC = [
    "ActionInterruptedError",
    "AuthenticationError",
    "CallSession",
    "InboundCallSession",
    "NoRealPhoneError",
    "OutboundCallSession",
    "RegistrationError",
    "SharedWebPhone",
    "SipInfo",
    "SipParseError",
    "SipTimeoutError",
    "TooManyContactsError",
    "WebPhone",
    "WebPhoneError",
]


# -- reading the imports ---------------------------------------------------------------------------


def module_files() -> dict[str, tuple[Path, bool]]:
    """{dotted module name: (file, is a package)} of every module of the package."""
    modules = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        if package:
            parts.pop()
        modules[".".join(parts)] = (path, package)
    return modules


def imported_names(source: str, module: str, package: bool) -> Iterator[tuple[str, str | None]]:
    """(module, name or None) for every import statement anywhere in `source`; relative
    imports are resolved against `module`."""
    here = module if package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                base = parts[:len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                yield target, alias.name


def import_graph() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(edges between webphone modules, top-level packages each module imports from outside)."""
    modules = module_files()
    edges: dict[str, set[str]] = {}
    external: dict[str, set[str]] = {}
    for module, (path, package) in modules.items():
        inside, outside = set(), set()
        for target, name in imported_names(path.read_text(encoding="utf-8"), module, package):
            if not target.startswith("webphone"):
                outside.add(target.split(".")[0])
            elif name is not None and f"{target}.{name}" in modules:
                inside.add(f"{target}.{name}")
            elif target in modules:
                inside.add(target)
        inside.discard(module)
        edges[module], external[module] = inside, outside
    return edges, external


def cycles(edges: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[frozenset[str]] = set()
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.add(frozenset(component))
    return found


def reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    """`start` and every webphone module it imports, directly or not."""
    seen, todo = {start}, [start]
    while todo:
        for nxt in edges.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


# -- the reader itself -----------------------------------------------------------------------------


def test_imports_under_type_checking_and_in_functions_count() -> None:
    """Imports are found wherever they are written, relative ones resolved."""
    source = ("from typing import TYPE_CHECKING\n"
              "if TYPE_CHECKING:\n    from webphone.a import B\n"
              "def f():\n    import webphone.c\n    from ..d import e\n    from . import g\n")
    found = set(imported_names(source, "webphone.x.y", package=False))
    assert found == {("typing", "TYPE_CHECKING"), ("webphone.a", "B"), ("webphone.c", None),
                     ("webphone.d", "e"), ("webphone.x", "g")}


def test_a_cycle_is_found_and_a_chain_is_not() -> None:
    """Tarjan finds each cycle once, and nothing in an acyclic graph."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"e"}, "e": {"d"}, "f": {"a"}}
    assert cycles(graph) == {frozenset("abc"), frozenset("de")}
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == set()


def test_the_graph_is_read_from_the_real_source() -> None:
    """A guard against a reader that silently finds nothing."""
    edges, external = import_graph()
    assert "webphone.sip_client" in edges["webphone.phone"]
    assert "webphone.shared.protocol" in edges["webphone.shared.coordinator"]
    assert "asyncio" in external["webphone.shared.member"]
    assert len(edges) > 60


# -- the rules -------------------------------------------------------------------------------------


def test_no_import_cycles_but_the_known_ones() -> None:
    """Every cycle is listed in KNOWN_CYCLES, and every listed cycle still exists."""
    edges, _ = import_graph()
    found = cycles(edges)
    assert sorted(map(sorted, found - KNOWN_CYCLES)) == [], "new import cycles"
    assert sorted(map(sorted, KNOWN_CYCLES - found)) == [], (
        "cycles fixed (or changed): remove them from KNOWN_CYCLES")


def layer_of(module: str) -> int:
    """The rank of `module`'s layer, 0 = base; the two middle layers share a rank."""
    names = [name for name, _ in reversed(LAYERS)]
    for name, pattern in LAYERS:
        if re.match(pattern, module):
            rank = names.index(name)
            side = sorted(names.index(n) for n in _SIDE_BY_SIDE)
            return side[0] if rank in side else rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and docs/internals.md")


def test_every_module_imports_only_from_its_layer_and_below() -> None:
    """The layer picture of docs/internals.md holds: no import points up."""
    edges, _ = import_graph()
    upward = sorted((m, d) for m, deps in edges.items() for d in deps
                    if layer_of(d) > layer_of(m))
    assert upward == []
    pattern = dict(LAYERS)
    core = pattern["group core"]
    column = [pattern["phone shell"], pattern["SIP core"]]
    across = sorted((m, d) for m, deps in edges.items() for d in deps
                    if (re.match(core, m) and any(re.match(c, d) for c in column))
                    or (re.match(core, d) and any(re.match(c, m) for c in column)))
    assert across == [], "the group core knows nothing of the phone shell and the SIP core"


def test_pure_modules_import_no_io() -> None:
    """sip/ and the group's cores (and all they import) use no asyncio, websockets, aiortc or
    Redis."""
    edges, external = import_graph()
    pure = sorted(m for m in edges if PURE.match(m))
    assert "webphone.shared.coordinator" in pure and "webphone.sip.message" in pure
    offenders = {}
    for module in pure:
        for dependency in sorted(reachable(edges, module)):
            bad = external[dependency] & IO_PACKAGES
            if bad:
                offenders[module] = f"{dependency} imports {sorted(bad)}"
                break
    assert offenders == {}


def test_the_public_surface_is_pinned() -> None:
    """`webphone.__all__` is exactly the contract, sorted, and every name exists."""
    assert webphone.__all__ == PUBLIC
    assert all(hasattr(webphone, name) for name in PUBLIC)


def test_the_api_reference_imports_exactly_the_public_surface() -> None:
    """docs/api.md's `from webphone import (...)` lists `webphone.__all__`, no more, no less."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    block = re.search(r"^from webphone import \((?P<names>[^)]*)\)", text, re.M)
    assert block is not None, "docs/api.md has no `from webphone import (...)`"
    names = sorted(n.strip() for n in block.group("names").split(",") if n.strip())
    assert names == sorted(webphone.__all__)


def test_the_package_logger_has_a_null_handler() -> None:
    """A library leaves logging output to the application (no "No handlers" fallback)."""
    import logging

    assert any(isinstance(h, logging.NullHandler) for h in logging.getLogger("webphone").handlers)


def test_every_error_class_is_in_the_documented_tree() -> None:
    """Each exception of webphone.errors is in docs/api.md's table and in the tree drawn in the
    module docstring, and nothing else is listed there."""
    import inspect

    from webphone import errors

    classes = {name for name, obj in vars(errors).items()
               if inspect.isclass(obj) and issubclass(obj, errors.WebPhoneError)}
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = text.split("### `webphone.errors`", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == classes
    drawn = set(re.findall(r"(\w+Error)\b", errors.__doc__ or ""))
    assert classes <= drawn
