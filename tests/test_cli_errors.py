"""A user error prints one line `t2cr-<command>: error: ...` and exits 2, with no traceback; a bug keeps its
traceback; HYDRA_FULL_ERROR=1 shows the traceback of both."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t2cr.cli.common import UserError, user_error_message
from t2cr.data.packaged import packaged_folder


def _train(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "T2CR_TRACEBACKS")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "t2cr.cli.train", *args, "hydra.run.dir=."], capture_output=True,
                          text=True, timeout=120, env=env, check=False)


BAD_INPUTS = {
    "misspelt key": (["model.nope=3"], "Could not override 'model.nope'"),
    "unknown option": (["data=nosuch"], "Could not find 'data/nosuch'"),
    "required path": (["data=mtl_aqa"], "data.root is required and has no value: pass data.root=<value>"),
    "missing frames": (["data=mtl_aqa", "data.root=/no/such/frames"], "data.root=/no/such/frames does not exist"),
    "annotations not packaged": (["data=aqa7", "data.root=."], "ships no annotation files for data.format='aqa7'"),
    "bad value": (["trainer.matmul_precision=fast"], "trainer.matmul_precision='fast' is not one of"),
    "wrong type": (["data.batch_size=many"], "data.batch_size"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_a_user_error_is_one_line_and_exit_2(case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args, expected = BAD_INPUTS[case]
    result = _train(*args)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Error executing job" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("t2cr-train: error: ")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-2000:]


def test_hydra_full_error_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _train("data=mtl_aqa", env_extra={"HYDRA_FULL_ERROR": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "MissingMandatoryValue" in result.stderr


def _raised(function) -> BaseException:
    try:
        function()
    except BaseException as error:  # noqa: BLE001 - the test inspects whatever was raised
        return error
    raise AssertionError("nothing was raised")


def test_a_refusal_of_t2cr_is_a_user_error_and_a_bug_is_not():
    refusal = _raised(lambda: packaged_folder("aqa7"))  # a `raise ValueError(...)` of t2cr's own code
    assert "ships no annotation files" in user_error_message(refusal)
    assert user_error_message(UserError("bad")) == "bad"
    missing = _raised(lambda: Path("/no/such/file.ckpt").read_bytes())
    assert "/no/such/file.ckpt" in user_error_message(missing)
    # errors raised inside torch, or by a non-raise line of our code, are bugs: they keep the traceback
    assert user_error_message(_raised(lambda: torch.zeros(2) @ torch.zeros(3))) is None
    assert user_error_message(_raised(lambda: int("x"))) is None
    assert user_error_message(_raised(lambda: {}["key"])) is None
