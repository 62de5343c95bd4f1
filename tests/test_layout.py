"""The package layout: no import circle, and no module outside ``tinycnn/models/`` names a model module.

Both are read from the source (``ast``), not from ``sys.modules``, so an import hidden inside a function
counts as much as one at the top of a file. The one exception is a module-level ``__getattr__``
(PEP 562): ``tinycnn.train`` uses it to keep the names that moved to ``tinycnn.run`` reachable as
``train.<name>``, and ``run`` imports ``train`` for the Trainer.
"""
import ast
import pathlib

import numpy as np
import pytest

import tinycnn
from tinycnn import nn
from tinycnn.models import _common as common
from tinycnn.profile import profile

PACKAGE = pathlib.Path(tinycnn.__file__).parent
MODEL_FAMILIES = {path.stem for path in (PACKAGE / "models").glob("*.py") if not path.stem.startswith("_")}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _imports(name, path):
    """``[(imported module, line)]`` of every import in the file, at the top or inside functions,
    except inside a module-level ``__getattr__`` (a documented re-export of moved names)."""
    tree = ast.parse(path.read_text())
    shims = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "__getattr__"]
    skipped = {id(inner) for shim in shims for inner in ast.walk(shim)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            submodules = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
            found += [(module, node.lineno) for module in submodules or [target]]
        elif isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
    return found


def test_the_package_has_no_import_circle():
    graph = {name: {module for module, _ in _imports(name, path) if module in MODULES and module != name}
             for name, path in MODULES.items()}
    state, path, circles = {}, [], []

    def visit(module):
        state[module] = "open"
        path.append(module)
        for imported in sorted(graph[module]):
            if state.get(imported) == "open":
                circles.append(" -> ".join(path[path.index(imported):] + [imported]))
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
    assert circles == []
    assert "tinycnn.plots" in graph["tinycnn.run"] and "tinycnn.evaluate" in graph["tinycnn.plots"]   # the test sees


def test_no_module_outside_the_zoo_imports_a_model_module_by_name():
    assert {"mobilenet_v2", "resnet", "ghostnet"} <= MODEL_FAMILIES
    offenders = []
    for name, path in MODULES.items():
        if name.startswith("tinycnn.models"):
            continue
        for module, line in _imports(name, path):
            if module.startswith("tinycnn.models.") and module.split(".")[2] in MODEL_FAMILIES:
                offenders.append(f"{path.name}:{line} imports {module}")
        for node in ast.walk(ast.parse(path.read_text())):         # importlib.import_module(f"...models.{x}")
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                    "import_module" and "models" in ast.unparse(node):
                offenders.append(f"{path.name}:{node.lineno} imports a model module by a computed name")
    assert offenders == []


class _TinyNet(common.LayerChain):
    """A model defined outside the package: the profiler needs no edit to count it."""

    def __init__(self, in_channels=3):
        super().__init__(in_channels)
        self.stem = nn.Conv2dNormActivation(self.in_channels, 4, stride=2)
        self.block = nn.Residual(nn.Conv2dNormActivation(4, 4, activation_layer=None))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(4, 3)

    def _layers(self):
        return [self.stem, self.block, self.pool, self.flatten, self.fc]


class _Undeclared(nn.Module):
    """A block that neither declares ``plain_container`` nor defines ``extra_flops``."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        return self.conv(x) * 2


def test_a_new_model_is_profiled_from_what_its_classes_declare():
    result = profile(_TinyNet(in_channels=1), (1, 1, 8, 8))
    assert result.unaccounted == []
    add = [row for row in result.rows if row.kind == "add"]
    assert [(row.name, row.flops) for row in add] == [("block", 4 * 4 * 4)]     # one add per output element
    assert profile(_Undeclared(), (1, 1, 4, 4)).unaccounted == ["_Undeclared"]


def test_plain_containers_are_declared_on_the_classes():
    assert nn.Sequential.plain_container and nn.Concat.plain_container and common.LayerChain.plain_container
    assert not nn.Module.plain_container and not nn.Conv2d.plain_container


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_layer_chain_rejects_a_bad_in_channels(bad):
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        _TinyNet(in_channels=bad)


def test_a_model_checks_its_input_channels():
    model = _TinyNet(in_channels=1)
    with pytest.raises(ValueError, match="expects 1 input channels"):
        model(np.zeros((1, 3, 8, 8), dtype=np.float32))
