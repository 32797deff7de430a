"""The package's shape: layers that import only downward, no cycles, no private TRL/transformers/accelerate name
outside hf_prefs._compat, short functions and recipes. Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "hf_prefs"

#: Layer of each top-level module or subpackage; a module may import only from its own layer or the ones below.
LAYERS = {
    "assets": 0, "citation": 0, "model_cards": 0, "hub": 0, "hub_loading": 0, "_compat": 0, "memory": 0, "tokenizer_maps": 0, "chat_templates": 0, "dataset_folders": 0, "field_types": 0,
    "core": 1, "models": 2, "labels": 3, "trainers": 4, "tasks": 5, "pipeline": 6,
    "analysis": 7, "cli": 7, "label_app": 7, "__main__": 8,
}
#: Modules that import hf_prefs lazily on purpose: the command line, so that ``hf-prefs --help`` loads no torch.
LAZY_OK = {"hf_prefs.cli", "hf_prefs.label_app.cli"}
EXTERNAL = ("trl", "transformers", "accelerate")
STDLIB_PRIVATE = {"_SubParsersAction"}  # argparse's sub-parsers type, in type hints of the CLI
MAX_FUNCTION_LINES = 80
MAX_RECIPE_LINES = 120


def _modules() -> dict[str, tuple[Path, ast.Module]]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = (path, ast.parse(path.read_text(encoding="utf-8")))
    return out


MODULES = _modules()


def _target(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if path.name == "__init__.py" else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _internal_imports(module: str) -> list[tuple[str, bool]]:
    """``(imported hf_prefs module, inside a function?)`` for every import of ``module``."""
    path, tree = MODULES[module]
    found = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    nested = {id(n) for f in functions for n in ast.walk(f) if n is not f}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names = [_target(module, path, node)]
            names += [f"{names[0]}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        for name in names:
            if name in MODULES and name != "hf_prefs" and name != module:
                found.append((name, id(node) in nested))
    return found


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_every_module_has_a_layer():
    assert {m.split(".")[1] for m in MODULES if m != "hf_prefs"} <= set(LAYERS)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "hf_prefs"))
def test_imports_go_only_downward_and_at_module_level(module):
    for target, lazy in _internal_imports(module):
        assert _layer(target) <= _layer(module), f"{module} (layer {_layer(module)}) imports {target} (layer {_layer(target)})"
        assert not lazy or module in LAZY_OK, f"{module} imports {target} inside a function"


def test_no_import_cycles():
    graph = {m: {t for t, _ in _internal_imports(m) if not m.startswith(t + ".")} for m in MODULES}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif not state.get(nxt):
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for m in graph:
        if not state.get(m):
            visit(m, [])
    assert cycles == []


def _private_uses(tree: ast.Module) -> list[str]:
    uses = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in EXTERNAL:
            uses += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
            uses += [f"import from {node.module}" for part in (node.module or "").split(".") if part.startswith("_")]
    return uses


def _own_names() -> set[str]:
    """Every name hf_prefs defines (functions, classes, attributes it assigns), and the overridden base hooks."""
    from hf_prefs._compat import OVERRIDDEN_HOOKS

    names = {hook for hooks in OVERRIDDEN_HOOKS.values() for hook in hooks}
    for _, tree in MODULES.values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
    return names


def test_private_library_names_only_in_compat():
    own = _own_names()
    offenders = []
    for module, (_, tree) in MODULES.items():
        if module == "hf_prefs._compat":
            continue
        offenders += [f"{module}: {use}" for use in _private_uses(tree)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                if node.attr not in own and node.attr not in STDLIB_PRIVATE:
                    offenders.append(f"{module}:{node.lineno}: .{node.attr}")
    assert offenders == []


def test_overridden_private_hooks_still_exist_on_the_base_classes():
    from hf_prefs._compat import OVERRIDDEN_HOOKS

    from hf_prefs.trainers import PPOTrainer, PreferenceRewardTrainer

    ours = {"_save": PPOTrainer, "_load_from_checkpoint": PPOTrainer, "_save_checkpoint": PPOTrainer,
            "_issue_warnings_after_load": PPOTrainer, "_build_accelerator_args": PPOTrainer,
            "_prepare_dataset": PreferenceRewardTrainer,
            "_set_signature_columns_if_needed": PreferenceRewardTrainer}
    for base, hooks in OVERRIDDEN_HOOKS.items():
        for hook in hooks:
            assert hasattr(base, hook), f"{base.__name__}.{hook} is gone: update hf_prefs._compat and its users"
            theirs = list(inspect.signature(getattr(base, hook)).parameters)
            mine = list(inspect.signature(getattr(ours[hook], hook)).parameters)
            assert mine[: len(theirs)] == theirs or hook == "_issue_warnings_after_load", (hook, theirs, mine)


def test_functions_are_short():
    long = []
    for module, (_, tree) in MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {n} lines")
    assert long == []


def test_recipes_are_short_and_share_one_flow():
    for path in sorted((ROOT / "recipes").glob("*.py")):
        assert len(path.read_text().splitlines()) <= MAX_RECIPE_LINES, path.name
    flows = [p.name for p in (ROOT / "recipes").glob("*.py") if "def main(" in p.read_text()]
    assert flows == ["sentiment.py"]  # the other task recipes run its flow on their own task


def test_tested_versions_start_at_the_floors_pyproject_declares():
    """`_compat.TESTED_VERSIONS`' oldest are exactly pyproject.toml's `>=` floors (what scripts/ci_oldest.sh installs),
    and the installed versions lie inside the tested range."""
    import re
    from importlib.metadata import version

    from packaging.version import Version

    from hf_prefs._compat import TESTED_VERSIONS

    text = (ROOT / "pyproject.toml").read_text()
    deps = re.search(r"^dependencies\s*=\s*\[(.*?)\]", text, re.S | re.M).group(1)
    floors = dict(re.findall(r'"([A-Za-z0-9_.-]+)>=([0-9][0-9A-Za-z.]*)"', deps))
    for name, (oldest, newest) in TESTED_VERSIONS.items():
        assert floors[name] == oldest, (name, floors.get(name), oldest)
        assert Version(oldest) <= Version(version(name)), (name, version(name))
