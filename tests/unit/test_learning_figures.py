"""Every pretraining run shows whether it learns: figures per method, in the log, the run file and the plot."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from nnssl.pretraining.engine.reporting import describe_figures, learning_check_epoch, progress_summary
from nnssl.pretraining.methods.heads import pair_similarities
from nnssl.pretraining.methods.registry import available_methods
from tests.unit.test_pretrainer_methods import pretrainer

EXPECTED_FIGURES = {"mae": {"trivial"}, "sparkmae": {"trivial"}, "modelsgenesis": {"trivial"},
                    "simclr": {"positive_similarity", "negative_similarity"},
                    "byol": {"positive_similarity", "negative_similarity"}}


def test_pair_similarities_analytic():
    """Orthonormal embeddings, each sample's two views equal: positive pairs 1, negative pairs 0."""
    a = torch.eye(4)[:3] * torch.tensor([[2.0], [0.5], [3.0]])
    figures = pair_similarities(a, a.clone())
    assert figures["positive_similarity"].item() == pytest.approx(1.0, abs=1e-6)
    assert figures["negative_similarity"].item() == pytest.approx(0.0, abs=1e-6)
    collapsed = pair_similarities(torch.ones(3, 4), torch.ones(3, 4))
    assert collapsed["negative_similarity"].item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("epochs, expected", [(1, 1), (5, 1), (10, 2), (11, 3), (1000, 200)])
def test_learning_check_after_a_fifth_of_the_epochs(epochs, expected):
    assert learning_check_epoch(epochs) == expected


@pytest.mark.parametrize("name", available_methods())
def test_epoch_end_records_the_figures_everywhere(name, tmp_path, caplog):
    """Log line, history (checkpoint), nnssl_run.json and progress.png carry the method's figures."""
    trainer = pretrainer(name, tmp_path)
    (tmp_path / "nnssl_run.json").write_text(json.dumps({"settings": {"method": name}}))
    batches = [torch.randn(2, 1, 16, 32, 32), torch.randn(2, 1, 16, 32, 32)]
    trainer.partial_epoch_losses = [1.0, 2.0]
    with caplog.at_level(logging.INFO, logger="nnssl"):
        trainer._end_epoch(0.01, 0.0, batches)
    history = trainer.history
    assert set(history["val_figures"]) == EXPECTED_FIGURES[name]
    assert history["batch_losses"] == [1.0, 2.0]
    run = json.loads((tmp_path / "nnssl_run.json").read_text())
    assert run["settings"] == {"method": name}  # kept
    assert run["progress"]["epochs_done"] == 1 and set(run["progress"]["val_figures"]) == EXPECTED_FIGURES[name]
    if "trivial" in EXPECTED_FIGURES[name]:
        ratio = history["val_losses"][0] / history["val_figures"]["trivial"][0]
        assert history["val_over_trivial"] == [pytest.approx(ratio)]
        assert run["progress"]["val_over_trivial"] == pytest.approx(ratio)
        assert "val / trivial" in caplog.text
    else:
        assert "val_over_trivial" not in run["progress"] and "positive similarity" in caplog.text
    assert (tmp_path / "progress.png").stat().st_size > 0


def test_warns_once_when_still_at_the_trivial_answer(tmp_path, caplog):
    trainer = pretrainer("mae", tmp_path)  # 2 epochs: checked from the end of epoch 1 on
    trainer.epoch = 1
    with caplog.at_level(logging.WARNING, logger="nnssl"):
        trainer._check_learning(0.8)
        assert "does not learn" not in caplog.text
        trainer._check_learning(1.05)
        trainer._check_learning(1.2)
    assert caplog.text.count("does not learn") == 1


def test_no_warning_before_a_fifth_of_the_epochs(tmp_path, caplog):
    trainer = pretrainer("mae", tmp_path)
    trainer.settings.epochs, trainer.epoch = 100, 19
    with caplog.at_level(logging.WARNING, logger="nnssl"):
        trainer._check_learning(3.0)
    assert "does not learn" not in caplog.text


def test_progress_summary_and_log_text():
    history = {"train_losses": [2.0, 1.0], "val_losses": [1.5, 0.6], "val_figures": {"trivial": [1.0, 1.0]},
               "val_over_trivial": [1.5, 0.6]}
    summary = progress_summary(history, 2)
    assert summary == {"epochs_done": 2, "train_loss": 1.0, "val_loss": 0.6, "val_figures": {"trivial": 1.0},
                       "val_over_trivial": 0.6, "val_over_trivial_per_epoch": [1.5, 0.6]}
    assert describe_figures({"trivial": 1.0}, 0.6) == ", trivial 1.0000 (val / trivial 0.600)"
