"""OpenAI chat <-> Anthropic Messages translation, both ways (llmbudget.translate)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmbudget.errors import InvalidRequestError
from llmbudget.pricing import normalize_usage
from llmbudget.translate import (
    AnthropicChunks,
    MessageEvents,
    anthropic_error,
    anthropic_request,
    anthropic_to_openai,
    chat_request,
    message_from_chat,
    openai_error,
)

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
ANTHROPIC_TOOL = {"name": "weather", "description": "Weather now", "input_schema": WEATHER_SCHEMA}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "weather", "description": "Weather now", "parameters": WEATHER_SCHEMA},
}


def test_a_messages_request_becomes_a_chat_request() -> None:
    body: dict[str, Any] = {
        "model": "claude",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": " Be kind."}],
        "temperature": 0.2,
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u-42"},
        "tools": [ANTHROPIC_TOOL],
        "tool_choice": {"type": "tool", "name": "weather"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather",
                 "input": {"city": "Paris"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18°C"},
                {"type": "text", "text": "And tomorrow?"},
            ]},
        ],
    }  # fmt: skip
    chat = chat_request(body)
    assert chat["messages"][0] == {"role": "system", "content": "Be brief. Be kind."}
    user = chat["messages"][1]
    assert user["content"][0] == {"type": "text", "text": "Paris?"}
    assert user["content"][1] == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,AAAA"},
    }
    assistant = chat["messages"][2]
    assert assistant["content"] == "Let me look."  # thinking is not re-sent
    assert assistant["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        }
    ]
    # The tool result answers the call first, then the user's new text.
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C"}
    assert chat["messages"][4] == {"role": "user", "content": "And tomorrow?"}
    assert chat["tools"] == [OPENAI_TOOL]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert (chat["max_tokens"], chat["stop"], chat["user"], chat["temperature"]) == (
        100, ["END"], "u-42", 0.2
    )  # fmt: skip


def test_server_tools_cannot_be_translated() -> None:
    body = {"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "web_search_20250305", "name": "web_search"}]}  # fmt: skip
    with pytest.raises(InvalidRequestError, match="server tool"):
        chat_request(body)


def test_a_chat_request_becomes_a_messages_request_and_back() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
    ]  # fmt: skip
    request = anthropic_request(messages, {"max_tokens": 50, "tools": [OPENAI_TOOL],
                                           "tool_choice": "required", "stop": "END"})  # fmt: skip
    assert request["system"] == "Be brief."
    assert request["tools"] == [ANTHROPIC_TOOL]
    assert request["tool_choice"] == {"type": "any"}
    assert request["stop_sequences"] == ["END"]
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}
    ]
    back = chat_request({"model": "m", **request})
    assert back["messages"] == messages  # the same conversation, the same tool call
    assert back["tools"] == [OPENAI_TOOL] and back["tool_choice"] == "required"


def test_a_chat_completion_becomes_a_message_with_its_usage() -> None:
    completion = {
        "id": "chatcmpl-1",
        "model": "gpt",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}]}}],
        "usage": {"prompt_tokens": 112, "completion_tokens": 7,
                  "prompt_tokens_details": {"cached_tokens": 100}},
    }  # fmt: skip
    message = message_from_chat(completion)
    assert message["stop_reason"] == "tool_use"
    assert message["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert message["usage"] == {
        "input_tokens": 12,
        "output_tokens": 7,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }
    # Both usages price the same tokens.
    assert normalize_usage(message["usage"]) == normalize_usage(completion["usage"])


def test_an_anthropic_message_becomes_a_chat_completion_with_cache_usage() -> None:
    message = {
        "id": "msg_1", "model": "claude", "stop_reason": "max_tokens",
        "content": [{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "Hi"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}],
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 90,
                  "cache_creation_input_tokens": 20},
    }  # fmt: skip
    chat = anthropic_to_openai(message)
    choice = chat["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] == "Hi"
    assert choice["message"]["reasoning_content"] == "hm"
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"]) == {"a": 1}
    assert chat["usage"]["prompt_tokens"] == 120
    assert normalize_usage(chat["usage"]) == normalize_usage(message["usage"])


def test_chat_chunks_become_messages_events() -> None:
    chunks: list[dict[str, Any]] = [
        {"id": "c1", "model": "gpt", "choices": [{"index": 0, "delta": {"role": "assistant"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Let me"}}]},
        {"choices": [{"index": 0, "delta": {"content": " check."}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1",
          "function": {"name": "weather", "arguments": ""}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
          "function": {"arguments": '{"city":'}}]}}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0,
          "function": {"arguments": '"Paris"}'}}]}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 30, "completion_tokens": 9,
                                  "prompt_tokens_details": {"cached_tokens": 20}}},
    ]  # fmt: skip
    translator = MessageEvents("gpt")
    events = [e for chunk in chunks for e in translator.events(chunk)] + translator.close()
    kinds = [e["type"] for e in events]
    assert kinds == [
        "message_start",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert events[5]["content_block"] == {
        "type": "tool_use", "id": "call_1", "name": "weather", "input": {}
    }  # fmt: skip
    arguments = "".join(e["delta"]["partial_json"] for e in events[6:8])
    assert json.loads(arguments) == {"city": "Paris"}
    delta = events[9]
    assert delta["delta"]["stop_reason"] == "tool_use"
    assert delta["usage"] == {"input_tokens": 10, "output_tokens": 9,
                              "cache_read_input_tokens": 20, "cache_creation_input_tokens": 0}  # fmt: skip


def test_a_chat_stream_without_usage_still_ends_properly() -> None:
    translator = MessageEvents("gpt")
    events = translator.events({"choices": [{"index": 0, "delta": {"content": "Hi"},
                                             "finish_reason": "stop"}]})  # fmt: skip
    events += translator.close()
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"]
    assert translator.close() == []  # once


def test_anthropic_events_become_chat_chunks_with_cache_usage() -> None:
    translator = AnthropicChunks("claude", usage_chunk=True)
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {
            "input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "t1", "name": "f", "input": {}}},
        {"type": "content_block_delta", "index": 1, "delta": {
            "type": "input_json_delta", "partial_json": '{"a": 1}'}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
         "usage": {"output_tokens": 6}},
        {"type": "message_stop"},
    ]  # fmt: skip
    chunks = [c for e in events for c in translator.chunks(e)]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hi"}
    call = chunks[2]["choices"][0]["delta"]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("t1", "f")
    assert chunks[3]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] == '{"a": 1}'
    assert chunks[4]["choices"][0]["finish_reason"] == "tool_calls"
    usage = chunks[5]["usage"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (100, 6)
    assert usage["prompt_tokens_details"]["cached_tokens"] == 90


def test_error_bodies_in_the_other_apis_shape() -> None:
    budget = {"error": {"message": "budget exceeded", "type": "budget_exceeded",
                        "code": "budget_exceeded", "scope": "gw-key:k", "param": None}}  # fmt: skip
    shaped = anthropic_error(429, budget)
    assert shaped["type"] == "error"
    assert shaped["error"]["type"] == "rate_limit_error"
    assert shaped["error"]["scope"] == "gw-key:k"  # details kept
    back = openai_error(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                        "message": "bad"}})  # fmt: skip
    assert back["error"]["type"] == "invalid_request_error" and back["error"]["message"] == "bad"
    assert anthropic_error(529, None)["error"]["type"] == "overloaded_error"
