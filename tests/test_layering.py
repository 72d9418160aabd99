"""The sans-I/O core imports no I/O framework (style rule 1), checked on the source.

Each module's imports are read with ``ast`` (not by importing it), including imports
inside functions, and followed through the package's own modules: a core module may
not reach asyncio, websockets or onnxruntime through another ``streamer`` module either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streamer

PACKAGE_DIR = Path(streamer.__file__).resolve().parent
FORBIDDEN = frozenset({"asyncio", "websockets", "onnxruntime"})
#: module -> forbidden top-level packages it may use anyway
CORE = {
    "wire": frozenset(),
    "audio": frozenset(),
    "segmenter": frozenset(),
    "identify": frozenset(),
    "gallery_rule": frozenset(),
    "session": frozenset(),
    "units": frozenset(),
    "config": frozenset(),
    "errors": frozenset(),
    "limits": frozenset(),
    "hub": frozenset({"asyncio"}),
    "fanout/peers": frozenset(),
    "vector_store": frozenset(),
    "room_profiles": frozenset(),
    "band": frozenset(),
    "second_voice": frozenset(),
    "voice_change": frozenset(),
    "phone_line": frozenset(),
    "worker": frozenset({"asyncio"}),
}


def imports_of(module: str) -> tuple[set[str], set[str]]:
    """(top-level external packages, sibling ``streamer`` modules) imported by ``module``."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    external: set[str] = set()
    internal: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == "streamer":
                    internal.add(rest.partition(".")[0] or "__init__")
                else:
                    external.add(top)
        elif isinstance(node, ast.ImportFrom):
            name = node.module or ""
            if node.level == 0:
                top, _, rest = name.partition(".")
                if top == "streamer":
                    internal.update([rest.partition(".")[0]] if rest
                                    else [a.name for a in node.names])
                else:
                    external.add(top)
            elif node.level == 1:
                internal.update([name.partition(".")[0]] if name else [a.name for a in node.names])
    internal.discard(module)
    return external, {m for m in internal if (PACKAGE_DIR / f"{m}.py").exists()}


def reachable(module: str) -> dict[str, set[str]]:
    """Every streamer module reachable from ``module`` -> its external imports."""
    seen: dict[str, set[str]] = {}
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        external, internal = imports_of(m)
        seen[m] = external
        todo.extend(internal)
    return seen


@pytest.mark.parametrize("module", sorted(CORE))
def test_core_modules_import_no_io_framework(module: str) -> None:
    allowed = CORE[module]
    offenders = {
        m: sorted((ext & FORBIDDEN) - allowed)
        for m, ext in reachable(module).items()
        if (ext & FORBIDDEN) - allowed
    }
    assert offenders == {}, f"{module} reaches {offenders}"


def test_the_checker_sees_imports() -> None:
    # guard against a checker that silently finds nothing
    external, internal = imports_of("session")
    assert {"numpy"} <= external
    assert {"audio", "config", "identify", "segmenter", "units"} <= internal
    assert "asyncio" in imports_of("hub")[0] and "asyncio" in imports_of("worker")[0]
    assert "websockets" in imports_of("server")[0]
    assert set(reachable("session")) >= {"session", "audio", "config", "errors", "units"}


def test_the_checker_finds_nested_and_relative_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.py").write_text(
        "from . import b\n"
        "def f():\n    import asyncio.events\n",
        encoding="utf-8",
    )
    (tmp_path / "b.py").write_text("from streamer.c import x\nimport onnxruntime as ort\n",
                                   encoding="utf-8")
    (tmp_path / "c.py").write_text("from websockets.asyncio.server import serve\n",
                                   encoding="utf-8")
    monkeypatch.setitem(globals(), "PACKAGE_DIR", tmp_path)
    found = reachable("a")
    assert found == {"a": {"asyncio"}, "b": {"onnxruntime"}, "c": {"websockets"}}
