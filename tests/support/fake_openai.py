"""A FAKE OpenAI-compatible server (aiohttp.web on 127.0.0.1, in a thread of the test process) that
injects faults on demand.

It exists only for what a real vLLM server cannot be made to do when a test wants it: answer HTTP
500 for the first N requests, never answer, answer garbage or a 4xx, hold replies until released,
or say exactly "True"/"False"/nonsense. Everything else is tested against the real vLLM CPU server
(``tests/conftest.py``).

What a request gets is decided by its *script*: ``reply(content)`` of the first message's content
(chat) or the prompt (completions); without ``reply`` the script is the content itself. A script
``mode:<fault>`` injects a fault:

* ``mode:fail500xN`` HTTP 500 for the first N requests with that content, then a normal reply;
* ``mode:always500`` HTTP 503 every time; ``mode:bad400`` HTTP 400;
* ``mode:ratelimit429xN`` HTTP 429 (no ``Retry-After``) for the first N requests, ``mode:ratelimit429xN:S``
  with ``Retry-After: S`` (seconds), ``mode:ratelimit429datexN:S`` with an HTTP date S seconds ahead;
* ``mode:garbage`` a 200 whose body is not JSON;
* ``mode:hang`` / ``mode:hold...`` wait until :meth:`FakeOpenAIServer.release_all` (or close).

A normal reply is the script itself when ``reply`` is given, else ``echo <content> n=<count>
t=<temperature>`` (chat) or ``completion of <prompt>`` (completions).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import threading
import time
from typing import Callable

from aiohttp import web


class FakeOpenAIServer:
    def __init__(self, reply: Callable[[str], str] | None = None) -> None:
        self.reply = reply
        self.counts: collections.Counter[str] = collections.Counter()  # requests per content
        self.scripts: collections.Counter[str] = collections.Counter()  # requests per script
        self.prompts: list[str] = []
        self.auth: list[str | None] = []
        self.request_ids: list[str | None] = []  # X-Request-Id of every request, in arrival order
        self.loop = asyncio.new_event_loop()
        self.release: asyncio.Event | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    async def _start(self) -> int:
        self.release = asyncio.Event()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/classify", self._classify)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return site._server.sockets[0].getsockname()[1]

    async def _fault(self, mode: str, n: int) -> web.Response | None:
        if mode.startswith("fail500x"):
            if n <= int(mode.split("x")[1].split(" ")[0]):
                return web.Response(status=500, text="internal error (injected)")
        elif mode.startswith("ratelimit429"):
            count, _, seconds = mode.split("x", 1)[1].partition(":")
            if n > int(count):
                return None
            headers = {}
            if seconds and mode.startswith("ratelimit429date"):
                headers["Retry-After"] = email.utils.formatdate(time.time() + float(seconds), usegmt=True)
            elif seconds:
                headers["Retry-After"] = seconds
            return web.Response(status=429, text="rate limited (injected)", headers=headers)
        elif mode == "always500":
            return web.Response(status=503, text="overloaded (injected)")
        elif mode == "bad400":
            return web.Response(status=400, text='{"error": "bad request (injected)"}')
        elif mode == "garbage":
            return web.Response(status=200, text="<html>not json{", content_type="text/html")
        elif mode == "hang" or mode.startswith("hold"):
            await self.release.wait()
        return None

    async def _answer(self, request: web.Request, content: str) -> tuple[web.Response | None, str | None, int]:
        """(a fault response or None, the scripted reply text or None for the default, request count)."""
        self.auth.append(request.headers.get("Authorization"))
        self.request_ids.append(request.headers.get("X-Request-Id"))
        self.prompts.append(content)
        self.counts[content] += 1
        n = self.counts[content]
        script = self.reply(content) if self.reply else content
        self.scripts[script] += 1
        if script.startswith("mode:"):
            return await self._fault(script[len("mode:"):], n), None, n
        return None, script if self.reply else None, n

    async def _chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        content = body["messages"][0]["content"]
        fault, text, n = await self._answer(request, content)
        if fault is not None:
            return fault
        text = text if text is not None else f"echo {content} n={n} t={body['temperature']}"
        return web.json_response({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})

    async def _completion(self, request: web.Request) -> web.Response:
        body = await request.json()
        fault, text, _ = await self._answer(request, body["prompt"])
        if fault is not None:
            return fault
        text = text if text is not None else "completion of " + body["prompt"]
        return web.json_response({"choices": [{"index": 0, "text": text}]})

    async def _classify(self, request: web.Request) -> web.Response:
        """A reward model's ``/classify``: the script of ``str(input)`` is the value to return."""
        body = await request.json()
        fault, text, _ = await self._answer(request, str(body["input"]))
        if fault is not None:
            return fault
        try:
            value = float(text if text is not None else 0.0)
        except ValueError:
            return web.json_response({"data": [{"probs": text}]})  # a malformed classification
        return web.json_response({"data": [{"index": 0, "probs": [value]}]})

    async def _models(self, request: web.Request) -> web.Response:
        self.auth.append(request.headers.get("Authorization"))
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    def release_all(self) -> None:
        """Let every held (``mode:hold``/``mode:hang``) request answer."""
        self.loop.call_soon_threadsafe(self.release.set)

    def close(self) -> None:
        async def stop():
            self.release.set()
            await self.runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
