"""What an end user reads when the LLM server fails names no internal address."""

import logging
import socket

import pytest

from chat.llm import ChatMessage, LLMError, OpenAIChatModel, Usage


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("call", ["complete", "stream"])
def test_unreachable_server_message_has_no_url_host_or_port(call, caplog):
    port = unused_port()
    model = OpenAIChatModel(
        base_url=f"http://127.0.0.1:{port}/v1", api_key="", model="m", timeout=5
    )
    messages = [ChatMessage("user", "hi")]
    with caplog.at_level(logging.WARNING, logger="chat.llm"), pytest.raises(LLMError) as info:
        if call == "complete":
            model.complete(messages, temperature=0, max_tokens=5)
        else:
            list(model.stream(messages, temperature=0, max_tokens=5, usage=Usage()))
    message = str(info.value)
    assert "cannot be reached" in message
    for leak in ("127.0.0.1", str(port), "http", "/v1", "localhost"):
        assert leak not in message
    assert f"127.0.0.1:{port}" in caplog.text  # the operator still finds it in the log
