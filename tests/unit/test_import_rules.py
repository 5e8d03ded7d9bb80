"""Where things live (docs/contracts.md, "Where things live"), checked on the source: every import of every
module under ``nnssl/``, at module level or inside a function, read with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path

import nnssl

PACKAGE = Path(nnssl.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module under ``nnssl/`` by dotted name (the trainer shim folder is scanned by nnU-Net, not imported)."""
    return {module_name(p): p for p in sorted(package.rglob("*.py")) if "nnunet_ext" not in p.parts}


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The modules ``path`` imports; ``from package import name`` counts as importing ``package.name`` when that
    is a module of ours."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in known else node.module)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, set(modules)) for name, path in modules.items()}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


# the files below every room (docs/contracts.md): errors and atomic writes
VOLUMES_MAY_IMPORT = {"nnssl", "nnssl.errors", "nnssl.atomic_files", "nnssl.worker_processes"}


def violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a rule, as ``module imports target (rule)``."""
    rules = [
        (lambda m: not within(m, "nnssl.nnunet_adapter") and not within(m, "nnssl.trainers"), "nnunetv2",
         "only nnssl.nnunet_adapter and nnssl.trainers import nnunetv2"),
        (lambda m: within(m, "nnssl.checkpoints"), "nnssl.pretraining", "nnssl.checkpoints is the bottom layer"),
        (lambda m: within(m, "nnssl.checkpoints"), "nnssl.trainers", "nnssl.checkpoints is the bottom layer"),
        (lambda m: within(m, "nnssl.checkpoints"), "nnssl.nnunet_adapter", "nnssl.checkpoints is the bottom layer"),
        (lambda m: within(m, "nnssl.trainers"), "nnssl.pretraining.methods", "trainers never import SSL methods"),
        (lambda m: not within(m, "nnssl.cli"), "nnssl.cli", "nothing imports the command-line tools"),
        (lambda m: m != "nnssl.checkpoints.hub", "huggingface_hub",
         "only nnssl.checkpoints.hub imports huggingface_hub"),
    ]
    # the layers of the "Where things live" table: nothing imports a layer above its own
    layers = {
        "nnssl.nnunet_adapter": ("nnssl.pretraining", "nnssl.trainers", "nnssl.inference"),
        "nnssl.pretraining.data": ("nnssl.pretraining.engine", "nnssl.pretraining.methods", "nnssl.trainers",
                                   "nnssl.inference"),
        # prediction reads volumes through nnssl.volumes and runs nnU-Net's model: no pretraining at all
        "nnssl.inference": ("nnssl.pretraining", "nnssl.trainers", "nnssl.evaluation", "nnssl.demo"),
        "nnssl.pretraining.methods": ("nnssl.pretraining.engine", "nnssl.pretraining.data", "nnssl.trainers"),
        "nnssl.trainers": ("nnssl.pretraining",),
        # scoring reads label files only: no nnU-Net, network, checkpoint or pretraining
        "nnssl.evaluation": ("nnssl.nnunet_adapter", "nnssl.pretraining", "nnssl.trainers", "nnssl.checkpoints",
                             "nnssl.demo", "nnssl.inference"),
    }
    for layer, above in layers.items():
        rules += [((lambda m, layer=layer: within(m, layer)), target, f"{layer} is below {target}") for target in above]
    found = []
    for module, targets in sorted(graph.items()):
        for applies, forbidden, rule in rules:
            if applies(module):
                found += [f"{module} imports {t} ({rule})" for t in sorted(targets) if within(t, forbidden)]
        if within(module, "nnssl.volumes"):
            found += [f"{module} imports {t} (nnssl.volumes is the floor: it imports only the bottom files)"
                      for t in sorted(targets) if within(t, "nnssl") and not within(t, "nnssl.volumes")
                      and t not in VOLUMES_MAY_IMPORT]
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles among nnssl's modules (depth-first search; each cycle reported once, from where it was met)."""
    state: dict[str, str] = {}
    found: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target not in graph:
                continue
            if state.get(target) == "open":
                found.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_the_rules_hold_for_every_module():
    graph = import_graph()
    assert len(graph) > 50 and "nnssl.checkpoints.layout" in graph
    found = violations(graph)
    assert not found, "imports that break the rules of docs/contracts.md:\n" + "\n".join(found)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_checks_catch_what_they_forbid():
    graph = {
        "nnssl.checkpoints.files": {"nnssl.pretraining.engine.loop", "torch"},
        "nnssl.pretraining.engine.loop": {"nnssl.checkpoints.files", "nnunetv2.paths"},
        "nnssl.trainers.variants": {"nnssl.pretraining.methods.mae", "nnunetv2.paths"},
        "nnssl.demo.run_demo": {"nnssl.cli.pretrain"},
        "nnssl.evaluation.files": {"nnssl.volumes.discovery", "nnssl.pretraining.data.blockwise_tiles"},
        "nnssl.inference.run": {"nnssl.volumes.lazy", "nnssl.pretraining.engine.run"},
        "nnssl.nnunet_adapter.standalone_planning": {"nnssl.volumes.tissue_sampling",
                                                     "nnssl.pretraining.data.blockwise_tiles"},
        "nnssl.volumes.reading": {"nnssl.errors", "nnssl.nnunet_adapter.readers", "numpy"},
        "nnssl.checkpoints.lookup": {"nnssl.checkpoints.hub", "huggingface_hub.constants"},
    }
    assert violations(graph) == [
        "nnssl.checkpoints.files imports nnssl.pretraining.engine.loop (nnssl.checkpoints is the bottom layer)",
        "nnssl.checkpoints.lookup imports huggingface_hub.constants (only nnssl.checkpoints.hub imports "
        "huggingface_hub)",
        "nnssl.demo.run_demo imports nnssl.cli.pretrain (nothing imports the command-line tools)",
        "nnssl.evaluation.files imports nnssl.pretraining.data.blockwise_tiles (nnssl.evaluation is below "
        "nnssl.pretraining)",
        "nnssl.inference.run imports nnssl.pretraining.engine.run (nnssl.inference is below nnssl.pretraining)",
        "nnssl.nnunet_adapter.standalone_planning imports nnssl.pretraining.data.blockwise_tiles "
        "(nnssl.nnunet_adapter is below nnssl.pretraining)",
        "nnssl.pretraining.engine.loop imports nnunetv2.paths (only nnssl.nnunet_adapter and nnssl.trainers import "
        "nnunetv2)",
        "nnssl.trainers.variants imports nnssl.pretraining.methods.mae (trainers never import SSL methods)",
        "nnssl.trainers.variants imports nnssl.pretraining.methods.mae (nnssl.trainers is below nnssl.pretraining)",
        "nnssl.volumes.reading imports nnssl.nnunet_adapter.readers (nnssl.volumes is the floor: it imports only the "
        "bottom files)",
    ]
    assert cycles(graph) == [["nnssl.checkpoints.files", "nnssl.pretraining.engine.loop", "nnssl.checkpoints.files"]]
