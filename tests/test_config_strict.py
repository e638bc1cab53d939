"""A typo in a config file is an error naming its path (issue 13, found 8; build 7).

The cases are generated from ``examples/gateway.yaml``: each key of every mapping, one at
a time, is misspelt, and loading must fail naming where. Before, ``budgett: 2000`` and the
like were ignored and the budget they meant was uncapped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmbudget.errors import InvalidInputError
from llmbudget.gateway.config import GatewayConfig, load_gateway_config
from llmbudget.server.config import ServerConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "gateway.yaml"
SECRETS = (
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "LLMBUDGET_ADMIN_KEY",
    "AZURE_OPENAI_KEY",
    "CI_GATEWAY_KEY",
)
# Keys that are names (data), not settings: the user "alice" misspelt is simply another
# user, which no schema can tell from a typo. (Team, org and model names are caught: they
# are referenced elsewhere, or must name a served model.)
FREE_NAMES = {("users", "alice")}


@pytest.fixture(autouse=True)
def _secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SECRETS:
        monkeypatch.setenv(name, f"sk-{name.lower()}-0123456789")


def _keys(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every key of every mapping in ``node``."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield (*path, key)
            yield from _keys(value, (*path, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _keys(item, (*path, index))


def _shown(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _misspelt(data: dict[str, Any], path: tuple[Any, ...]) -> tuple[dict[str, Any], str]:
    """``data`` with the key at ``path`` misspelt (its last letter doubled), in place."""
    broken = copy.deepcopy(data)
    parent: Any = broken
    for part in path[:-1]:
        parent = parent[part]
    key = path[-1]
    typo = key + key[-1]
    parent[typo] = parent.pop(key)
    return broken, typo


EXAMPLE_DATA = yaml.safe_load(EXAMPLE.read_text())
CASES = [p for p in _keys(EXAMPLE_DATA) if p[-2:] not in FREE_NAMES]


def test_the_example_loads_as_written() -> None:
    config = load_gateway_config(EXAMPLE)
    assert config.global_budget is not None and config.users["alice"].budget is not None
    assert len(CASES) > 80  # the generator really walks the file


@pytest.mark.parametrize("path", CASES, ids=_shown)
def test_any_single_key_misspelt_fails_naming_the_path(path: tuple[Any, ...]) -> None:
    broken, typo = _misspelt(EXAMPLE_DATA, path)
    with pytest.raises(InvalidInputError) as error:
        GatewayConfig.from_mapping(broken)
    message = str(error.value)
    where = _shown((*path[:-1], typo))
    if where in message:
        return
    # A misspelt team, org or fallback model name is caught where it is referenced.
    assert path[-1] in message or typo in message, message
    assert any(
        section in message for section in ("users.", "teams.", "keys[", "router_settings")
    ), message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"budgets": {"global": {"budgett": 2000}}},
            "budgets.global.budgett: unknown key; did you mean 'budget'?",
        ),
        (
            {"users": {"alice": {"budgett": 50}}},
            "users.alice.budgett: unknown key; did you mean 'budget'?",
        ),
        (
            {
                "model_list": [
                    {"model_name": "m", "litellm_params": {"model": "gpt-4o", "budgett": 500}}
                ]
            },
            "model_list[0].litellm_params.budgett: unknown key; did you mean 'budget'?",
        ),
        (
            {"model_list": [{"model_name": "m", "model": "gpt-4o", "wieght": 2}]},
            "model_list[0].wieght: unknown key; did you mean 'weight'?",
        ),
        (
            {"model_list": [{"model_name": "m", "model": "x", "input_cost_per_tokn": 1e-6}]},
            "model_list[0].input_cost_per_tokn: unknown key; did you mean 'input_cost_per_token'?",
        ),
        (
            {"general_settings": {"master_kye": "k" * 20}},
            "general_settings.master_kye: unknown key; did you mean 'master_key'?",
        ),
        (
            {"router_settings": {"num_retires": 1}},
            "router_settings.num_retires: unknown key; did you mean 'num_retries'?",
        ),
        (
            {"budgets": {"global": {"period": "daily"}}},
            "budgets.global: period given without a budget",
        ),
        (
            {"budgets": {"global": {"budget": 1, "max_budget": 2}}},
            "'budget' and 'max_budget' name the same setting",
        ),
        ({"general_settings": {"cap_max_tokens": "yes"}}, "general_settings.cap_max_tokens"),
        (
            {"model_list": [{"model_name": "m", "model": "gpt-4o", "tpm": 0}]},
            "model_list[0].tpm",
        ),
        (
            {
                "model_list": [{"model_name": "gpt-4o", "model": "gpt-4o"}],
                "budgets": {"models": {"gpt4o": {"budget": 1}}},
            },
            "budgets.models.gpt4o: no deployment serves a model named 'gpt4o'; did you mean 'gpt-4o'?",
        ),
        ({"teams": {"t": {"team": "x"}}}, "teams.t.team: unknown key"),
        ({"orgs": {"o": {"org": "x"}}}, "orgs.o.org: unknown key"),
        (
            {"keys": [{"key": "k" * 20, "user": "u", "budgett": 1}]},
            "keys[0].budgett: unknown key; did you mean 'budget'?",
        ),
        (
            {"users": {"u": {}}, "keys": [{"key": "k" * 20, "user": "uu"}]},
            "keys[0].user is 'uu', which is not listed under users",
        ),
    ],
)
def test_the_cases_of_the_issue_fail_loudly(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        GatewayConfig.from_mapping(raw)
    assert expected in str(error.value)


def test_litellm_aliases_are_still_accepted() -> None:
    config = GatewayConfig.from_mapping(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {
                        "model": "gpt-4o-mini",
                        "max_budget": 5,
                        "budget_duration": "1mo",
                        "max_tokens": 100,
                        "extra_headers": {"x-a": "b"},
                    },
                    "model_info": {"id": "main"},
                }
            ],
            "router_settings": {"strategy": "least-busy"},
            "users": {"u": {"max_budget": 2, "budget_duration": "daily"}},
            "budgets": {"end_user": 0.5},
        }
    )
    dep = config.deployments[0]
    assert (dep.id, dep.max_output_tokens, dict(dep.headers)) == ("main", 100, {"x-a": "b"})
    assert dep.budget is not None and dep.budget.describe() == "$5 monthly"
    assert config.router.strategy == "least-busy"
    assert (
        config.users["u"].budget is not None and config.users["u"].budget.describe() == "$2 daily"
    )
    assert (
        config.end_user_budget is not None and config.end_user_budget.describe() == "$0.5 lifetime"
    )


def test_a_file_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("budgets:\n  global: {budgett: 1}\n")
    with pytest.raises(InvalidInputError, match=r"gw\.yaml: budgets\.global\.budgett"):
        load_gateway_config(path)


# -- the server's config file ---------------------------------------------------------------

SERVER_TOML = """
store = "memory://"
admin_key = "from-file"
host = "127.0.0.1"
port = 8123
purge_interval = 30
hold_ttl = 600
retention = 3600
max_body_bytes = 100000
default_timezone = "Europe/Paris"
trust_client_clock = false
insecure_no_auth = false

[alerts]
webhook_url = "http://127.0.0.1:9/hook"
thresholds = [0.5, 1.0]
timeout = 2
retries = 1
backoff = 0.1
sweep_interval = 10
budgets = { "user:a:b" = [0.9] }
headers = { "x-token" = "t" }
webhook_secret = "whsec"
slack_webhook_url = "https://hooks.slack.com/services/T0/B0/X"
projects = { app = [0.8] }

[alerts.gateway]
keys = { key_1 = [1.0] }
users = { ann = [0.9] }
teams = { ml = [0.7] }
orgs = { acme = [0.6] }
end_users = { "cust-1" = [0.5] }

[alerts.email]
host = "smtp.example.com"
port = 2525
security = "none"
username = "alerts"
password = "pw"
from = "budget@example.com"
to = ["ops@example.com"]
ca_file = "/etc/ssl/ca.pem"
subject_prefix = "[budget]"
timeout = 3
"""


def _server_cases() -> list[tuple[Any, ...]]:
    import tomllib

    data = tomllib.loads(SERVER_TOML)
    # alerts.budgets, .headers, .projects and .gateway.* map free names (scopes, header
    # names, project and entity names).
    free = {("alerts", "budgets"), ("alerts", "headers"), ("alerts", "projects")}
    return [
        p
        for p in _keys(data)
        if (p[:2] not in free or len(p) == 2) and (p[:2] != ("alerts", "gateway") or len(p) <= 3)
    ]


def test_the_server_example_loads(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text(SERVER_TOML)
    config = load_config(tmp_path / "s.toml")
    assert config.alerts.budgets == {"user:a:b": (0.9,)} and config.port == 8123
    assert config.alerts.gateway.end_users == {"cust-1": (0.5,)}
    assert config.alerts.email is not None and config.alerts.email.port == 2525


@pytest.mark.parametrize("path", _server_cases(), ids=_shown)
def test_any_server_key_misspelt_fails_naming_the_path(path: tuple[Any, ...]) -> None:
    import tomllib

    broken, typo = _misspelt(tomllib.loads(SERVER_TOML), path)
    with pytest.raises(InvalidInputError) as error:
        ServerConfig.from_mapping(broken)
    assert f"{_shown((*path[:-1], typo))}: unknown key" in str(error.value)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"trust_client_clock": "yes"}, "trust_client_clock"),
        ({"port": "8000"}, "port"),
        ({"hold_ttl": 0}, "hold_ttl"),
        ({"alerts": {"retries": True}}, "alerts.retries"),
        ({"model_lst": []}, "model_lst: unknown key; did you mean 'model_list'?"),
        (
            {"model_list": [], "general_settings": {"stroe": "x"}},
            "general_settings.stroe: unknown key; did you mean 'store'?",
        ),
    ],
)
def test_server_config_values_are_strict(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(InvalidInputError) as error:
        ServerConfig.from_mapping(raw)
    assert expected in str(error.value)
