"""Fake LLM providers for tests: real HTTP servers on 127.0.0.1, no network beyond it.

>>> from tests.fakes import FakeLLMServer
>>> with FakeLLMServer() as fake:
...     fake.openai_url.startswith("http://127.0.0.1:")
True
"""

from tests.fakes.server import FakeLLMServer, RecordedRequest

__all__ = ["FakeLLMServer", "RecordedRequest"]
