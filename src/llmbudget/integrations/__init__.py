"""Adapters that charge llmbudget budgets for calls made through other libraries.

* :mod:`llmbudget.integrations.litellm` — a LiteLLM callback (``pip install litellm``).

Calls made with the ``openai`` or ``anthropic`` SDKs need no adapter: wrap them in
:func:`llmbudget.budget` (see :mod:`llmbudget.sdk_patch`).
"""

__all__: list[str] = []
