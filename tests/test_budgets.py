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
