"""ChatClient against a real local HTTP server speaking the OpenAI chat-completions wire format."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mecharule.errors import ConfigError, MecharuleError
from mecharule.llm import ChatClient, LLMAuthError, LLMError
from mecharule.llm.client import _retry_after_seconds

SYSTEM = (
    "You are the feature designer.\n"
    "Rule 1: answer in JSON.\n"
    "Rule 2: never truncate — ünïcödé and a long tail " + "x" * 2000 + " END-OF-SYSTEM"
)


def make_client(server, **kwargs) -> tuple[ChatClient, list[float]]:
    kwargs.setdefault("backoff", 0.0)
    client = ChatClient(server.url, "test-model", kwargs.pop("api_key", "sk-test"), **kwargs)
    sleeps: list[float] = []
    client._sleep = sleeps.append  # record instead of sleeping
    return client, sleeps


def test_full_system_prompt_and_wire_format_reach_the_server(chat_server):
    chat_server.queue("hello")
    client, _ = make_client(chat_server)
    answer = client.complete(SYSTEM, "the user turn", temperature=0.3, max_tokens=50, seed=7)
    assert answer == "hello"
    [request] = chat_server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "the user turn"},
    ]
    assert body["messages"][0]["content"].endswith("END-OF-SYSTEM")  # not its first character
    assert (body["model"], body["temperature"], body["max_tokens"], body["seed"]) == (
        "test-model",
        0.3,
        50,
        7,
    )


def test_no_system_prompt_and_no_key_send_only_the_user_turn(chat_server):
    chat_server.queue("ok")
    client, _ = make_client(chat_server, api_key=None)
    assert client.complete(None, "judge this") == "ok"
    request = chat_server.requests[0]
    assert request["body"]["messages"] == [{"role": "user", "content": "judge this"}]
    assert "Authorization" not in request["headers"]
    assert "max_tokens" not in request["body"] and "seed" not in request["body"]


def test_429_with_retry_after_zero_is_retried_then_succeeds(chat_server):
    chat_server.queue(
        chat_server.reply(status=429, body=b'{"error": "slow down"}', headers={"Retry-After": "0"}),
        "second time lucky",
    )
    client, sleeps = make_client(chat_server, backoff=5.0)
    assert client.complete("s", "u") == "second time lucky"
    assert chat_server.n_calls == 2
    assert sleeps == [0.0]  # Retry-After wins over the 5 s backoff


def test_5xx_backs_off_exponentially(chat_server):
    chat_server.queue(
        chat_server.reply(status=503, body=b"busy"), chat_server.reply(status=502, body=b"bad gw"), "done"
    )
    client, sleeps = make_client(chat_server, backoff=0.01)
    assert client.complete("s", "u") == "done"
    assert sleeps == [0.01, 0.02]


def test_retries_are_bounded(chat_server):
    chat_server.default = chat_server.reply(status=500, body=b"boom")
    client, sleeps = make_client(chat_server, max_retries=2)
    with pytest.raises(LLMError, match="failed after 3 attempt"):
        client.complete("s", "u")
    assert chat_server.n_calls == 3 and len(sleeps) == 2


def test_timeout_is_retried(chat_server):
    chat_server.queue(chat_server.reply(content="late", delay=1.0), "on time")
    client, sleeps = make_client(chat_server, timeout=0.2)
    assert client.complete("s", "u") == "on time"
    assert len(sleeps) == 1


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_name_the_env_var_and_are_not_retried(chat_server, status):
    chat_server.default = chat_server.reply(status=status, body=b'{"error": "invalid api key"}')
    client, sleeps = make_client(chat_server)
    with pytest.raises(LLMAuthError, match="MECHARULE_LLM_API_KEY") as info:
        client.complete("s", "u")
    assert isinstance(info.value, MecharuleError)
    assert "invalid api key" in str(info.value) and "sk-test" not in str(info.value)
    assert chat_server.n_calls == 1 and sleeps == []


def test_other_4xx_fail_fast_with_the_server_message(chat_server):
    chat_server.default = chat_server.reply(status=404, body=b'{"error": "model not found"}')
    client, _ = make_client(chat_server)
    with pytest.raises(LLMError, match="model not found"):
        client.complete("s", "u")
    assert chat_server.n_calls == 1


def test_malformed_body_is_a_clear_error(chat_server):
    chat_server.queue(chat_server.reply(body=b"<html>not json</html>"))
    client, _ = make_client(chat_server)
    with pytest.raises(LLMError, match="not an OpenAI chat completion"):
        client.complete("s", "u")


def test_cache_hit_makes_no_network_call(chat_server, tmp_path):
    chat_server.queue("first answer", "other answer")
    client, _ = make_client(chat_server, cache_dir=tmp_path / "cache")
    assert client.complete(SYSTEM, "u", seed=1) == "first answer"
    assert client.complete(SYSTEM, "u", seed=1) == "first answer"
    assert chat_server.n_calls == 1
    again, _ = make_client(chat_server, cache_dir=tmp_path / "cache")  # a new process would do the same
    assert again.complete(SYSTEM, "u", seed=1) == "first answer"
    assert chat_server.n_calls == 1 and again.n_requests == 0
    assert client.complete(SYSTEM, "u", seed=2) == "other answer"  # different params: a new key
    assert chat_server.n_calls == 2
    files = sorted((tmp_path / "cache").glob("*.json"))
    assert len(files) == 2
    record = json.loads(files[0].read_text())
    assert record["schema_version"] == 1 and record["request"]["model"] == "test-model"
    assert "sk-test" not in files[0].read_text()


def test_corrupt_cache_entry_is_refetched(chat_server, tmp_path):
    chat_server.queue("fresh")
    client, _ = make_client(chat_server, cache_dir=tmp_path)
    key = client.cache_key(client._payload("s", "u", temperature=0.0, max_tokens=None, seed=None))
    (tmp_path / f"{key}.json").write_text("{not json")
    assert client.complete("s", "u") == "fresh"
    assert json.loads((tmp_path / f"{key}.json").read_text())["response"] == "fresh"


def test_from_env_reads_prefix_and_falls_back_to_openai_key(chat_server, monkeypatch):
    monkeypatch.setenv("JUDGE_BASE_URL", chat_server.url)
    monkeypatch.setenv("JUDGE_MODEL", "judge-model")
    monkeypatch.delenv("JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fallback")
    chat_server.queue("yes")
    client = ChatClient.from_env("JUDGE", backoff=0.0)
    assert client.complete(None, "u") == "yes"
    assert chat_server.requests[0]["headers"]["Authorization"] == "Bearer sk-fallback"
    assert chat_server.requests[0]["body"]["model"] == "judge-model"
    assert "sk-fallback" not in repr(client)
    chat_server.default = chat_server.reply(status=401, body=b"no")
    with pytest.raises(LLMAuthError, match="JUDGE_API_KEY"):
        client.complete(None, "again")


def test_from_env_names_every_missing_variable(monkeypatch):
    for name in ("MECHARULE_LLM_BASE_URL", "MECHARULE_LLM_MODEL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="MECHARULE_LLM_BASE_URL, MECHARULE_LLM_MODEL"):
        ChatClient.from_env()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"base_url": "localhost:11434"}, "http://"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"backoff": -1}, "backoff"),
    ],
)
def test_constructor_validates_arguments(kwargs, match):
    args = {"base_url": "http://127.0.0.1:9/v1", "model": "m", **kwargs}
    with pytest.raises(ConfigError, match=match):
        ChatClient(**args)


def test_connection_refused_is_retried_then_reported(tmp_path):
    client = ChatClient("http://127.0.0.1:9/v1", "m", max_retries=1, backoff=0.0, timeout=1.0)
    client._sleep = lambda _: None
    with pytest.raises(LLMError):
        client.complete("s", "u")
    assert client.n_requests == 2


def test_retry_after_parsing():
    assert _retry_after_seconds("0") == 0.0
    assert _retry_after_seconds("2.5") == 2.5
    assert _retry_after_seconds("-3") == 0.0
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("garbage") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past


def test_cache_dir_is_created(chat_server, tmp_path):
    chat_server.queue("x")
    client, _ = make_client(chat_server, cache_dir=Path(tmp_path) / "deep" / "cache")
    client.complete("s", "u")
    assert len(list((tmp_path / "deep" / "cache").glob("*.json"))) == 1
