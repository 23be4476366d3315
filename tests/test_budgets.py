import pytest

import diffkit


def test_full_is_the_default(monkeypatch):
    monkeypatch.delenv("DIFFKIT_QUICK", raising=False)
    assert not diffkit.is_quick() and diffkit.mode() == "full"
    assert diffkit.budget(full=4000, quick=100) == 4000


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_quick(monkeypatch, value):
    monkeypatch.setenv("DIFFKIT_QUICK", value)
    assert diffkit.is_quick() and diffkit.budget(full=4000, quick=100) == 100


def test_bad_values(monkeypatch):
    monkeypatch.setenv("DIFFKIT_QUICK", "fast")
    with pytest.raises(ValueError, match="DIFFKIT_QUICK must be one of"):
        diffkit.is_quick()
    monkeypatch.setenv("DIFFKIT_QUICK", "0")
    with pytest.raises(TypeError, match="full and quick must have the same type"):
        diffkit.budget(full=10, quick=0.5)


def test_report_cost_adds_the_training_the_cache_saved(monkeypatch, capsys):
    import time

    import IPython.display

    from diffkit import budgets, cache

    monkeypatch.setattr(cache, "_LOADED_RUNS", {"a": 120.0, "b": 30.0, "c": 6.0})
    monkeypatch.setattr(cache, "_TRAINED_RUNS", {"c"})  # trained here: not saved
    glued = {}
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw, metadata: glued.update({metadata["scrapbook"]["name"]: obj}))
    cost = budgets.report_cost(time.perf_counter() - 60.0)
    assert cost["saved_minutes"] == 2.5
    assert cost["run_minutes"] == pytest.approx(1.0, abs=0.01)
    assert cost["cold_minutes"] == pytest.approx(cost["run_minutes"] + 2.5)
    assert set(glued) == {"run_minutes", "saved_minutes", "cold_minutes"}
    assert "loaded 150 s of training from the cache" in capsys.readouterr().out
    with pytest.raises(TypeError, match="start must be the time.perf_counter"):
        budgets.report_cost("now")
    with pytest.raises(ValueError, match="from the past"):
        budgets.report_cost(time.perf_counter() + 100)
