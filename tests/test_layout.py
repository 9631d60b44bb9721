"""The tests stay shallow: helpers live in helper modules, no module imports a test
module or conftest, and no chain of imports runs past three modules."""

import functools
import re

from .baking import TEMPLATE

TESTS = TEMPLATE / "tests"
RELATIVE_IMPORT = re.compile(r"^\s*from \.(\w*) import (.+)$", re.MULTILINE)
MAX_DEPTH = 3


def imports(path):
    """The modules of tests/ that the module at `path` imports."""
    found = set()
    for module, names in RELATIVE_IMPORT.findall(path.read_text()):
        found |= {module} if module else set(re.split(r",\s*", names.strip("()")))
    return found


def test_no_module_imports_a_test_module_or_conftest():
    offenders = {
        f"{path.name} imports {module}"
        for path in [*TESTS.glob("*.py"), *(TEMPLATE / "bench").glob("*.py")]
        for module in imports(path) | set(re.findall(r"^from tests\.(\w+)", path.read_text(), re.M))
        if module.startswith("test_") or module == "conftest"
    }

    assert offenders == set()


def test_imports_run_at_most_three_modules_deep():
    graph = {path.stem: imports(path) for path in TESTS.glob("*.py")}

    @functools.cache
    def chain(module):
        """The longest chain of imports that starts at `module`."""
        longest = max((chain(other) for other in graph.get(module, ())), key=len, default=())
        return (module, *longest)

    deepest = max((chain(module) for module in graph), key=len)
    assert len(deepest) <= MAX_DEPTH, " -> ".join(deepest)
    assert len(deepest) >= 2, "the check sees the imports"
