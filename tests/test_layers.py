"""The architecture as a test: the import layers of darts/, no import cycles (imports inside
functions included), and no module over 400 lines."""
from pathlib import Path

import grimp
from importlinter.cli import EXIT_STATUS_SUCCESS, lint_imports

REPO_ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 400


def test_the_import_layers_hold(capsys):
    status = lint_imports(config_filename=str(REPO_ROOT / "tests" / "importlinter.ini"), no_cache=True, no_logo=True)
    assert status == EXIT_STATUS_SUCCESS, capsys.readouterr().out


def test_a_broken_layer_is_reported(tmp_path, capsys):
    inverted = tmp_path / "inverted.ini"
    inverted.write_text("[importlinter]\nroot_package = darts\n\n[importlinter:contract:inverted]\nname = inverted\n"
                        "type = layers\nlayers =\n    darts.errors\n    darts.engine\n")
    assert lint_imports(config_filename=str(inverted), no_cache=True, no_logo=True) != EXIT_STATUS_SUCCESS
    assert "BROKEN" in capsys.readouterr().out


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (the package graph is small, but recursion limits are not)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_module_imports_itself_through_others():
    imports = grimp.build_graph("darts")
    modules = set(imports.modules)
    graph = {}
    for module in modules:
        # A module importing its own package (darts.spaces.base -> darts.spaces) runs the package's
        # __init__, which is the registration point, not a layer above: leave those edges out.
        graph[module] = {target for target in imports.find_modules_directly_imported_by(module)
                         if target in modules and not module.startswith(target + ".")}
    assert strongly_connected_components(graph) == []


def test_the_cycle_check_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected_components(graph) == [["a", "b", "c"]]


def test_no_module_is_over_400_lines():
    sizes = {str(path.relative_to(REPO_ROOT)): len(path.read_text().splitlines())
             for path in (REPO_ROOT / "darts").rglob("*.py")}
    assert {path: lines for path, lines in sizes.items() if lines > MAX_MODULE_LINES} == {}


def test_every_top_level_module_has_a_layer():
    listed = (REPO_ROOT / "tests" / "importlinter.ini").read_text()
    modules = {path.stem for path in (REPO_ROOT / "darts").glob("*.py") if path.stem != "__init__"}
    modules |= {path.name for path in (REPO_ROOT / "darts").iterdir() if (path / "__init__.py").is_file()}
    assert sorted(name for name in modules if f"darts.{name}" not in listed) == []
