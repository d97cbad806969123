"""C3PO on verl: teach a model one sentence of verbal feedback without overgeneralizing it.

A feedback ("Be more concise when emailing my boss Jared") applies to a domain. The sampling stage
asks a teacher LLM for categories around that domain, then for in-scope prompts (the feedback
applies) and near-scope prompts (same topic, it must not apply); out-of-scope prompts are generic
chat shared by all feedbacks. A completion model answers every prompt plainly and with the feedback
applied; the constrained DPO trainer (``preference.loss=lcdpo``) learns from the pairs. Evaluation
measures adherence in scope and behaviour change outside it, with a metric for quantitative
feedback and an LLM judge for qualitative feedback.

Modules:

- ``feedback``: the ``Feedback`` record, loading and selecting feedback files, the quantitative
  metrics (``measure``) and the better/tie/worse verdict against a baseline (``compare``); pure
  apart from reading files;
- ``prompts``: chat messages for the teacher, the completion model and the judge, the parsers of
  their replies (``ParseError`` on anything unusable), re-ask messages, and regular-expression
  constraints (``Constraint``) for vLLM structured outputs that only admit parseable replies;
- ``general_prompts``: loading the shared out-of-scope prompts, and the paths of the bundled
  feedback and general-prompt files;
- ``sample``: the sampling stage (teacher and completion model behind OpenAI-compatible servers);
- ``dataset``: the preference trainer's parquet from one sampled feedback;
- ``evaluate``: adherence in scope and behaviour change outside it, against baseline responses.

File formats and reply formats are described in ``docs/c3po-feedback.md``.
"""
