"""The README's "Using diffkit" examples run as written and do what they say."""

import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _examples():
    text = README.read_text()
    section = text[text.index("## Using diffkit"):]
    section = section[:section.index("\n## ", 4)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_has_the_train_save_load_sample_measure_example():
    code = _examples()[0]
    for step in ("Trainer(", ".fit()", "save_model(", "load_model(", "samplers.", "with_null_band("):
        assert step in code, step


@pytest.mark.parametrize("index", [0, 1])
def test_readme_examples_run_as_written(index, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFKIT_CACHE_DIR", str(tmp_path / "cache"))
    scope: dict = {}
    exec(compile(_examples()[index], f"README example {index}", "exec"), scope)  # noqa: S102
    assert scope["samples"].shape[1] == 2 and scope["samples"].isfinite().all()
    if index == 0:
        assert os.path.exists(tmp_path / "eight_gaussians.safetensors")
        result = scope["result"]
        assert f"{result.value:.2g}" in capsys.readouterr().out  # it printed the numbers
        # the trained model is close to the data: within a few null standard deviations of the metric
        assert result.z < 10 and result.value < 0.01, result
    else:
        assert scope["traj"].nfe > 10 and f"{scope['traj'].nfe}" in capsys.readouterr().out
