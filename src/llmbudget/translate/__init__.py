"""Translating between OpenAI Chat Completions and Anthropic Messages, both ways. Pure.

* chat request → Messages request (:func:`anthropic_request`), Messages response → chat
  completion (:func:`anthropic_to_openai`), Messages stream events → chat chunks
  (:class:`AnthropicChunks`): OpenAI-shaped clients (``completion()``, the gateway's
  ``/v1/chat/completions``) reaching Claude natively.
* Messages request → chat request (:func:`chat_request`), chat completion → Messages
  response (:func:`message_from_chat`), chat chunks → Messages stream events
  (:class:`MessageEvents`): Anthropic-shaped clients (the ``anthropic`` SDK, Claude Code,
  the gateway's ``/v1/messages``) reaching any OpenAI-compatible model.
* Error bodies of either API in the other's shape (:func:`anthropic_error`,
  :func:`openai_error`).

System prompts, text and image parts, tools, tool calls and tool results, stop reasons and
usage (cache reads and writes included) are carried over; what one API has and the other
lacks is dropped (``top_k``, ``logprobs``) or refused when dropping it would change what
is billed (Anthropic server tools such as ``web_search``).

>>> chat_request({"model": "m", "max_tokens": 5, "system": "Be brief.",
...               "messages": [{"role": "user", "content": "Hi"}]})["messages"][0]
{'role': 'system', 'content': 'Be brief.'}
"""

from __future__ import annotations

from llmbudget.translate.errors import anthropic_error, openai_error
from llmbudget.translate.to_chat import MessageEvents, chat_request, message_from_chat
from llmbudget.translate.to_messages import (
    AnthropicChunks,
    anthropic_request,
    anthropic_to_openai,
    anthropic_usage_to_openai,
)

__all__ = [
    "AnthropicChunks",
    "MessageEvents",
    "anthropic_error",
    "anthropic_request",
    "anthropic_to_openai",
    "anthropic_usage_to_openai",
    "chat_request",
    "message_from_chat",
    "openai_error",
]
