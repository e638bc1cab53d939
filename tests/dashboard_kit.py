"""Helpers for driving the dashboard's forms from a TestClient."""

from __future__ import annotations

import re
from typing import Any

from llmbudget.server.csrf import CSRF_FIELD


def csrf_of(html: str) -> str:
    """The CSRF token a dashboard page's forms carry."""
    found = re.search(rf'name="{CSRF_FIELD}" value="([^"]+)"', html)
    assert found is not None, "the page has no form with a CSRF token"
    return found.group(1)


def logout(client: Any) -> Any:
    """Sign out as a browser does: the form of the confirmation page, posted."""
    token = csrf_of(client.get("/ui/logout").text)
    return client.post("/ui/logout", data={CSRF_FIELD: token}, follow_redirects=False)
