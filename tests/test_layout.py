"""The layout stays as the last redesign left it. Both suites (the template's and the
kit's) stay shallow: helpers live in helper modules, no module imports a test module or
conftest, and no chain of imports runs past three modules. The kit's modules stay small,
with no import cycle, and its README's layout names each of them."""

import ast
import functools
import re

from .baking import TEMPLATE

TESTS = TEMPLATE / "tests"
KIT_TESTS = TEMPLATE / "flask-cf-prometheus" / "tests"
# The kit's stand-ins, which the template's tests import as `standins`.
STANDINS = KIT_TESTS / "standins"
RELATIVE_IMPORT = re.compile(r"^\s*from \.([\w.]*) import (.+)$", re.MULTILINE)
SHARED_IMPORT = re.compile(r"^\s*from (standins|tests)\.(\w+) import", re.MULTILINE)
MAX_DEPTH = 3


def suite_modules():
    """Every module of both suites, the stand-ins and the bench."""
    return [*TESTS.glob("*.py"), *KIT_TESTS.rglob("*.py"), *(TEMPLATE / "bench").glob("*.py")]


def imports(path):
    """The modules of either suite that the module at `path` imports, by path."""
    found = set()
    for module, names in RELATIVE_IMPORT.findall(path.read_text()):
        if module:
            found.add(path.parent.joinpath(*module.split(".")).with_suffix(".py"))
        else:
            found |= {path.parent / f"{name}.py" for name in re.split(r",\s*", names.strip("()"))}
    for package, module in SHARED_IMPORT.findall(path.read_text()):
        found.add((STANDINS if package == "standins" else TESTS) / f"{module}.py")
    return {imported for imported in found if imported.exists()}


def test_no_module_imports_a_test_module_or_conftest():
    offenders = {
        f"{path.relative_to(TEMPLATE)} imports {imported.name}"
        for path in suite_modules()
        for imported in imports(path)
        if imported.name.startswith("test_") or imported.name == "conftest.py"
    }

    assert offenders == set()


def test_imports_run_at_most_three_modules_deep():
    graph = {path: imports(path) for path in suite_modules()}

    @functools.cache
    def chain(module):
        """The longest chain of imports that starts at `module`."""
        longest = max((chain(other) for other in graph.get(module, ())), key=len, default=())
        return (module, *longest)

    deepest = max((chain(module) for module in graph), key=len)
    assert len(deepest) <= MAX_DEPTH, " -> ".join(str(p.relative_to(TEMPLATE)) for p in deepest)
    assert len(deepest) >= 2, "the check sees the imports"


KIT_SOURCE = TEMPLATE / "flask-cf-prometheus" / "src" / "flask_cf_prometheus"
MAX_LINES = 400


def kit_modules():
    return sorted(KIT_SOURCE.rglob("*.py"))


def kit_imports(path):
    """The kit's modules that the module at `path` imports, by path."""
    package = path.parent
    found = set()
    for module, names in RELATIVE_IMPORT.findall(path.read_text()):
        if module:
            found.add(package / f"{module}.py")
        else:
            found |= {package / f"{name}.py" for name in re.split(r",\s*", names.strip("()"))}
    return {imported for imported in found if imported.exists()}


def test_no_module_of_the_kit_is_past_400_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in kit_modules()}

    assert {name: size for name, size in sizes.items() if size > MAX_LINES} == {}
    assert len(sizes) > 20


def test_the_kit_has_no_import_cycle():
    graph = {path: kit_imports(path) for path in kit_modules()}

    def cycle_from(path, trail):
        if path in trail:
            return [*trail[trail.index(path) :], path]
        for imported in graph[path]:
            found = cycle_from(imported, [*trail, path])
            if found:
                return found
        return None

    for path in graph:
        cycle = cycle_from(path, [])
        assert cycle is None, " -> ".join(p.name for p in cycle)
    assert sum(len(imported) for imported in graph.values()) > 20


def test_discovery_names_nothing_public_but_main():
    """The kit's README documents `main` alone; every other name is private."""
    public = []
    for path in (KIT_SOURCE / "discovery").glob("_*.py"):
        for node in ast.parse(path.read_text()).body:
            names = [getattr(node, "name", None)] + [
                target.id for target in getattr(node, "targets", []) if isinstance(target, ast.Name)
            ]
            public += [f"{path.name}: {name}" for name in names if name and name[0] != "_"]

    assert public == ["_cli.py: main"]


def test_the_kit_readme_lays_out_every_module():
    readme = (KIT_SOURCE.parents[1] / "README.md").read_text()
    layout = readme[readme.index("\n## Layout\n") : readme.index("\n## Developing\n")]
    listed = set(re.findall(r"^\| `([\w/.]+)` \|", layout, re.MULTILINE))

    assert listed == {path.name for path in KIT_SOURCE.glob("*.py")} | {"discovery/"}
    discovery = {path.stem for path in (KIT_SOURCE / "discovery").glob("_*.py")}
    assert discovery - {"__init__", "__main__"} <= set(re.findall(r"`(_\w+)`", layout))
