"""ncmse.pages: a summary's fields glued under their own names."""

from dataclasses import dataclass

import pytest

from ncmse import pages
from ncmse.variants import Variant


@dataclass(frozen=True)
class _Summary:
    d: int
    acc: float
    best: Variant


def test_fields_are_glued_under_their_own_names(monkeypatch):
    glued = {}
    monkeypatch.setattr("myst_nb.glue", lambda name, value, display=True: glued.update({name: (value, display)}))
    s = _Summary(4, 0.5, Variant("rmse", 5.0, 1.0))
    assert pages.glue_fields(s, "rs_") == {"rs_d": 4, "rs_acc": 0.5, "rs_best": "RMSE α=5, M=1"}
    assert glued == {"rs_d": (4, False), "rs_acc": (0.5, False), "rs_best": ("RMSE α=5, M=1", False)}
    assert pages.glue_fields(s, "x_", "acc") == {"x_acc": 0.5}
    assert pages.glue_values(low_d=2) == {"low_d": 2} and glued["low_d"] == (2, False)
    with pytest.raises(AttributeError):
        pages.field_values(s, "nothing")
    with pytest.raises(TypeError, match="not a dataclass"):
        pages.field_values(object())


def test_collapse_history_sentence_says_what_changed_and_the_phase():
    from ncmse.pages import collapse_history_sentence

    h = [{"epoch": 1, "N": 500, "NC1": 20.0, "accuracy": 0.1, "NC4_ncc": 0.9},
         {"epoch": 2, "N": 500, "NC1": 2.0, "accuracy": 0.95, "NC4_ncc": 0.2}]
    text = collapse_history_sentence(h)
    assert text.startswith("Over 2 epochs on 500 images, NC1 fell from 20 to 2,")
    assert "accuracy rose from 0.100 to 0.950" in text and "on their way to collapse" in text
    h[1]["NC1"] = 30.0
    assert collapse_history_sentence(h).endswith("(training accuracy below 0.99).")
    h[1]["accuracy"] = 1.0
    assert collapse_history_sentence(h).endswith("it is in the terminal phase.")
