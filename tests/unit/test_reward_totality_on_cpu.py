"""Totality of every reward module at scale (slow tier): 10^5 generated hostile inputs per module
(``support.adversarial``: empty, huge, binary, unicode, adversarial formats, wrong types), each scored
the way verl calls it (``registry.compute_score``). For every row:

* it never raises (and returns exactly the registry's result keys, as floats);
* the score is finite and inside the module's range;
* every zero that comes from a failure carries its flag: a reward function that raises (injected on
  ~1 % of rows) gives ``reward_error = 1``; a model call that failed gives the module's failure flag
  (``verifier_failed`` / ``downstream_ok = 0`` / ``rm_failed``); a zero with no flag has its witness
  (the verifier/downstream model/reward model answered and was parsed, an RRM score whose distance
  to the reference is 1, ...).

Model-scored modules (tinyv, cgp, scalar_rm) are driven by a SCRIPTED client in this process (a
seeded mix of well-formed replies, hostile reply texts and failed calls, ~10 % failures): 10^5 HTTP
round trips would take far longer than the checks themselves. The math answer check (tinyv's rule
check, rlcr's math answers) is scripted here too (its real worker pool costs ~ms per call and up to
its timeout on pathological answers); the same properties over the real HTTP client, a fault-injecting
fake server and the real rule-check pool run on a smaller sample in
tests/integration/test_reward_totality_http.py. ``VERLKIT_TOTALITY_N`` changes the sample size.
"""

from __future__ import annotations

import math
import os
import random

import pytest
from support import adversarial as adv

from verl.utils.reward_score import calibration, registry, scalar_rm, tinyv
from verlkit.clients import rule_check
from verlkit.clients.llm import Completion

pytestmark = pytest.mark.slow

N = int(os.environ.get("VERLKIT_TOTALITY_N", "100000"))
INJECTED_RAISE = 0.01
FAILED_CALL = 0.10
CGP_LOG_FLOOR = math.log(1e-12)  # the unparseable sentinel, the lowest score of the log variants
RANGES = {
    "gsm8k": (0.0, 1.0), "grade": (0.0, 1.0), "tinyv": (0.0, 1.0), "rlcr": (0.0, 1.5),
    "cgp/log": (CGP_LOG_FLOOR, 0.0), "cgp/log_penalized": (CGP_LOG_FLOOR, 0.0), "cgp/brier": (-1.0, 1.0),
    "scalar_rm": (-1e6, 1e6),
}  # fmt: skip


class ScriptedClient:
    """Stands in for ``get_client(...)``: answers what the test scripted for the current row."""

    def __init__(self):
        self.ok, self.text, self.value, self.calls = True, "", 0.0, 0

    def _done(self) -> Completion:
        self.calls += 1
        if not self.ok:
            return Completion(None, False, "gave up after 3 attempt(s): timeout (scripted)", False, 1.0, 3)
        return Completion(self.text, True, None, False, 0.01, 1)

    async def chat(self, messages, **kw):
        assert isinstance(messages[0]["content"], str)
        return self._done()

    async def classify(self, ids):
        assert all(isinstance(t, int) for t in ids)
        done = self._done()
        if done.ok:
            done.text, done.value = repr(self.value), self.value
        return done


def _scripted_rule(rng: random.Random):
    def check(solution_str, ground_truth, timeout_s=rule_check.DEFAULT_TIMEOUT_S):
        assert isinstance(solution_str, str) and isinstance(ground_truth, str) and timeout_s > 0
        roll = rng.random()
        if roll < 0.05:
            return rule_check.RuleResult(False, None, True, f"killed after {timeout_s}s")
        return rule_check.RuleResult(roll < 0.4, rng.choice((None, "4", adv.text(rng)[:50])), False)

    async def check_async(solution_str, ground_truth, timeout_s=rule_check.DEFAULT_TIMEOUT_S):
        return check(solution_str, ground_truth, timeout_s)

    return check, check_async


# ---- one generated row per module: (data_source, solution, ground truth, extra_info, options, range key)


def row_gsm8k(rng):
    gt = adv.value(rng, ("72", "1,000", "-3", "0"))
    sol = adv.text(rng) + rng.choice(("", f"#### {gt}", "#### 72", "####"))
    return "openai/gsm8k", sol, gt, None, {}, "gsm8k"


def row_grade(rng):
    gt = rng.choice((rng.random(), 0.0, 1.0, 0.7, -0.1, 1.5, "nan", "0.3", None, adv.text(rng)))
    sol = adv.text(rng) + rng.choice(("", f"\nTotal Score: {rng.randint(-3, 13)}/10", "Total Score: 7"))
    return "grade", sol, gt, None, {}, "grade"


def row_tinyv(rng):
    info = adv.extra_info(rng, {"question": ("What is 2+2?",), "criteria": ("Award 10 points for 4.",)})
    opts = {"url": "http://127.0.0.1:9/v1", "model": "v", "template": rng.choice(tinyv.TEMPLATES),
            "setup": rng.choice(tinyv.SETUPS), "weight": rng.random(), "on_failure": rng.choice(("rule", "zero")),
            "is_think_model": rng.random() < 0.2}  # fmt: skip
    return "polaris_tinyv", adv.value(rng, ("\\boxed{4}",)), adv.value(rng, ("4",)), info, {"tinyv": opts}, "tinyv"


def row_cgp(rng):
    info = adv.extra_info(rng, {"question": ("Which drug?",)})
    if isinstance(info, dict) and rng.random() < 0.9:
        info["options"] = adv.options(rng)
    variant = rng.choice(calibration.VARIANTS)
    on_failure = rng.choice(("neutral", "unparseable", "raise", -1.0, 0.0))
    opts = {"url": "http://127.0.0.1:9/v1", "model": "d", "variant": variant, "on_failure": on_failure}
    gt = adv.value(rng, ("1", "2", 3, "4.0"))
    return "medmcqa_cgp", adv.value(rng, ("Think about the mechanism.",)), gt, info, {"cgp": opts}, f"cgp/{variant}"


def row_rlcr(rng):
    info = adv.extra_info(rng, {"answer_type": ("math", "mcq", None)})
    if isinstance(info, dict) and rng.random() < 0.5:
        info["options"] = adv.options(rng)
    inner = (adv.text(rng)[:300], rng.choice(adv.NUMBERS + ("2", "B")), adv.text(rng)[:100], rng.choice(adv.NUMBERS))
    sol = rng.choice((adv.value(rng), "<think>{}</think><answer>{}</answer><analysis>{}</analysis><confidence>{}</confidence>".format(*inner)))
    return "medmcqa_rlcr", sol, adv.value(rng, ("2", "x^2", "Paris")), info, {}, "rlcr"


def row_scalar_rm(rng, tokenizer_dir):
    messages = rng.choice(([{"role": "user", "content": adv.text(rng)[:2000]}], [], None, "hi", [{"role": "user"}],
                           [{"role": 1, "content": b"x"}], [None]))  # fmt: skip
    info = {"prompt_messages": messages} if rng.random() < 0.95 else adv.extra_info(rng, {})
    on_failure = rng.choice((0.0, -1.0, "raise"))
    opts = {"url": "http://127.0.0.1:9/v1", "tokenizer": str(tokenizer_dir), "on_failure": on_failure}
    sol = adv.value(rng, ("A helpful answer.",))
    if isinstance(sol, str):
        sol = sol[:2000]  # the tiny tokenizer's chat template is slow on 60k-character turns
    return "ultrafeedback", sol, None, info, {"scalar_rm": opts}, "scalar_rm"


ROWS = {"gsm8k": row_gsm8k, "grade": row_grade, "tinyv": row_tinyv, "cgp": row_cgp, "rlcr": row_rlcr,
        "scalar_rm": row_scalar_rm}  # fmt: skip
FAILURE_FLAG = {"tinyv": ("verifier_failed", 1.0), "cgp": ("downstream_ok", 0.0), "scalar_rm": ("rm_failed", 1.0)}


def problems(module: str, range_key: str, out: dict, called: bool, call_ok: bool, raised: bool, gt, value) -> list[str]:
    """What is wrong with one result (empty: nothing). Witnesses are checked by hand-written rules."""
    found = []
    if sorted(out) != sorted(registry.result_keys()) or not all(type(v) is float for v in out.values()):
        found.append("result keys or types differ from the registry's schema")
    score, lo_hi = out["score"], RANGES[range_key]
    if not (math.isfinite(score) and lo_hi[0] - 1e-9 <= score <= lo_hi[1] + 1e-9):
        found.append(f"score {score} outside {lo_hi}")
    if raised and not (out["reward_error"] == 1.0 and score == 0.0):
        found.append("an exception inside the reward did not give reward_error=1, score 0")
    flag = FAILURE_FLAG.get(module)
    if flag and called and not call_ok and out["reward_error"] != 1.0 and out[flag[0]] != flag[1]:
        found.append(f"a failed model call without {flag[0]}={flag[1]}")
    if score == 0.0 and out["reward_error"] != 1.0:
        if module == "tinyv" and out["verifier_failed"] != 1.0 and out["verifier_ok"] != 1.0:
            found.append("a zero with neither verifier_failed nor an answered verifier")
        if module == "grade" and out["parse_ok"] != 0.0 and abs(out["grade_pred"] - float(gt)) < 1 - 1e-9:
            found.append("a zero with a parsed grade that is not 1 away from the reference")
        if module == "cgp" and not (out["downstream_ok"] == 0.0 or out["parse_ok"] == 1.0):
            found.append("a zero with neither downstream_ok=0 nor a parsed reply")
        if module == "rlcr" and out["format_ok"] != 0.0:
            found.append("a zero with format_ok=1 (a well-formed reply scores at least 0.5)")
        if module == "scalar_rm" and out["rm_failed"] != 1.0 and not (out["rm_ok"] == 1.0 and value == 0.0):
            found.append("a zero with neither rm_failed nor a reward model that said 0")
    return found


@pytest.mark.parametrize("module", sorted(ROWS))
def test_reward_module_is_total_on_hostile_inputs(module, monkeypatch, tiny_model_dir):
    rng = random.Random(f"totality-{module}")
    client = ScriptedClient()
    for mod in (tinyv, calibration, scalar_rm):
        monkeypatch.setattr(mod, "get_client", lambda config: client)
    check, check_async = _scripted_rule(random.Random(f"rule-{module}"))
    monkeypatch.setattr(rule_check, "check", check)
    monkeypatch.setattr(rule_check, "check_async", check_async)
    spec = registry.resolve(ROWS[module](random.Random(0), tiny_model_dir)[0] if module == "scalar_rm"
                            else ROWS[module](random.Random(0))[0])  # fmt: skip
    real = spec.function()
    inject = {"raise": False}

    def maybe_raising(*args, **kwargs):
        if inject["raise"]:
            raise RuntimeError("injected failure inside the reward function")
        return real(*args, **kwargs)

    monkeypatch.setitem(spec._loaded, "function", maybe_raising)
    failures, zeros, flagged_zeros = [], 0, 0
    for i in range(N):
        args = ROWS[module](rng, tiny_model_dir) if module == "scalar_rm" else ROWS[module](rng)
        source, solution, gt, info, options, range_key = args
        inject["raise"] = rng.random() < INJECTED_RAISE
        client.ok = rng.random() >= FAILED_CALL
        client.text = rng.choice(("True", "False", "Total Score: 7/10", "the answer is 2 with confidence 80",
                                  adv.text(rng), ""))  # fmt: skip
        client.value = rng.choice((0.0, 1.5, -2.25, rng.uniform(-50, 50)))
        calls_before = client.calls
        try:
            out = registry.compute_score(source, solution, gt, info, **options)
        except Exception as e:  # the property under test: never raises
            failures.append((i, repr(e)[:200], repr(solution)[:120]))
            continue
        called = client.calls > calls_before
        found = problems(module, range_key, out, called, client.ok, inject["raise"], gt, client.value)
        if found:
            failures.append((i, found, repr(solution)[:120], {k: v for k, v in out.items() if not math.isnan(v)}))
        if out["score"] == 0.0:
            zeros += 1
            flagged_zeros += out["reward_error"] == 1.0 or any(out.get(k) == v for k, v in FAILURE_FLAG.values())
    assert not failures, f"{len(failures)} of {N} rows broke a property; first ones (row index, ...):\n" + "\n".join(
        map(str, failures[:5]))
    assert zeros > 0 and flagged_zeros > 0, "the sample never reached a flagged zero: the generator is too tame"
