"""The packages depend on each other in one direction only: protos <- common <- actors, graders <- learner.

Parsed from the source (every import, at the top of a module or inside a function), so a lazy
import counts as much as a top-level one.
"""
import ast

import pytest

from e2e import ROOT

PACKAGES = {"actors", "common", "graders", "learner", "protos"}
# what each package may import from the project (besides itself)
ALLOWED = {
    "protos": set(),
    "common": {"protos"},
    "graders": {"protos", "common"},
    "actors": {"protos", "common", "graders"},
    "learner": {"protos", "common", "graders", "actors"},
}


def project_imports(path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & PACKAGES


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_package_imports_only_what_it_may(package):
    wrong = {
        str(path.relative_to(ROOT)): sorted(project_imports(path) - ALLOWED[package] - {package})
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    wrong = {path: names for path, names in wrong.items() if names}
    assert not wrong, f"{package}/ may import only {sorted(ALLOWED[package])} of the project; found {wrong}"


def test_the_check_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import os\n\ndef f():\n    from learner.driver import loop\n    import actors.rollout\n")
    assert project_imports(module) == {"learner", "actors"}
