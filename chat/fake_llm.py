"""A local OpenAI-compatible HTTP server (127.0.0.1 only) for tests and benchmarks:
/v1/chat/completions (streaming or not) and /v1/models, answering instantly by default."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeLLM:
    """`reply(messages) -> str` decides the answer; `fail_with`, `delay` and `token_delay`
    simulate a broken or slow server. Every request body is kept in `requests`."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.reply = lambda messages: "OK"
        self.condense = lambda messages: (
            messages[-1]["content"].rsplit("Last question:", 1)[-1].strip()
        )
        self.fail_with: int | None = None
        self.delay = 0.0
        self.token_delay = 0.0
        self.tokens_sent = 0
        self.disconnected = threading.Event()
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        # stop() waits for the serve loop's next poll: 0.5 s by default, in every chat test.
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def start(self) -> FakeLLM:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer_requests(self) -> list[dict]:
        return [
            r
            for r in self.requests
            if "Rewrite the last user question" not in r["messages"][0]["content"]
        ]

    def _handler(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                self._json(
                    200, {"object": "list", "data": [{"id": "test-model", "object": "model"}]}
                )

            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                llm.requests.append(body)
                if llm.delay:
                    time.sleep(llm.delay)
                if llm.fail_with:
                    self._json(
                        llm.fail_with, {"error": {"message": "boom", "type": "server_error"}}
                    )
                    return
                messages = body["messages"]
                condensing = "Rewrite the last user question" in messages[0]["content"]
                text = llm.condense(messages) if condensing else llm.reply(messages)
                if not body.get("stream"):
                    self._json(
                        200,
                        {
                            "id": "c1",
                            "object": "chat.completion",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {
                                    "index": 0,
                                    "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": text},
                                }
                            ],
                            "usage": {
                                "prompt_tokens": 10,
                                "completion_tokens": 5,
                                "total_tokens": 15,
                            },
                        },
                    )
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                pieces = [text[i : i + 4] for i in range(0, len(text), 4)]
                try:
                    for piece in pieces:
                        chunk = {
                            "id": "c1",
                            "object": "chat.completion.chunk",
                            "created": 0,
                            "model": body["model"],
                            "choices": [
                                {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                            ],
                        }
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                        self.wfile.flush()
                        llm.tokens_sent += 1
                        if llm.token_delay:
                            time.sleep(llm.token_delay)
                    final = {
                        "id": "c1",
                        "object": "chat.completion.chunk",
                        "created": 0,
                        "model": body["model"],
                        "choices": [],
                        "usage": {
                            "prompt_tokens": 100,
                            "completion_tokens": len(pieces),
                            "total_tokens": 100 + len(pieces),
                        },
                    }
                    self.wfile.write(f"data: {json.dumps(final)}\n\ndata: [DONE]\n\n".encode())
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    llm.disconnected.set()
                self.close_connection = True

        return Handler
