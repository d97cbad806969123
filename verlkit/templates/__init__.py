"""Chat-message prompt templates as data: the prompts that model-scored rewards send to served models.

A template is a list of ``{role, content}`` messages whose contents name placeholders such as
``{question}``; :func:`load_template` reads one from a YAML or JSON file, :func:`builtin_template`
returns one of ours (``verlkit/templates/builtin/<name>.yaml``), and :meth:`ChatTemplate.check`
verifies, before any request, that a template names only placeholders the calling reward can fill
and every placeholder it requires. See :mod:`verlkit.templates.chat` for the file format.

A leaf package: it imports nothing else of ours and nothing of upstream verl.
"""

from verlkit.templates.chat import (
    PLACEHOLDERS,
    ChatTemplate,
    TemplateError,
    builtin_names,
    builtin_template,
    load_template,
)

__all__ = ["PLACEHOLDERS", "ChatTemplate", "TemplateError", "builtin_names", "builtin_template", "load_template"]
