"""Prompt templates as data (verlkit.templates): the file format, the placeholder check, rendering,
and our built-in wordings, which must send exactly what the rewards sent before they became files."""

from __future__ import annotations

import json

import pytest

from verlkit.templates import PLACEHOLDERS, TemplateError, builtin_names, builtin_template, load_template

from support.prompt_texts import CGP_OPTIONS, CGP_PROMPT, RUBRIC_PROMPT, TINYV_PROMPT


def test_builtin_wordings_are_byte_identical_to_the_prompts_we_send():
    assert builtin_names() == ["cgp_downstream", "cgp_downstream_baseline", "rubric", "tinyv"]
    tinyv = builtin_template("tinyv").render(question="What is 1/2?", reference_answer="0.5",
                                             extracted_answer="\\frac{1}{2}")
    assert tinyv == [{"role": "user", "content": TINYV_PROMPT}]
    rubric = builtin_template("rubric").render(question="What is 1/2?", criteria="10 points: 0.5.",
                                               response="It is \\boxed{0.5}.")
    assert rubric == [{"role": "user", "content": RUBRIC_PROMPT}]
    cgp = builtin_template("cgp_downstream").render(question="Which organ makes insulin?", options=CGP_OPTIONS,
                                                    num_options=4, hint="Think about islet cells.")
    assert cgp == [{"role": "user", "content": CGP_PROMPT}]
    baseline = builtin_template("cgp_downstream_baseline").render(question="Which organ makes insulin?",
                                                                  options=CGP_OPTIONS, num_options=4)
    assert baseline == [{"role": "user", "content": CGP_PROMPT.replace("Hint: Think about islet cells.\n", "")}]


def test_old_prompt_functions_render_the_builtin_files():
    from verl.utils.reward_score.calibration import build_downstream_prompt
    from verl.utils.reward_score.verifier_prompts import rubric_prompt, tinyv_prompt

    assert tinyv_prompt(" What is 1/2? ", "0.5\n", "\\frac{1}{2}") == TINYV_PROMPT
    assert rubric_prompt("What is 1/2?", "10 points: 0.5.", "It is \\boxed{0.5}.\n") == RUBRIC_PROMPT
    options = ["Liver", " Pancreas", "Kidney", "Spleen"]
    assert build_downstream_prompt("Which organ makes insulin?", options, " Think about islet cells. ") == CGP_PROMPT


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_file_formats(tmp_path, suffix):
    data = {"description": "a judge", "defaults": {"verdict": "binary"},
            "messages": [{"role": "system", "content": "Be strict."},
                         {"role": "user", "content": "Q: {question}\nA: {response}"}]}
    path = tmp_path / f"judge{suffix}"
    path.write_text(json.dumps(data))  # JSON is valid YAML
    template = load_template(path)
    assert template.placeholders() == {"question", "response"}
    assert template.defaults == {"verdict": "binary"} and template.description == "a judge"
    assert template.render(question="2+2?", response="4") == [
        {"role": "system", "content": "Be strict."}, {"role": "user", "content": "Q: 2+2?\nA: 4"}]


def test_a_bare_list_of_messages_and_yaml_block_scalars(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("- role: user\n  content: |-\n    Line one {question}\n    \\boxed{} stays\n")
    template = load_template(path)
    assert template.render(question="x") == [{"role": "user", "content": "Line one x\n\\boxed{} stays"}]


def test_literal_braces_and_single_pass():
    path_free = builtin_template("tinyv")
    template = type(path_free)(messages=(("user", "{{question}} is {question}; \\boxed{} {{x}}"),), source="t")
    assert template.placeholders() == {"question"}
    # a value holding a placeholder is not substituted again
    assert template.render(question="{response}")[0]["content"] == "{question} is {response}; \\boxed{} {x}"


def test_check_names_unknown_unfillable_and_missing_placeholders(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("messages:\n  - role: user\n    content: '{question} {options} {answr} \\frac{a}{b}'\n")
    template = load_template(path)
    with pytest.raises(TemplateError) as raised:
        template.check(reward="tinyv", fillable={"question", "response", "extracted_answer"},
                       required=[{"extracted_answer", "response"}])
    message = str(raised.value)
    assert message.startswith(f"template {path}: unknown placeholder(s) {{a}}, {{answr}}, {{b}} (known: ")
    assert "write {{ and }} for literal braces" in message
    assert "{options} cannot be filled by the tinyv reward (it fills {extracted_answer}, {question}, {response})" in message
    assert message.endswith("missing required placeholder {extracted_answer} or {response}")


def test_every_placeholder_is_documented():
    assert set(PLACEHOLDERS) == {"question", "reference_answer", "extracted_answer", "response", "criteria", "options",
                                 "num_options", "hint"}


@pytest.mark.parametrize("text, problem", [
    ("messages: []", "needs a non-empty list of messages"),
    ("messages:\n  - role: robot\n    content: hi", "message 1: role must be one of system, user, assistant, got 'robot'"),
    ("messages:\n  - role: user\n    content: ''", "message 1: content must be non-empty text"),
    ("messages:\n  - role: user\n    text: hi", "message 1 must have exactly the keys role and content"),
    ("messages:\n  - role: user\n    content: hi\nverdict: binary", "unknown key(s) verdict"),
    ("messages: [unclosed", "not valid YAML"),
])
def test_bad_files_name_the_file_and_the_problem(tmp_path, text, problem):
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(TemplateError) as raised:
        load_template(path)
    assert str(raised.value).startswith(f"template file {path}: " if "valid" in problem else f"template {path}: ")
    assert problem in str(raised.value)


def test_missing_file_and_wrong_suffix(tmp_path):
    with pytest.raises(TemplateError, match=r"template file .*nope\.yaml: not found"):
        load_template(tmp_path / "nope.yaml")
    (tmp_path / "t.txt").write_text("[]")
    with pytest.raises(TemplateError, match=r"must end in \.yaml, \.yml or \.json"):
        load_template(tmp_path / "t.txt")
    with pytest.raises(TemplateError, match=r"no built-in template 'judge' \(built in: cgp_downstream, "):
        builtin_template("judge")


def test_the_package_is_a_leaf():
    import ast
    from pathlib import Path

    import verlkit.templates

    for path in Path(verlkit.templates.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith(("verl", "recipes", "data_prep")) or \
                    node.module.startswith("verlkit.templates"), (path, node.module)
