"""Meta-tests: the hook specs are the API document, and every hook is tested."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from nixos_migrate import hookspecs

SPECS = {
    name: fn
    for name, fn in vars(hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, f"{hookspecs.PROJECT}_spec")
}


def test_hook_names_list_every_spec():
    assert set(SPECS) == set(hookspecs.HOOK_NAMES)


@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_every_hook_is_documented_and_typed(name):
    fn = SPECS[name]
    doc = inspect.getdoc(fn) or ""
    assert len(doc) > 200, f"{name}: the docstring is the API doc; write it"
    assert "Returns:" in doc, f"{name}: say what the return means"
    assert "None" in doc, f"{name}: say what None means"
    assert "May be re-run:" in doc, f"{name}: say whether it may be re-run"
    params = [p for p in inspect.signature(fn).parameters if p != "self"]
    for param in params:
        assert f"{param}:" in doc, f"{name}: document the argument {param!r}"
    annotations = fn.__annotations__
    assert "return" in annotations, f"{name}: type the return"
    assert all(p in annotations for p in params), f"{name}: type every argument"
    if params:
        assert params[0] == "service", f"{name}: the service context comes first"


def _test_function_names() -> set[str]:
    names: set[str] = set()
    for path in Path(__file__).parent.rglob("test_*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names |= {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}
    return names


@pytest.mark.parametrize("name", hookspecs.HOOK_NAMES)
def test_every_hook_has_a_contract_test(name):
    assert any(t.startswith(f"test_hook_{name}") for t in _test_function_names()), (
        f"no test named test_hook_{name}* exercises the hook {name}"
    )


def test_library_code_has_no_assert_or_sys_exit():
    root = Path(hookspecs.__file__).parent
    offenders = []
    library = [p for p in root.rglob("*.py") if "testing" not in p.parts]  # testing/ is test code
    for path in [*library, *(root.parents[1] / "plugins").rglob("nixos_migrate_*/*.py")]:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Assert):
                offenders.append(f"{path}:{getattr(node, 'lineno', 0)}: assert")
            is_exit = isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys"
            # only the entry point turns a return code into an exit
            if is_exit and path.name != "cli.py":
                offenders.append(f"{path}:{getattr(node, 'lineno', 0)}: sys.exit")
    assert offenders == []
