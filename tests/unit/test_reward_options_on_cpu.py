"""The typed options contract: every reward module declares its options as one model, parsed from the
raw ``**options`` the registry passes (values may be strings from hydra or the env JSON)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from verl.utils.reward_score import calibration, grade, gsm8k_exact, math_rule, registry, rlcr, routing, scalar_rm, tinyv
from verl.utils.reward_score.options import RewardOptions, RewardOptionsError, parse_options

REWARD_FOLDER = Path(__file__).resolve().parents[2] / "verl" / "utils" / "reward_score"

# (options model, the least a valid mapping needs, an option given a value of the wrong type)
MODELS = [
    (gsm8k_exact.GSM8KOptions, {}, ("score", "full marks")),
    (grade.GradeOptions, {}, ("acc_tolerance", "loose")),
    (tinyv.TinyVOptions, {"model": "m"}, ("max_concurrency", "many")),
    (calibration.CGPOptions, {"url": "http://127.0.0.1:1/v1", "model": "m"}, ("seed", "lucky")),
    (rlcr.RLCROptions, {}, ("rule_timeout_s", "a while")),
    (math_rule.MathRuleOptions, {}, ("on_rule_failure", "shrug")),
    (scalar_rm.ScalarRMOptions, {"url": "http://127.0.0.1:1/v1", "tokenizer": "/rm"}, ("timeout_s", "soon")),
]


@pytest.mark.parametrize("model, minimal, wrong", MODELS, ids=lambda m: getattr(m, "reward_name", ""))
def test_unknown_option_is_rejected_naming_reward_and_option(model, minimal, wrong):
    with pytest.raises(RewardOptionsError) as raised:
        parse_options(model, {**minimal, "no_such_option": 1})
    assert str(raised.value).startswith(f"{model.reward_name}: unknown option 'no_such_option' (known: ")


@pytest.mark.parametrize("model, minimal, wrong", [m for m in MODELS if m[2]], ids=lambda m: getattr(m, "reward_name", ""))
def test_wrong_type_is_rejected_naming_reward_and_option(model, minimal, wrong):
    name, value = wrong
    with pytest.raises(RewardOptionsError) as raised:
        parse_options(model, {**minimal, name: value})
    assert str(raised.value).startswith(f"{model.reward_name}: option {name!r}={value!r}: ")


def test_every_registered_reward_of_ours_declares_one_options_model():
    declared = {m.reward_name: m for m, _, _ in MODELS}
    assert set(declared) == {spec.name for spec in registry.REWARDS}
    assert routing.RoutingOptions.reward_name not in declared  # a reserved namespace, not a reward
    for model in declared.values():
        assert issubclass(model, RewardOptions)


@pytest.mark.parametrize("model, raw, expected", [
    (tinyv.TinyVOptions, {"model": "m", "max_concurrency": "64", "is_think_model": "true", "weight": "0.5"},
     {"max_concurrency": 64, "is_think_model": True, "weight": 0.5}),
    (tinyv.TinyVOptions, {"model": "m", "is_think_model": "0", "timeout_s": 120}, {"is_think_model": False, "timeout_s": 120.0}),
    (calibration.CGPOptions, {"url": "http://h:1/v1", "model": "m", "seed": "7", "rate_limit_rps": "2.5"},
     {"seed": 7, "rate_limit_rps": 2.5}),
    (scalar_rm.ScalarRMOptions, {"url": "http://h:1/v1", "tokenizer": "/rm", "max_retries": "0", "on_failure": "-1"},
     {"max_retries": 0, "on_failure": -1.0}),
    (grade.GradeOptions, {"acc_tolerance": "0.25"}, {"acc_tolerance": 0.25}),
    (gsm8k_exact.GSM8KOptions, {"score": "2", "method": "flexible"}, {"score": 2.0, "method": "flexible"}),
])
def test_strings_from_hydra_or_env_are_coerced(model, raw, expected):
    opts = parse_options(model, raw)
    assert {k: getattr(opts, k) for k in expected} == expected
    for key, value in expected.items():
        assert type(getattr(opts, key)) is type(value)


def test_a_served_model_name_that_looks_like_a_number_stays_a_name():
    assert parse_options(tinyv.TinyVOptions, {"model": 7}).model == "7"


def test_parsed_options_are_cached_per_distinct_mapping_and_frozen():
    first = parse_options(grade.GradeOptions, {"acc_tolerance": 0.3})
    assert parse_options(grade.GradeOptions, {"acc_tolerance": 0.3}) is first
    assert parse_options(grade.GradeOptions, {"acc_tolerance": 0.2}).acc_tolerance == 0.2
    with pytest.raises(ValueError):
        first.acc_tolerance = 0.9  # a cached model is shared by every later call: it must not change


def test_unhashable_values_are_parsed_too():
    class Listed(RewardOptions):
        weights: list[float] = []

    assert parse_options(Listed, {"weights": ["1", 2]}).weights == [1.0, 2.0]
    assert parse_options(Listed, {"weights": ["1", 2]}).weights == [1.0, 2.0]


def test_env_defaults_are_part_of_the_cache_key(monkeypatch):
    monkeypatch.setenv(tinyv.MODEL_ENV, "first")
    assert parse_options(tinyv.TinyVOptions, {}).model == "first"
    monkeypatch.setenv(tinyv.MODEL_ENV, "second")
    assert parse_options(tinyv.TinyVOptions, {}).model == "second"


def test_several_problems_are_reported_together():
    with pytest.raises(RewardOptionsError) as raised:
        parse_options(tinyv.TinyVOptions, {"model": "m", "setup": "both", "max_retries": -1})
    assert str(raised.value) == (  # in the order the fields are declared
        "tinyv: option 'max_retries'=-1: Input should be greater than or equal to 0; "
        "option 'setup'='both': Input should be 'tinyv_only', 'addon', 'mixed' or 'hybrid'"
    )


@pytest.mark.parametrize("data_source, namespace", [("openai/gsm8k", "gsm8k"), ("grade", "grade"),
                                                    ("medmcqa_rlcr", "rlcr")])
def test_bad_options_stop_the_run_through_the_registry(data_source, namespace):
    with pytest.raises(RewardOptionsError, match=rf"^{namespace}: unknown option 'bogus'"):
        registry.compute_score(data_source, "#### 1", "1", {}, **{namespace: {"bogus": 1}})


def test_a_plain_function_with_keyword_defaults_still_takes_its_options():
    """The README's example: no options model, the registry passes the options as keyword arguments."""

    def units(data_source, solution_str, ground_truth, extra_info=None, unit_weight=0.5):
        value, _, unit = ground_truth.partition(" ")
        has_value = value in solution_str
        has_unit = solution_str.rstrip().endswith(unit)
        score = (1 - unit_weight) * has_value + unit_weight * (has_value and has_unit)
        return {"score": score, "acc": float(has_value and has_unit), "unit_ok": float(has_unit)}

    spec = registry.register_reward(registry.RewardSpec("units", units, exact=("acme/units",), metrics=("unit_ok",)))
    try:
        assert registry.compute_score("acme/units", "it is 3", "3 m")["score"] == 0.5
        out = registry.compute_score("acme/units", "it is 3", "3 m", units={"unit_weight": 0.25})
        assert out["score"] == 0.75 and out["unit_ok"] == 0.0
    finally:
        registry.REWARDS.remove(spec)


# ---------------------------------------------------------------------------------------------- layering
_ALLOWED_OURS = ("verlkit.clients", "verlkit.records", "verlkit.templates", "verl.utils.reward_score")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", sorted(p for p in REWARD_FOLDER.glob("*.py") if p.name != "registry.py"),
                         ids=lambda p: p.name)
def test_reward_modules_import_only_below_the_registry(path):
    imported = _imports(path)
    ours = {n for n in imported if n.split(".")[0] in ("verlkit", "recipes", "data_prep")}
    assert {n for n in ours if not n.startswith(_ALLOWED_OURS)} == set()
    assert not any(n.startswith("verl.utils.reward_score.registry") for n in imported)
