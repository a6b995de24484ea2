"""A local stand-in for the Anthropic Messages API, at the HTTP level.

The real `anthropic` client talks to it through an httpx2 transport, so the SDK's own request
building, response parsing, error mapping and retry loop all run. Responses are JSON bodies in
the API's wire format (as documented for POST /v1/messages): a message with content blocks of
type text / tool_use, a stop_reason and usage with the cache fields; errors as
{"type": "error", "error": {"type": ..., "message": ...}} with the API's status codes.

Usage:
    api = FakeAnthropic([tool_use("list_files", {}), error(429), end_turn("done")])
    agent = ClaudeAgent(cfg, http_client=api.client())
    ...
    api.requests  # what the SDK sent: [{"headers": ..., "body": ..., "t": ...}]
"""
from __future__ import annotations

import itertools
import json
import time

import httpx2

_ids = itertools.count(1)
MODEL_ID = "claude-sonnet-4-5-20250929"


def usage(inp=100, out=20, cache_write=0, cache_read=0) -> dict:
    return {"input_tokens": inp, "output_tokens": out, "cache_creation_input_tokens": cache_write,
            "cache_read_input_tokens": cache_read, "service_tier": "standard"}


def message(content: list[dict], stop_reason: str, use: dict | None = None) -> tuple:
    body = {"id": f"msg_01Fake{next(_ids):06d}", "type": "message", "role": "assistant",
            "model": MODEL_ID, "content": content, "stop_reason": stop_reason,
            "stop_sequence": None, "usage": use or usage()}
    return 200, body, {"request-id": f"req_fake{next(_ids)}"}


def tool_use(name: str, args: dict, text: str | None = None, use: dict | None = None) -> tuple:
    content = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": f"toolu_01Fake{next(_ids):06d}", "name": name,
                    "input": args})
    return message(content, "tool_use", use)


def end_turn(text: str, use: dict | None = None) -> tuple:
    return message([{"type": "text", "text": text}], "end_turn", use)


ERRORS = {429: "rate_limit_error", 500: "api_error", 529: "overloaded_error",
          401: "authentication_error", 400: "invalid_request_error"}


def error(status: int, headers: dict | None = None) -> tuple:
    body = {"type": "error", "error": {"type": ERRORS[status], "message": f"fake {status}"},
            "request_id": f"req_fake{next(_ids)}"}
    return status, body, headers or {}


class FakeAnthropic:
    """Serves a scripted sequence of responses and records every request it gets."""

    def __init__(self, script: list[tuple]):
        self.script = list(script)
        self.requests: list[dict] = []

    def handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append({"t": time.monotonic(), "method": request.method,
                              "path": request.url.path, "headers": dict(request.headers),
                              "body": json.loads(request.content or b"{}")})
        # An unscripted request is a test bug: answer 400, which the SDK does not retry.
        status, body, headers = self.script.pop(0) if self.script else error(400)
        return httpx2.Response(status, json=body, headers=headers)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self.handle))
