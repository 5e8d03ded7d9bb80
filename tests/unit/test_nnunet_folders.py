"""nnU-Net's folders are read from the environment in one place, with one message."""

from __future__ import annotations

import pytest

import nnssl
from nnssl.errors import NnsslError
from nnssl.nnunet_folders import (
    PREPROCESSED_ENV,
    RAW_ENV,
    RESULTS_ENV,
    check_name_part,
    name_part_from,
    nnunet_folder,
)
from tests.unit.test_import_rules import PACKAGE


@pytest.mark.parametrize("variable", [RAW_ENV, PREPROCESSED_ENV, RESULTS_ENV])
def test_one_message_names_the_variable_and_the_fix(monkeypatch, tmp_path, variable):
    monkeypatch.delenv(variable, raising=False)
    with pytest.raises(NnsslError) as error:
        nnunet_folder(variable, " (the folder nnUNetv2_train wrote the model into)")
    assert str(error.value) == (f"{variable} is not set; export it as for nnU-Net (see nnU-Net's setting_up_paths)"
                                " (the folder nnUNetv2_train wrote the model into)")
    monkeypatch.setenv(variable, str(tmp_path))
    assert nnunet_folder(variable) == str(tmp_path)


def test_no_other_module_checks_the_variables_itself():
    """The check is written once: no other module of the package says 'is not set' or reads nnU-Net's folder
    variables from the environment itself."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "nnunet_folders.py":
            continue
        text = path.read_text()
        needles = ["is not set", *(f"environ.get({v}" for v in ("RAW_ENV", "PREPROCESSED_ENV", "RESULTS_ENV")),
                   *(f'environ.get("{v}"' for v in (RAW_ENV, PREPROCESSED_ENV, RESULTS_ENV)),
                   *(f'environ["{v}"]' for v in (RAW_ENV, PREPROCESSED_ENV, RESULTS_ENV))]
        offenders += [f"{path}: {needle}" for needle in needles if needle in text]
    assert nnssl.__file__ and offenders == []


@pytest.mark.parametrize("name", ["lsm", "lsm_v2", "a.b-c", "9"])
def test_name_parts_that_nnunet_folder_names_allow(name):
    check_name_part("-n", name)


@pytest.mark.parametrize("name", ["two__underscores", "_leading", "trailing-", "with space", "a/b", ""])
def test_name_parts_refused_with_the_flag_named(name):
    with pytest.raises(NnsslError, match=f"^-n {name}: use letters, digits"):
        check_name_part("-n", name)


@pytest.mark.parametrize(("text", "expected"), [
    ("nnssl-demo-mae", "nnssl-demo-mae"), ("my lab's MAE (v2)", "my_lab_s_MAE_v2"), ("a__b", "a_b"),
    ("_lsm.", "lsm"), ("..--__", "pretrained"),
])
def test_names_made_from_any_text_pass_the_name_rule(text, expected):
    assert name_part_from(text, "pretrained") == expected
    check_name_part("-n", expected)
