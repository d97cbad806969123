"""The metrics of quantitative C3PO feedback (verlkit.c3po.metrics): every metric on crafted texts,
combined metrics, and the better/tie/worse verdict in both directions (ties are never success)."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from verlkit.c3po.feedback import Feedback, load_feedbacks
from verlkit.c3po.metrics import BOOLEAN_METRICS, METRICS, compare, measure
from verlkit.records import InputError

BASE = {"content": "Use emojis when texting friends", "domain": "texting a friend", "effect": "use emojis"}


def quantitative(metric, value=None, comparison="greater_eq_than", **extra) -> Feedback:
    return Feedback(**BASE, type="quantitative", metric=metric, metric_value=value, comparison=comparison, **extra)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def test_metric_registry_is_complete():
    assert set(METRICS) == {
        "length", "length_chars", "contains_any_strings", "contains_all_strings", "contains_none_strings",
        "regex_search", "regex_search_false", "starts_with", "ends_with", "ends_with_cleaned",
        "contains_phone_number", "is_language",
    }
    assert BOOLEAN_METRICS == set(METRICS) - {"length", "length_chars"}


@pytest.mark.parametrize("metric,value,text,expected", [
    ("length", None, "  one two\nthree\tfour  ", 4.0),
    ("length", None, "", 0.0),
    ("length_chars", None, "  héllo \n", 5.0),
    ("contains_any_strings", ["😀", "🎉"], "party 🎉 tonight", 1.0),
    ("contains_any_strings", ["😀", "🎉"], "party tonight", 0.0),
    ("contains_all_strings", ["a", "b"], "a and b", 1.0),
    ("contains_all_strings", ["a", "z"], "a and b", 0.0),
    ("contains_none_strings", ["$", "price"], "free as in freedom", 1.0),
    ("contains_none_strings", ["$", "price"], "only $5", 0.0),
    ("contains_none_strings", ["price"], "Price", 1.0),  # substring checks are case-sensitive
    ("regex_search", r"(?i)\bprice\b", "The PRICE is right", 1.0),
    ("regex_search", r"\d{3}", "no digits", 0.0),
    ("regex_search_false", r"\d", "no digits", 1.0),
    ("regex_search_false", r"\d", "3 digits", 0.0),
    ("starts_with", "Dear", "Dear Jared,", 1.0),
    ("starts_with", "Dear", "\nDear Jared,", 0.0),  # exact: leading whitespace counts
    ("ends_with", "Bye", "Bye", 1.0),
    ("ends_with", "Bye", "Bye!\n", 0.0),
    ("ends_with_cleaned", "Bon appétit!", 'Serve. "Bon appétit!"\n', 1.0),
    ("ends_with_cleaned", "Bon appétit!", "Serve. **Bon appétit!**  ", 1.0),
    ("ends_with_cleaned", "Bon appétit!", "Serve. (Bon appétit!)", 1.0),
    ("ends_with_cleaned", "Bon appétit!", "Bon appétit! Enjoy.", 0.0),
    ("ends_with_cleaned", "(the end)", "and that is (the end)", 1.0),
])
def test_metrics_on_crafted_texts(metric, value, text, expected):
    assert measure(quantitative(metric, value), text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Call me at (555) 123-4567 tonight.", 1.0),
    ("Call 555-123-4567.", 1.0),
    ("Call 555.123.4567", 1.0),
    ("Toll free: 1-800-555-0199", 1.0),
    ("London office: +44 20 7946 0958", 1.0),
    ("Paris: +33 1 23 45 67 89.", 1.0),
    ("Ring 555-0199 after six", 1.0),
    ("It happened in 1989, at 3:30 pm.", 0.0),
    ("We sold 1234567 units.", 0.0),
    ("The date 2024-01-15 is fine", 0.0),
    ("Pi is 3.14159265", 0.0),
    ("Scores were 100-200 and 12-34", 0.0),
    ("", 0.0),
])
def test_phone_number_metric(text, expected):
    assert measure(quantitative("contains_phone_number"), text) == expected


def test_metric_functions_return_floats():
    for name, fn in METRICS.items():
        if name == "is_language":
            continue
        value = {"contains_any_strings": ("a",), "contains_all_strings": ("a",), "contains_none_strings": ("a",),
                 "regex_search": "a", "regex_search_false": "a", "starts_with": "a", "ends_with": "a",
                 "ends_with_cleaned": "a"}.get(name)
        result = fn("a b", value)
        assert type(result) is float, name


def test_combined_metrics_hold_only_together():
    fb = quantitative(["starts_with", "ends_with_cleaned"], ["Hey", "See you!"])
    assert measure(fb, "Hey, dinner at 8? See you!") == 1.0
    assert measure(fb, "Hey, dinner at 8?") == 0.0
    assert measure(fb, "Dinner at 8? See you!") == 0.0


def test_qualitative_feedback_has_nothing_to_measure():
    fb = Feedback(**BASE)
    with pytest.raises(InputError, match="qualitative"):
        measure(fb, "x")
    with pytest.raises(InputError, match="qualitative"):
        compare(fb, 0.0, 1.0)


def test_is_language_without_langdetect_fails_at_load(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "langdetect", None)  # makes `import langdetect` raise ImportError
    with pytest.raises(InputError, match="pip install langdetect") as info:
        quantitative("is_language", "fr")
    assert info.value.field == "metric"
    path = write_json(tmp_path / "lang.json", {**BASE, "type": "quantitative", "metric": "is_language",
                                               "metric_value": "fr", "comparison": "greater_eq_than"})
    with pytest.raises(InputError, match=r"lang.json: record 0: metric: .*pip install langdetect"):
        load_feedbacks(path)


def test_is_language_with_a_stand_in_detector(monkeypatch):
    class NoFeatures(Exception):
        pass

    class Factory:
        seed = None

    def detect(text):
        assert Factory.seed == 0, "detection must be seeded to be deterministic"
        if not any(ch.isalpha() for ch in text):
            raise NoFeatures("No features in text.")
        return {"Bonjour": "fr", "你好": "zh-cn"}.get(text.split()[0], "en")

    fake = types.SimpleNamespace(DetectorFactory=Factory, LangDetectException=NoFeatures, detect=detect)
    monkeypatch.setitem(sys.modules, "langdetect", fake)
    french = quantitative("is_language", "fr")
    assert measure(french, "Bonjour tout le monde") == 1.0
    assert measure(french, "Hello world") == 0.0
    assert measure(french, "1234 !!") == 0.0
    assert measure(quantitative("is_language", "zh"), "你好 世界") == 1.0
    with pytest.raises(InputError, match="ISO 639-1"):
        quantitative("is_language", "French")


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("comparison,baseline,trained,expected", [
    ("greater_eq_than", 0.0, 1.0, "better"),
    ("greater_eq_than", 1.0, 0.0, "worse"),
    ("greater_eq_than", 0.0, 0.0, "tie"),
    ("greater_eq_than", 1.0, 1.0, "tie"),
    ("greater_eq_than", 3.0, 5.0, "better"),
    ("less_eq_than", 120.0, 60.0, "better"),
    ("less_eq_than", 60.0, 120.0, "worse"),
    ("less_eq_than", 60.0, 60.0, "tie"),
    ("less_eq_than", 1.0, 0.0, "better"),
    ("less_eq_than", 0.0, 0.0, "tie"),
])
def test_compare_in_both_directions(comparison, baseline, trained, expected):
    assert compare(quantitative("length", None, comparison), baseline, trained) == expected


def test_ties_are_never_better():
    # The original counted "neither response has an emoji" as an improvement; here it is a tie.
    emoji = quantitative("contains_any_strings", ["😀"])
    base, trained = measure(emoji, "see you"), measure(emoji, "see you soon")
    assert compare(emoji, base, trained) == "tie"
    for comparison in ("greater_eq_than", "less_eq_than"):
        for value in (0.0, 1.0, 42.0):
            assert compare(quantitative("length", None, comparison), value, value) == "tie"


def test_compare_rejects_nan():
    with pytest.raises(ValueError):
        compare(quantitative("length", None, "less_eq_than"), float("nan"), 1.0)

