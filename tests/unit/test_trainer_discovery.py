"""nnU-Net finds nnssl's trainers by name with no user set-up (the .pth sets nnUNet_extTrainer)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nnssl

PACKAGE = Path(nnssl.__file__).parent
REPO = PACKAGE.parent
SHIM = PACKAGE / "trainers" / "nnunet_ext" / "nnssl_trainers.py"

LOOKUP_SCRIPT = """
import os, sys
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
for name in sys.argv[1:]:
    cls = recursive_find_trainer_class_by_name(name)
    assert cls.__name__ == name and issubclass(cls, nnUNetTrainer), cls
    print("FOUND", name, cls.__module__)
print("EXT", os.environ.get("nnUNet_extTrainer"))
"""


def exported_names(path: Path) -> list[str]:
    """``__all__`` of a module, read without importing it (importing trainers costs seconds)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no __all__")


def test_shim_only_reexports_trainers_explicitly():
    tree = ast.parse(SHIM.read_text())
    imported = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            assert isinstance(node, ast.Import) or (node.module.startswith("nnssl.trainers") and node.level == 0)
            assert all(alias.name != "*" for alias in node.names)
            imported += [alias.name for alias in node.names]
        else:
            assert isinstance(node, (ast.Expr, ast.Assign)), ast.dump(node)  # docstring, re-export, __all__
    assert imported == ["nnssl.trainers"]  # the one export list, nnssl/trainers/__init__.py's __all__
    assert "__all__ = list(nnssl.trainers.__all__)" in SHIM.read_text()
    assert not (SHIM.parent / "__init__.py").exists()  # scanned as a plain folder, never imported as a package


def test_nnunet_lookup_finds_every_trainer_in_a_fresh_interpreter():
    names = exported_names(PACKAGE / "trainers" / "__init__.py")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.setdefault("nnUNet_n_proc_DA", "0")
    result = subprocess.run(
        [sys.executable, "-c", LOOKUP_SCRIPT, *names],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(REPO.parent),
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = {line.split()[1]: line.split()[2] for line in result.stdout.splitlines() if line.startswith("FOUND")}
    assert sorted(found) == sorted(names)
    assert all(module.startswith("nnssl.trainers.") for module in found.values())
    ext_line = next(line for line in result.stdout.splitlines() if line.startswith("EXT"))
    assert str(SHIM.parent) in ext_line


def test_nnunet_lookup_finds_the_benchmark_trainers_in_their_folder():
    """``benchmarks/low_label.py`` appends its trainer folder to ``nnUNet_extTrainer``: nnUNetv2_train finds them."""
    folder = REPO / "benchmarks" / "trainers"
    names = ["nnSSLTrainer_lowLabel", "nnSSLTrainer_fullTransfer_lowLabel", "nnUNetTrainer_lowLabel"]
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    env.update(nnUNet_n_proc_DA="0", nnUNet_extTrainer=str(folder))
    result = subprocess.run([sys.executable, "-c", LOOKUP_SCRIPT, *names], env=env, capture_output=True, text=True,
                            timeout=300, cwd=str(REPO.parent))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    found = {line.split()[1]: line.split()[2] for line in result.stdout.splitlines() if line.startswith("FOUND")}
    assert found == dict.fromkeys(names, "low_label_trainers")
    assert not (PACKAGE / "trainers" / "benchmark_variants.py").exists()  # benchmark-only code does not ship


def test_wheel_installs_the_startup_pth(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), "."],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = tmp_path.glob("nnssl-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert "nnssl_ext_trainer.pth" in names  # top level of the wheel -> site-packages
        assert "nnssl/trainers/nnunet_ext/nnssl_trainers.py" in names
        pth = zf.read("nnssl_ext_trainer.pth").decode()
    assert pth.startswith("import ") and "import nnssl._startup" in pth
