"""C3PO on verl: teach a model one sentence of verbal feedback without overgeneralizing it.

A feedback ("Be more concise when emailing my boss Jared") applies to a domain. The sampling stage
asks a teacher LLM for categories around that domain, then for in-scope prompts (the feedback
applies) and near-scope prompts (same topic, it must not apply); out-of-scope prompts are generic
chat shared by all feedbacks. A completion model answers every prompt plainly and with the feedback
applied; the constrained DPO trainer (``preference.loss=lcdpo``) learns from the pairs
(``python -m data_prep.c3po`` writes its parquet). Evaluation measures adherence in scope and
behaviour change outside it, with a metric for quantitative feedback and an LLM judge for
qualitative feedback.

Modules, bottom to top:

- ``metrics``: the quantitative metrics of a response, the check of their values, ``measure`` and
  the better/tie/worse verdict against a baseline (``compare``); pure;
- ``feedback``: the ``Feedback`` record, loading (``verlkit.records.read_records``) and selecting
  feedback files; every problem is a ``verlkit.records.InputError``;
- ``general_prompts``: loading the shared out-of-scope prompts, and the paths of the bundled
  feedback and general-prompt files (``assets/``);
- ``parsers``: the parsers of the teacher's, completion model's and judge's replies (``ParseError``
  on anything unusable);
- ``prompts``: chat messages for the teacher, the completion model and the judge, and re-asks;
- ``constraints``: regular-expression constraints (``Constraint``) for vLLM structured outputs that
  only admit replies the parsers accept;
- ``endpoints``: the served models, the resume log, request counters, and ``Asker`` (one logical
  request with bounded re-asks);
- ``sample``: the sampling stage (teacher and completion model behind OpenAI-compatible servers);
- ``evaluate``: adherence in scope and behaviour change outside it, against baseline responses.

File formats and reply formats are described in ``docs/c3po-feedback.md``.
"""
