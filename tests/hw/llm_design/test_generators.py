"""The generators: our engine on a tiny model, and an OpenAI-compatible endpoint served by a
local http.server (no network)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mfmaccel.hw.llm_design.generators import EndpointGenerator, EngineGenerator, GeneratorError

CONVERSATION = [{"role": "user", "content": "Write module TopModule."}]


@pytest.fixture(scope="module")
def tiny_qwen2():
    from mfmaccel.models import load_model

    return load_model("tiny-qwen2")


def test_engine_yields_text_and_counts_tokens_losslessly(tiny_qwen2):
    """Greedy through the int8 self-draft gives the model's own greedy reply."""
    fast = EngineGenerator(tiny_qwen2).replies(CONVERSATION, count=1, temperature=0.0,
                                               max_new_tokens=12, seed=0)
    plain = EngineGenerator(tiny_qwen2, draft=None).replies(CONVERSATION, count=1,
                                                            temperature=0.0,
                                                            max_new_tokens=12, seed=0)
    assert len(fast) == 1 and isinstance(fast[0].text, str) and 1 <= fast[0].tokens <= 12
    assert fast[0].text == plain[0].text and fast[0].tokens == plain[0].tokens


def test_engine_samples_k_replies_and_refuses_a_full_window(tiny_qwen2):
    generator = EngineGenerator(tiny_qwen2, draft=None)
    replies = generator.replies(CONVERSATION, count=2, temperature=1.0, max_new_tokens=6,
                                seed=3)
    assert len(replies) == 2 and all(r.tokens >= 1 for r in replies)
    with pytest.raises(GeneratorError, match="context window"):
        generator.replies([{"role": "user", "content": "wire " * 2000}], count=1,
                          temperature=0.0, max_new_tokens=4, seed=0)


class ChatServer:
    """A chat-completions endpoint on 127.0.0.1 answering `body` (bytes) to every POST and
    keeping the requests it saw."""

    def __init__(self, body: bytes, status: int = 200) -> None:
        self.requests: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                owner.requests.append({"path": self.path,
                                       "json": json.loads(self.rfile.read(length))})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def completion(text: str, tokens: int = 7) -> bytes:
    return json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": tokens, "total_tokens": 3 + tokens},
    }).encode()


def test_endpoint_sends_the_conversation_and_reads_the_reply():
    server = ChatServer(completion("```verilog\nmodule TopModule; endmodule\n```", 11))
    try:
        generator = EndpointGenerator(server.url, "local-model")
        generator.check()
        replies = generator.replies(CONVERSATION, count=2, temperature=0.5, max_new_tokens=64,
                                    seed=4)
    finally:
        server.close()
    assert [r.tokens for r in replies] == [11, 11] and "TopModule" in replies[0].text
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["json"]["model"] == "local-model" and sent["json"]["messages"] == CONVERSATION
    assert sent["json"]["max_tokens"] == 64 and sent["json"]["seed"] == 5


@pytest.mark.parametrize("body,status,words", [
    (b'{"unexpected": true}', 200, "not a chat"),
    (b'{"choices": []}', 200, "not a chat"),
    (b'{"error": {"message": "no such model"}}', 404, "HTTP 404"),
])
def test_endpoint_garbage_or_refusal_is_one_line(body, status, words):
    server = ChatServer(body, status)
    try:
        with pytest.raises(GeneratorError, match=words) as caught:
            EndpointGenerator(server.url, "m").check()
    finally:
        server.close()
    assert "\n" not in str(caught.value)


def test_endpoint_that_does_not_answer_is_one_line():
    server = ChatServer(b"")
    url = server.url
    server.close()  # nothing listens on the port any more
    with pytest.raises(GeneratorError, match="does not answer"):
        EndpointGenerator(url, "m", timeout=5).check()
