"""A scripted stand-in for a served model, shared by the C3PO unit tests.

FAULT INJECTION, not a model: it replies from a script, so a test can hand the sampler or the judge
malformed replies and failed requests on demand, which a real server cannot be made to produce.
The chain against a real served model is tests/integration/test_c3po_sampling.py.
"""

from __future__ import annotations

from verlkit.c3po.endpoints import Endpoint
from verlkit.clients.llm import Completion


class ScriptedEndpoint(Endpoint):
    """FAULT INJECTION, not a model: replies from a script (text, or None for a failed request)."""

    def __init__(self, replies, *, model: str = "scripted", constrained: bool = False):
        super().__init__(url="http://127.0.0.1:1/v1", model=model, constrained=constrained)
        self.replies = list(replies)
        self.calls: list[list[dict]] = []
        self.kwargs: list[dict] = []

    def client(self):
        return self

    async def chat(self, messages, **kw):
        self.calls.append(messages)
        self.kwargs.append(kw)
        text = self.replies.pop(0)
        if text is None:
            return Completion(text=None, ok=False, error="HTTP 503", cache_hit=False, latency_s=0.0, attempts=4)
        return Completion(text=text, ok=True, error=None, cache_hit=False, latency_s=0.0, attempts=1)
