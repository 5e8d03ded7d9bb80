"""The typed settings of a run: checked once by the method's class; ``--continue`` says what it overrides."""

from __future__ import annotations

import logging
from dataclasses import asdict

import pytest

from nnssl.errors import NnsslError
from nnssl.pretraining.engine.settings import DEFAULT_METHOD, PretrainRequest, PretrainSettings, saved_settings


def test_the_method_s_class_checks_the_settings():
    PretrainSettings(method_settings={"mask_ratio": 0.5}).check()
    with pytest.raises(NnsslError, match="mask_ratio must be in"):
        PretrainSettings(method_settings={"mask_ratio": 1.5}).check()
    with pytest.raises(NnsslError, match="unknown SSL method 'nope'"):
        PretrainSettings(method="nope").check()


def test_continue_keeps_the_saved_settings_and_says_which_given_ones_it_ignores(caplog):
    saved = asdict(PretrainSettings(epochs=3, method_settings={"mask_ratio": 0.6}))
    with caplog.at_level(logging.WARNING, logger="nnssl"):
        resumed = saved_settings(saved, PretrainSettings(epochs=10))
    assert resumed.epochs == 3 and resumed.method_settings == {"mask_ratio": 0.6}
    assert "not the given ones: method_settings {'mask_ratio': 0.6} (given {}), epochs 3 (given 10)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="nnssl"):
        saved_settings(saved, PretrainSettings(**saved))
    assert caplog.text == ""


def test_the_run_file_records_request_and_settings():
    request = PretrainRequest(inputs=["in"], output_folder="out")
    record = request.run_file()
    assert record["settings"]["method"] == DEFAULT_METHOD == record["request"]["settings"]["method"]
    assert PretrainSettings(**record["settings"]) == request.settings
