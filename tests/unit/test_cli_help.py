"""nnssl_pretrain's help shows the SSL methods' defaults as their signatures state them, and a run's parser
is built without importing the methods (torch)."""

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
