"""The house rules of ARCHITECTURE.md, checked on the source: imports run one way between the
packages, nothing imports the CLI, and no module or function outgrows what a reader can hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("taxonomy", "judge", "annotate", "medicine", "pipelines")
# what each package may import from the others (imports run one way: taxonomy ← judge ← annotate, medicine ← pipelines)
ALLOWED = {
    "taxonomy": set(),
    "judge": {"taxonomy"},
    "annotate": {"taxonomy", "judge"},
    "medicine": {"taxonomy", "judge"},
    "pipelines": {"taxonomy", "judge", "annotate", "medicine"},
}
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")
                  if "argilla_plugin" not in p.parts and "data" not in p.relative_to(ROOT / package).parts[:-1])


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    package = ".".join(("quantmedic", *path.relative_to(ROOT).parent.parts))
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


def test_imports_run_one_way_between_the_packages():
    wrong = []
    for path in modules():
        own = path.relative_to(ROOT).parts[0]
        for line, name in imported(path):
            parts = name.split(".")
            if parts[0] in PACKAGES:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports the bare top-level name {name}")
            elif parts[0] == "quantmedic" and len(parts) > 1 and parts[1] != own and parts[1] not in ALLOWED[own]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {name} ({own} may use {sorted(ALLOWED[own])})")
    assert not wrong, "\n".join(wrong)


def test_nothing_outside_the_cli_imports_the_cli():
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {name}" for path in modules()
             if "cli" not in path.relative_to(ROOT).parts for line, name in imported(path)
             if name.startswith("quantmedic.pipelines.cli")]
    assert not wrong, "\n".join(wrong)


def test_the_checker_sees_a_wrong_import(tmp_path):
    """The rule has teeth: a judge module importing pipelines would be caught."""
    bad = ROOT / "judge" / "_architecture_probe.py"
    bad.write_text("from quantmedic.pipelines.data import SHIPPED\n")
    try:
        with pytest.raises(AssertionError, match="_architecture_probe.py:1 imports quantmedic.pipelines.data"):
            test_imports_run_one_way_between_the_packages()
    finally:
        bad.unlink()


def test_no_module_or_function_is_too_long():
    long = []
    for path in modules():
        text = path.read_text(encoding="utf-8")
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {n} lines (at most {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                start = min([node.lineno] + [d.lineno for d in node.decorator_list])
                if (n := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines "
                                f"(at most {MAX_FUNCTION_LINES})")
    assert not long, "\n".join(long)
