"""nnssl_pretrain's help shows the SSL methods' defaults as their signatures state them; a run's parser is built,
and nnssl_predict's and nnssl_export's arguments checked, without importing torch."""

from __future__ import annotations

import subprocess
import sys

from nnssl.cli.pretrain import build_parser
from nnssl.pretraining.methods.registry import method_arguments


def test_help_shows_the_defaults_of_each_masked_method():
    text = " ".join(build_parser(with_method_defaults=True).format_help().split())
    ratios = {name: method_arguments(name)["mask_ratio"] for name in ("mae", "sparkmae")}
    assert ratios == {"mae": 0.75, "sparkmae": 0.6}
    assert f"fraction of blocks hidden (default mae {ratios['mae']}, sparkmae {ratios['sparkmae']})" in text
    assert "at least min_blocks_per_axis blocks (default mae 8, sparkmae 8" in text


def test_a_runs_parser_imports_no_method():
    code = ("import sys; from nnssl.cli.pretrain import build_parser; "
            "build_parser().parse_args(['-i', 'x', '-o', 'y']); "
            "print('torch' in sys.modules, 'nnssl.pretraining.methods.registry' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.split() == ["False", "False"], result.stdout + result.stderr


def error_without_torch(tool: str, args: list[str]) -> list[str]:
    """stderr of ``nnssl.cli.<tool>.main(args)`` run in a fresh interpreter, which must exit 2 (a one-line error)
    without having imported torch."""
    code = (f"import sys\nfrom nnssl.cli.{tool} import main\n"
            "try:\n    sys.exit(main(sys.argv[1:]))\n"
            "finally:\n    print('torch' in sys.modules, file=sys.stderr)\n")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert lines[-1] == "False", "torch was imported before the error"
    return lines[:-1]


def test_predict_checks_its_request_before_importing_torch(tmp_path):
    missing = tmp_path / "missing"
    lines = error_without_torch("predict", ["-i", str(missing), "-o", str(tmp_path / "out"), "-d", "1",
                                            "-c", "3d_fullres"])
    assert lines == [f"nnssl_predict: error: {missing}: no such input folder; "
                     f"pass the folder of images to predict with -i"]
    assert not (tmp_path / "out").exists()


def test_export_checks_its_arguments_before_importing_torch(tmp_path):
    missing = tmp_path / "missing"
    lines = error_without_torch("export", ["-i", str(missing), "-o", str(tmp_path / "out"), "--license", "mit"])
    assert lines == [f"nnssl_export: error: {missing}: no such folder; pass the output folder of nnssl_pretrain"]
    assert not (tmp_path / "out").exists()
