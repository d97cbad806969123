"""C3PO feedback records (verlkit.c3po.feedback): the bundled file, the record's id, slug and
validation, loading files (every problem an InputError naming file, entry and field), selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verlkit.c3po.feedback import Feedback, load_feedbacks, select_feedbacks, slugify
from verlkit.c3po.general_prompts import BUNDLED_FEEDBACKS
from verlkit.c3po.metrics import compare, measure
from verlkit.records import InputError

BASE = {"content": "Use emojis when texting friends", "domain": "texting a friend", "effect": "use emojis"}


def quantitative(metric, value=None, comparison="greater_eq_than", **extra) -> Feedback:
    return Feedback(**BASE, type="quantitative", metric=metric, metric_value=value, comparison=comparison, **extra)


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# The bundled file
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
    with pytest.raises(InputError) as info:
        Feedback(**{**BASE, **kwargs})
    assert info.value.field == field and str(info.value).startswith(f"{field}: ")


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
    with pytest.raises(InputError) as info:
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
    ([{**BASE}, {**BASE, "content": "b", "metirc": "length"}], ["record 1", "metirc: unknown key"]),
    ([{**BASE, "name": "ok"}, {"content": "b", "domain": "d"}], ["record 1", "effect: is required"]),
    ([{**BASE, "name": "good"}, {**BASE, "content": "b", "name": "bad", "type": "quantitative",
                                 "metric": "length", "comparison": "up"}],
     ["record 1 ('bad')", "comparison: quantitative feedback needs one of"]),
    ([{**BASE, "name": "a"}, {**BASE, "name": "b"}],
     ["record 1 ('b')", "content: same content, domain and effect", "record 0 ('a')"]),
    ([{**BASE, "name": "Same"}, {**BASE, "content": "other", "name": "same"}],
     ["record 1 ('same')", "name: same slug 'same'"]),
    ([{**BASE}, "just a string"], ["record 1", "expected a JSON object"]),
])
def test_load_errors_name_file_entry_and_field(tmp_path, entries, needles):
    path = write_json(tmp_path / "feedbacks.json", entries)
    with pytest.raises(InputError) as info:
        load_feedbacks(path)
    message = str(info.value)
    assert "feedbacks.json" in message
    for needle in needles:
        assert needle in message


def test_load_errors_for_files(tmp_path):
    bad = tmp_path / "broken.jsonl"
    bad.write_text(json.dumps(BASE) + "\n{oops\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"broken.jsonl: line 2: not valid JSON"):
        load_feedbacks(bad)
    with pytest.raises(InputError, match="no such file"):
        load_feedbacks(tmp_path / "absent.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .json or .jsonl"):
        load_feedbacks(tmp_path / "empty")
    write_json(tmp_path / "none.json", [])
    with pytest.raises(InputError, match="no feedback found"):
        load_feedbacks(tmp_path / "none.json")
    yaml = tmp_path / "f.yaml"
    yaml.write_text("x", encoding="utf-8")
    with pytest.raises(InputError, match="expected a .json or .jsonl"):
        load_feedbacks(yaml)


def test_duplicates_across_files_are_reported(tmp_path):
    write_json(tmp_path / "a.json", {**BASE, "name": "first"})
    write_json(tmp_path / "b.json", {**BASE, "name": "second"})
    expected = r"b.json: record 0 \('second'\): content: same content.*a.json: record 0 \('first'\)"
    with pytest.raises(InputError, match=expected):
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
    with pytest.raises(InputError, match="available: concise-boss-emails, bon-appetit-recipes"):
        select_feedbacks(feedbacks, "zzz")



def test_select_by_category_scope_and_type_all_must_hold():
    feedbacks = load_feedbacks(BUNDLED_FEEDBACKS)
    assert [fb.name for fb in select_feedbacks(feedbacks, None, "quantitative")] == [
        "bon-appetit-recipes", "emoji-texts-to-friends", "short-travel-answers", "no-prices-book-recs"]
    assert [fb.name for fb in select_feedbacks(feedbacks, "p", "Qualitative, regional")] == [
        "physics-analogies", "plain-legal-explanations"]
    assert len(select_feedbacks(feedbacks, "", "regional")) == 8
    with pytest.raises(InputError, match="no feedback is in category 'local'"):
        select_feedbacks(feedbacks, None, "local")
    with pytest.raises(InputError, match="unknown feedback category 'emails'"):
        select_feedbacks(feedbacks, None, "emails")
    # the prefix applies within the category
    with pytest.raises(InputError, match="no feedback's name or content starts with 'concise'"):
        select_feedbacks(feedbacks, "concise", "quantitative")


def test_select_names_keeps_the_given_order():
    from verlkit.c3po.feedback import select_names

    feedbacks = load_feedbacks(BUNDLED_FEEDBACKS)
    names = [fb.name for fb in select_names(feedbacks, ["bon-appetit-recipes", "concise-boss-emails"])]
    assert names == ["bon-appetit-recipes", "concise-boss-emails"]
    with pytest.raises(InputError, match="no feedback named 'nope'"):
        select_names(feedbacks, ["nope"])
