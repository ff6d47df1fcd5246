"""A stand-in for a real model, for the tools demo only: a tiny OpenAI-compatible server that
follows a few fixed rules, so that the agent loop (model → tool call → result → reply) can be
watched without an API key. It understands nothing; point turngate at a real model for real
use (the README, "An agent with tools (MCP)", shows both).

Usage::

    python examples/demo_model.py          # http://127.0.0.1:18790/v1
    python examples/demo_model.py 0        # any free port; the first line printed says which

It serves ``POST /v1/chat/completions`` (streamed as OpenAI streams: ``data:`` chunks, tool
calls as ``delta.tool_calls`` pieces, the ``finish_reason``, a last chunk with ``usage`` when
``stream_options.include_usage`` asks for it, then ``data: [DONE]``; or one JSON answer when
``stream`` is false) and ``GET /v1/models``. Any model name and any API key are accepted.

Its rules, looking only at the last message of the request:

- a user message ``note <text>`` or ``remember <text>``, with a tool whose name ends in
  ``__add_note`` offered: it calls that tool with ``{"text": "<text>"}``;
- a user message ``what are my notes?`` or ``list notes`` (also ``list my notes``, ``show
  my notes``), with a tool whose name ends in ``__list_notes`` offered: it calls that tool;
- a tool result (or several): it answers with text quoting each result verbatim
  (``notes__add_note answered: Saved note 1: buy milk``), an error result too;
- anything else: it echoes the message (``echo: <text>``).

Token counts in ``usage`` are a rough estimate (about four characters a token).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_PORT = 18790
MODEL_ID = "demo"
ADD_SUFFIX = "__add_note"
LIST_SUFFIX = "__list_notes"
ADD_PATTERN = re.compile(r"^\s*(?:note|remember)\s+(?P<text>\S.*)$", re.IGNORECASE | re.DOTALL)
LIST_PHRASES = frozenset({"what are my notes", "list notes", "list my notes", "show my notes"})
ARGUMENT_PIECE_CHARS = 8
"""Tool-call arguments are streamed in pieces this long, as real models stream them."""


@dataclass(frozen=True)
class ToolCall:
    """A call the demo model makes: its id, the tool's name, the arguments as JSON text."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Answer:
    """What the demo model answers: text, or tool calls."""

    text: str = ""
    tool_calls: tuple[ToolCall, ...] = field(default_factory=tuple)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


class BadRequest(Exception):
    """A request the demo model cannot read: answered 400 in OpenAI's error shape."""


def text_of(content: object) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def offered_tool(tools: Sequence[object], suffix: str) -> str | None:
    """The name of the first offered function tool whose name ends in ``suffix``."""
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name.endswith(suffix):
            return name
    return None


def tool_names_by_call(messages: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each tool call id of the assistant messages, mapped to its tool's name."""
    names: dict[str, str] = {}
    for message in messages:
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                function = call.get("function")
                if isinstance(function, dict):
                    names[str(call.get("id"))] = str(function.get("name"))
    return names


def quote(tool: str, result: str) -> str:
    """How the demo model reports a tool's result: the result, verbatim."""
    separator = "\n" if "\n" in result else " "
    return f"{tool} answered:{separator}{result}"


def new_call(name: str, arguments: dict[str, Any]) -> ToolCall:
    return ToolCall(f"call_{secrets.token_hex(8)}", name, json.dumps(arguments))


def answer(messages: Sequence[dict[str, Any]], tools: Sequence[object]) -> Answer:
    """The demo model's whole intelligence: the rules of the module docstring."""
    if not messages:
        raise BadRequest("messages: at least one message is required")
    last = messages[-1]
    if last.get("role") == "tool":
        results: list[dict[str, Any]] = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            results.append(message)
        names = tool_names_by_call(messages)
        quoted = [
            quote(names.get(str(m.get("tool_call_id")), "the tool"), text_of(m.get("content")))
            for m in reversed(results)
        ]
        return Answer(text="\n".join(quoted))
    text = text_of(last.get("content"))
    if last.get("role") == "user":
        add_tool = offered_tool(tools, ADD_SUFFIX)
        match = ADD_PATTERN.match(text)
        if add_tool and match:
            return Answer(tool_calls=(new_call(add_tool, {"text": match["text"].strip()}),))
        list_tool = offered_tool(tools, LIST_SUFFIX)
        if list_tool and text.strip().rstrip("?!. ").casefold() in LIST_PHRASES:
            return Answer(tool_calls=(new_call(list_tool, {}),))
    return Answer(text=f"echo: {text}")


def estimated_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def usage(messages: Sequence[dict[str, Any]], said: Answer) -> dict[str, int]:
    prompt = estimated_tokens(json.dumps(messages))
    completion = estimated_tokens(said.text + "".join(c.arguments for c in said.tool_calls))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


class Completion:
    """One chat completion's answer in OpenAI's shapes."""

    def __init__(self, model: str, said: Answer, usage: dict[str, int]) -> None:
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.model = model
        self.said = said
        self.usage = usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }
        return f"data: {json.dumps(body)}\n\n".encode()

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self._chunk([{"index": 0, "delta": delta, "finish_reason": finish_reason}])

    def chunks(self, *, include_usage: bool) -> list[bytes]:
        """The streamed answer: its text word by word, or each tool call (its id and name,
        then its arguments in pieces), the finish, the usage if asked, ``[DONE]``."""
        # OpenAI starts with the role; its content is null when the answer is tool calls.
        first = {"role": "assistant", "content": None if self.said.tool_calls else ""}
        out = [self._delta(first)]
        for word in re.findall(r"\S+\s*|\s+", self.said.text):
            out.append(self._delta({"content": word}))
        for index, call in enumerate(self.said.tool_calls):
            head = {"index": index, "id": call.id, "type": "function"}
            head["function"] = {"name": call.name, "arguments": ""}
            out.append(self._delta({"tool_calls": [head]}))
            for start in range(0, len(call.arguments), ARGUMENT_PIECE_CHARS):
                piece = call.arguments[start : start + ARGUMENT_PIECE_CHARS]
                entry = {"index": index, "function": {"arguments": piece}}
                out.append(self._delta({"tool_calls": [entry]}))
        out.append(self._delta({}, self.said.finish_reason))
        if include_usage:
            out.append(self._chunk([], usage=self.usage))
        out.append(b"data: [DONE]\n\n")
        return out

    def whole(self) -> dict[str, Any]:
        """The answer as one ``chat.completion`` (a request with ``stream`` false)."""
        message: dict[str, Any] = {"role": "assistant", "content": self.said.text or None}
        if self.said.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in self.said.tool_calls
            ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.said.finish_reason}],
            "usage": self.usage,
        }


def error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return JSONResponse(body, status_code=status)


async def chat_completions(request: Request) -> Response:
    try:
        body = json.loads(await request.body())
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        messages = body.get("messages")
        tools = body.get("tools") or []
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            raise BadRequest("messages: a list of message objects is required")
        if not isinstance(tools, list):
            raise BadRequest("tools: must be a list")
        said = answer(messages, tools)
    except ValueError:
        return error(400, "the body is not JSON")
    except BadRequest as exc:
        return error(400, str(exc))
    completion = Completion(str(body.get("model") or MODEL_ID), said, usage(messages, said))
    if not body.get("stream"):
        return JSONResponse(completion.whole())
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True

    async def stream() -> AsyncIterator[bytes]:
        for chunk in completion.chunks(include_usage=include_usage):
            yield chunk
            await asyncio.sleep(0)  # one chunk at a time, as a model streams

    return StreamingResponse(stream(), media_type="text/event-stream")


async def list_models(request: Request) -> Response:
    model = {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "turngate-demo"}
    return JSONResponse({"object": "list", "data": [model]})


def app() -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="A stand-in OpenAI-compatible model for the turngate tools demo.",
    )
    parser.add_argument(
        "port",
        type=int,
        nargs="?",
        default=DEFAULT_PORT,
        help=f"the port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free port)",
    )
    args = parser.parse_args(argv)
    config = uvicorn.Config(app(), host="127.0.0.1", port=args.port, log_level="warning")
    server = uvicorn.Server(config)
    sock = config.bind_socket()
    port = sock.getsockname()[1]
    print(f"demo model listening on http://127.0.0.1:{port}/v1", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
