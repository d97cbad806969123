"""C3PO feedback records: bundled files, loading errors, selection, metrics and the verdict."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

from verlkit.c3po.feedback import (
    BOOLEAN_METRICS,
    METRICS,
    Feedback,
    FeedbackError,
    compare,
    load_feedbacks,
    measure,
    select_feedbacks,
    slugify,
)
from verlkit.c3po.general_prompts import (
    BUNDLED_FEEDBACKS,
    BUNDLED_GENERAL_PROMPTS,
    GeneralPromptsError,
    load_general_prompts,
)

BASE = {"content": "Use emojis when texting friends", "domain": "texting a friend", "effect": "use emojis"}


def quantitative(metric, value=None, comparison="greater_eq_than", **extra) -> Feedback:
    return Feedback(**BASE, type="quantitative", metric=metric, metric_value=value, comparison=comparison, **extra)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Bundled files
# ---------------------------------------------------------------------------------------------
def test_bundled_feedbacks_load_and_are_shaped_as_promised():
    feedbacks = load_feedbacks(BUNDLED_FEEDBACKS)
    assert len(feedbacks) == 8
    kinds = [fb.type for fb in feedbacks]
    assert kinds.count("qualitative") == 4 and kinds.count("quantitative") == 4
    assert kinds[0] == "qualitative" and kinds[1] == "quantitative"
    assert {fb.scope for fb in feedbacks} == {"regional"}
    metrics = [fb.metric for fb in feedbacks if fb.is_quantitative]
    assert len(set(metrics)) == 4, "the quantitative examples should cover different metrics"
    assert all(fb.name and fb.name == fb.slug for fb in feedbacks)


def test_bundled_quantitative_feedbacks_measure_what_they_say():
    by_name = {fb.name: fb for fb in load_feedbacks(BUNDLED_FEEDBACKS)}
    recipe = by_name["bon-appetit-recipes"]
    assert measure(recipe, "Stir and serve hot.\n\n**Bon appétit!**\n") == 1.0
    assert measure(recipe, "Stir and serve hot. Enjoy!") == 0.0
    emoji = by_name["emoji-texts-to-friends"]
    assert measure(emoji, "See you at 8 🎉") == 1.0 and measure(emoji, "See you at 8") == 0.0
    travel = by_name["short-travel-answers"]
    assert compare(travel, measure(travel, "word " * 120), measure(travel, "word " * 60)) == "better"
    books = by_name["no-prices-book-recs"]
    assert measure(books, "Try Dune; it costs $9.99 in paperback.") == 0.0
    assert measure(books, "The hardcover is priced at 25 euros.") == 0.0
    assert measure(books, "Try Dune by Frank Herbert, a classic of 1965.") == 1.0


def test_bundled_general_prompts_are_80_distinct_first_human_turns():
    prompts = load_general_prompts(BUNDLED_GENERAL_PROMPTS)
    assert len(prompts) == 80 == len(set(prompts))
    assert not any("<bot>" in p or "<human>" in p for p in prompts)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5) == load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5, seed=1) != load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5)
    assert load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=5) == prompts[:5]


# ---------------------------------------------------------------------------------------------
# General prompts loader
# ---------------------------------------------------------------------------------------------
def test_general_prompts_formats_dedupe_and_shuffle(tmp_path):
    oig = tmp_path / "chip.jsonl"
    oig.write_text("\n".join([
        json.dumps({"text": "<human>: What is 2+2?\n<bot>: 4\n<human>: and 3+3?\n<bot>: 6"}),
        "",
        json.dumps({"text": "<human>:   What is 2+2?  \n<bot>: four"}),  # duplicate once stripped
        json.dumps({"text": "<human>: \n<bot>: nothing asked"}),  # empty prompt: dropped
        json.dumps({"prompt": "Name a prime."}),
        json.dumps({"instruction": "Summarize the text.", "input": "It rained all day."}),
    ]), encoding="utf-8")
    prompts = load_general_prompts(oig, seed=0)
    assert sorted(prompts) == ["Name a prime.", "Summarize the text.\n\nIt rained all day.", "What is 2+2?"]
    txt = tmp_path / "p.txt"
    txt.write_text("a\n\nb\na\nc\n", encoding="utf-8")
    assert sorted(load_general_prompts(txt)) == ["a", "b", "c"]
    assert len(load_general_prompts(txt, n=2)) == 2
    assert load_general_prompts(txt, n=0) == []


@pytest.mark.parametrize("line,needle", [
    ("{not json", "line 2: not valid JSON"),
    ('{"text": "no speaker tags"}', "line 2: field 'text' has no '<human>:' turn"),
    ('{"question": "x"}', "line 2: no 'prompt', 'instruction' or 'text' field"),
    ('{"prompt": 3}', "line 2: field 'prompt' must be a string"),
    ('[1, 2]', "line 2: expected a JSON object"),
])
def test_general_prompts_errors_name_file_and_line(tmp_path, line, needle):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(GeneralPromptsError, match="bad.jsonl") as info:
        load_general_prompts(path)
    assert needle in str(info.value)


def test_general_prompts_rejects_unknown_suffix_and_missing_file(tmp_path):
    with pytest.raises(GeneralPromptsError, match="no such file"):
        load_general_prompts(tmp_path / "absent.jsonl")
    csv = tmp_path / "p.csv"
    csv.write_text("a\n", encoding="utf-8")
    with pytest.raises(GeneralPromptsError, match="expected a .jsonl"):
        load_general_prompts(csv)
    with pytest.raises(ValueError):
        load_general_prompts(BUNDLED_GENERAL_PROMPTS, n=-1)


# ---------------------------------------------------------------------------------------------
# The record: id, slug, validation
# ---------------------------------------------------------------------------------------------
def test_id_is_stable_and_depends_on_content_domain_effect_only():
    a = Feedback(**BASE)
    assert a.id == Feedback(**BASE, name="other-name", scope="local").id
    import uuid
    assert uuid.UUID(a.id).version == 5
    assert a.id != Feedback(**{**BASE, "effect": "use more emojis"}).id
    # the separator keeps field boundaries: moving text between fields changes the id
    assert Feedback(content="ab", domain="c", effect="e").id != Feedback(content="a", domain="bc", effect="e").id


def test_id_value_is_pinned():
    # Changing the namespace or the derivation would silently orphan every stored dataset.
    assert Feedback(content="x", domain="y", effect="z").id == "b642a5f6-0a02-5535-9488-fc17c1f50857"


def test_name_defaults_to_slug_of_content_and_slug_is_filesystem_safe():
    fb = Feedback(content="Always end recipes with 'Bon appétit!' — please", domain="d", effect="e")
    assert fb.name == fb.slug == "always-end-recipes-with-bon-appetit-please"
    long = Feedback(content="word " * 40, domain="d", effect="e")
    assert len(long.slug) <= 60 and not long.slug.endswith("-")
    assert Feedback(**BASE, name="My Name!").slug == "my-name"
    assert Feedback(content="😀😀", domain="d", effect="e").name.startswith("feedback-")
    assert slugify("Hello,   World") == "hello-world"


@pytest.mark.parametrize("kwargs,field", [
    ({"content": " "}, "content"),
    ({"domain": 3}, "domain"),
    ({"scope": "regionl"}, "scope"),
    ({"type": "quant"}, "type"),
    ({"metric": "length"}, "metric"),  # qualitative with a metric
    ({"comparison": "less_eq_than"}, "comparison"),
    ({"metric_value": 3}, "metric_value"),
    ({"name": "!!!"}, "name"),
])
def test_qualitative_validation_names_the_field(kwargs, field):
    with pytest.raises(FeedbackError) as info:
        Feedback(**{**BASE, **kwargs})
    assert info.value.field == field and repr(field) in str(info.value)


@pytest.mark.parametrize("metric,value,comparison,field,needle", [
    (None, None, "greater_eq_than", "metric", "needs a metric"),
    ("lenght", None, "less_eq_than", "metric", "unknown metric 'lenght'"),
    ("length", None, None, "comparison", "needs one of"),
    ("length", None, "greater_than", "comparison", "needs one of"),
    ("length", 80, "less_eq_than", "metric_value", "takes no value"),
    ("contains_any_strings", "😀", "greater_eq_than", "metric_value", "list of strings"),
    ("contains_all_strings", [], "greater_eq_than", "metric_value", "non-empty list"),
    ("contains_none_strings", ["ok", ""], "greater_eq_than", "metric_value", "non-empty strings"),
    ("regex_search", "([a-z", "greater_eq_than", "metric_value", "invalid regular expression"),
    ("starts_with", None, "greater_eq_than", "metric_value", "non-empty string"),
    ("ends_with_cleaned", "'\")", "greater_eq_than", "metric_value", "empty once closing"),
    (["starts_with", "length"], ["Hi", None], "greater_eq_than", "metric[1]", "numeric"),
    (["starts_with", "ends_with"], ["Hi"], "greater_eq_than", "metric_value", "list of 2 values"),
    (["starts_with", "nope"], ["Hi", None], "greater_eq_than", "metric[1]", "unknown metric"),
    (["starts_with", "ends_with"], ["Hi", 5], "greater_eq_than", "metric_value[1]", "non-empty string"),
    ([], [], "greater_eq_than", "metric", "non-empty list"),
])
def test_quantitative_validation_names_the_field(metric, value, comparison, field, needle):
    with pytest.raises(FeedbackError) as info:
        quantitative(metric, value, comparison)
    assert info.value.field == field
    assert needle in str(info.value)


def test_lists_become_tuples_and_round_trip_through_to_dict():
    fb = quantitative(["starts_with", "contains_any_strings"], ["Hey", ["😀", "🎉"]])
    assert fb.metric == ("starts_with", "contains_any_strings")
    assert fb.metric_value == ("Hey", ("😀", "🎉"))
    hash(fb)  # usable as a dict key
    data = fb.to_dict()
    assert data["metric_value"] == ["Hey", ["😀", "🎉"]]
    assert Feedback.from_dict(json.loads(json.dumps(data))) == fb


# ---------------------------------------------------------------------------------------------
# Loading files
# ---------------------------------------------------------------------------------------------
def test_load_json_object_list_jsonl_and_directory(tmp_path):
    one = write_json(tmp_path / "b_one.json", {**BASE, "name": "one"})
    many = write_json(tmp_path / "a_many.json", [{**BASE, "content": "x", "name": "two"},
                                                 {**BASE, "content": "y", "name": "three"}])
    lines = tmp_path / "c_lines.jsonl"
    lines.write_text(json.dumps({**BASE, "content": "z", "name": "four"}) + "\n\n", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("ignored", encoding="utf-8")
    assert [fb.name for fb in load_feedbacks(tmp_path)] == ["two", "three", "one", "four"]
    assert [fb.name for fb in load_feedbacks([one, str(many)])] == ["one", "two", "three"]
    assert [fb.name for fb in load_feedbacks(str(lines))] == ["four"]


@pytest.mark.parametrize("entries,needles", [
    ([{**BASE}, {**BASE, "content": "b", "metirc": "length"}], ["entry 1", "field 'metirc'", "unknown key"]),
    ([{**BASE, "name": "ok"}, {"content": "b", "domain": "d"}], ["entry 1", "field 'effect'", "is required"]),
    ([{**BASE, "name": "good"}, {**BASE, "content": "b", "name": "bad", "type": "quantitative",
                                 "metric": "length", "comparison": "up"}], ["entry 1 ('bad')", "field 'comparison'"]),
    ([{**BASE, "name": "a"}, {**BASE, "name": "b"}], ["entry 1 ('b')", "same content, domain and effect", "entry 0"]),
    ([{**BASE, "name": "Same"}, {**BASE, "content": "other", "name": "same"}], ["entry 1", "slug 'same'"]),
    ([{**BASE}, "just a string"], ["entry 1", "must be a JSON object"]),
])
def test_load_errors_name_file_entry_and_field(tmp_path, entries, needles):
    path = write_json(tmp_path / "feedbacks.json", entries)
    with pytest.raises(FeedbackError) as info:
        load_feedbacks(path)
    message = str(info.value)
    assert "feedbacks.json" in message
    for needle in needles:
        assert needle in message


def test_load_errors_for_files(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps(BASE) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(FeedbackError, match=r"broken.jsonl: line 2: not valid JSON"):
        load_feedbacks(bad)
    with pytest.raises(FeedbackError, match="no such file"):
        load_feedbacks(tmp_path / "absent.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FeedbackError, match="no .json or .jsonl"):
        load_feedbacks(tmp_path / "empty")
    write_json(tmp_path / "none.json", [])
    with pytest.raises(FeedbackError, match="no feedback found"):
        load_feedbacks(tmp_path / "none.json")
    yaml = tmp_path / "f.yaml"
    yaml.write_text("x", encoding="utf-8")
    with pytest.raises(FeedbackError, match="expected a .json or .jsonl"):
        load_feedbacks(yaml)


def test_duplicates_across_files_are_reported(tmp_path):
    write_json(tmp_path / "a.json", {**BASE, "name": "first"})
    write_json(tmp_path / "b.json", {**BASE, "name": "second"})
    with pytest.raises(FeedbackError, match=r"b.json: entry 0 \('second'\).*same content.*a.json"):
        load_feedbacks(tmp_path)


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------
def test_select_by_name_slug_or_content_prefix_case_insensitively():
    feedbacks = load_feedbacks(BUNDLED_FEEDBACKS)
    assert select_feedbacks(feedbacks, None) == feedbacks == select_feedbacks(feedbacks, "")
    assert [fb.name for fb in select_feedbacks(feedbacks, "CONCISE")] == ["concise-boss-emails"]
    assert [fb.name for fb in select_feedbacks(feedbacks, "never mention")] == ["no-prices-book-recs"]
    assert {fb.name for fb in select_feedbacks(feedbacks, "p")} == {"physics-analogies", "plain-legal-explanations"}
    with pytest.raises(FeedbackError, match="available: concise-boss-emails, bon-appetit-recipes"):
        select_feedbacks(feedbacks, "zzz")


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
    with pytest.raises(FeedbackError, match="qualitative"):
        measure(fb, "x")
    with pytest.raises(FeedbackError, match="qualitative"):
        compare(fb, 0.0, 1.0)


def test_is_language_without_langdetect_fails_at_load(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "langdetect", None)  # makes `import langdetect` raise ImportError
    with pytest.raises(FeedbackError, match="pip install langdetect") as info:
        quantitative("is_language", "fr")
    assert info.value.field == "metric"
    path = write_json(tmp_path / "lang.json", {**BASE, "type": "quantitative", "metric": "is_language",
                                               "metric_value": "fr", "comparison": "greater_eq_than"})
    with pytest.raises(FeedbackError, match=r"lang.json: entry 0: field 'metric': .*pip install langdetect"):
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
    with pytest.raises(FeedbackError, match="ISO 639-1"):
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
