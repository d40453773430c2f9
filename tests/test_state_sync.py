"""Tests of committing manifest.json through GitHub's contents API, against `responses`."""

import base64
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import responses
import stamina
from responses import matchers

from m365_update_manager.errors import GitHubError
from m365_update_manager.settings import Settings
from m365_update_manager.state_sync import GitHubState

TOKEN = "ghp_TestToken0123456789abcdefABCDEF"
REPO_URL = "https://api.github.com:443/repos/o/r"
CONTENTS = f"{REPO_URL}/contents/manifest.json"
OLD = json.dumps({"apps": ["word"]})
NEW = json.dumps({"apps": ["word", "excel"]})


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True):
        yield


@pytest.fixture
def github() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def make_state(*, branch: str | None = "main", attempts: int = 4) -> GitHubState:
    return GitHubState(
        token=TOKEN,
        repository="o/r",
        branch=branch,
        api_url="https://api.github.com",
        attempts=attempts,
    )


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def file_answer(text: str, sha: str) -> dict[str, Any]:
    return {
        "type": "file",
        "name": "manifest.json",
        "path": "manifest.json",
        "encoding": "base64",
        "content": b64(text),
        "sha": sha,
    }


def put_answer(sha: str = "blob-after") -> dict[str, Any]:
    content = {"type": "file", "name": "manifest.json", "path": "manifest.json"}
    return {"content": {**content, "sha": sha}, "commit": {"sha": "c0ffee" * 6}}


def put_bodies(mock: responses.RequestsMock) -> list[dict[str, Any]]:
    puts = [call.request for call in mock.calls if call.request.method == "PUT"]
    return [json.loads(request.body or b"{}") for request in puts]


def decoded(body: dict[str, Any]) -> str:
    return base64.b64decode(body["content"]).decode()


def add_excel(text: str | None) -> str:
    apps = [] if text is None else json.loads(text)["apps"]
    return json.dumps({"apps": sorted({*apps, "excel"})})


def test_fetch_existing_file_returns_text_at_branch_head(
    github: responses.RequestsMock,
) -> None:
    ref = matchers.query_param_matcher({"ref": "main"})
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"), match=[ref])

    assert make_state().fetch("manifest.json") == OLD


def test_fetch_without_branch_reads_default_branch(
    github: responses.RequestsMock,
) -> None:
    github.get(REPO_URL, json={"full_name": "o/r", "default_branch": "trunk"})
    ref = matchers.query_param_matcher({"ref": "trunk"})
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"), match=[ref])

    assert make_state(branch=None).fetch("manifest.json") == OLD


def test_fetch_missing_file_returns_none(github: responses.RequestsMock) -> None:
    github.get(CONTENTS, status=404, json={"message": "Not Found"})
    github.get(REPO_URL, json={"full_name": "o/r", "default_branch": "main"})

    assert make_state().fetch("manifest.json") is None


def test_fetch_missing_repository_raises_github_error(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, status=404, json={"message": "Not Found"})
    github.get(REPO_URL, status=404, json={"message": "Not Found"})

    with pytest.raises(GitHubError, match="GITHUB_REPOSITORY"):
        make_state().fetch("manifest.json")


def test_fetch_missing_branch_raises_github_error_naming_branch(
    github: responses.RequestsMock,
) -> None:
    answer = {"message": "No commit found for the ref nope"}
    github.get(CONTENTS, status=404, json=answer)

    with pytest.raises(GitHubError, match="branch nope does not exist"):
        make_state(branch="nope").fetch("manifest.json")


def test_fetch_file_over_one_megabyte_reads_blob_api(
    github: responses.RequestsMock,
) -> None:
    big = {**file_answer("", "blob-big"), "encoding": "none", "content": ""}
    github.get(CONTENTS, json=big)
    blob = {"sha": "blob-big", "encoding": "base64", "content": b64(NEW)}
    github.get(f"{REPO_URL}/git/blobs/blob-big", json=blob)

    assert make_state().fetch("manifest.json") == NEW


def test_fetch_after_502_retries_and_returns_text(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, status=502, json={"message": "Server Error"})
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))

    with stamina.set_testing(True, attempts=3, cap=True):
        text = make_state().fetch("manifest.json")

    assert text == OLD
    assert len(github.calls) == 2


def test_commit_changed_text_puts_content_with_read_sha(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))
    github.put(CONTENTS, json=put_answer())

    committed = make_state().commit("manifest.json", add_excel, "Stage excel")

    assert committed is True
    [body] = put_bodies(github)
    assert body["sha"] == "blob-1"
    assert body["branch"] == "main"
    assert body["message"] == "Stage excel"
    assert decoded(body) == add_excel(OLD)


def test_commit_with_stale_sha_reapplies_update_to_new_text(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-old"))
    stale = {"message": "manifest.json is at blob-new but expected blob-old"}
    github.put(CONTENTS, status=409, json=stale)
    newer = json.dumps({"apps": ["outlook", "word"]})
    github.get(CONTENTS, json=file_answer(newer, "blob-new"))
    github.put(CONTENTS, json=put_answer())
    seen: list[str | None] = []

    def update(text: str | None) -> str:
        seen.append(text)
        return add_excel(text)

    committed = make_state().commit("manifest.json", update, "Stage excel")

    assert committed is True
    assert seen == [OLD, newer]
    first, second = put_bodies(github)
    assert first["sha"] == "blob-old"
    assert second["sha"] == "blob-new"
    assert json.loads(decoded(second)) == {"apps": ["excel", "outlook", "word"]}


@pytest.mark.parametrize(
    "update",
    [lambda text: None, lambda text: text],
    ids=["update-returns-none", "update-returns-same-text"],
)
def test_commit_with_nothing_changed_sends_no_put(
    github: responses.RequestsMock, update: Any
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))

    committed = make_state().commit("manifest.json", update, "no-op")

    assert committed is False
    assert [call.request.method for call in github.calls] == ["GET"]


def test_commit_missing_file_creates_it_without_sha(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, status=404, json={"message": "Not Found"})
    github.get(REPO_URL, json={"full_name": "o/r", "default_branch": "main"})
    github.put(CONTENTS, status=201, json=put_answer())
    seen: list[str | None] = []

    def update(text: str | None) -> str:
        seen.append(text)
        return add_excel(text)

    assert make_state().commit("manifest.json", update, "Create") is True
    assert seen == [None]
    [body] = put_bodies(github)
    assert "sha" not in body
    assert decoded(body) == json.dumps({"apps": ["excel"]})


def test_commit_create_racing_another_writer_updates_their_file(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, status=404, json={"message": "Not Found"})
    github.get(REPO_URL, json={"full_name": "o/r", "default_branch": "main"})
    refused = {"message": 'Invalid request.\n\n"sha" wasn\'t supplied.'}
    github.put(CONTENTS, status=422, json=refused)
    github.get(CONTENTS, json=file_answer(OLD, "blob-theirs"))
    github.put(CONTENTS, json=put_answer())

    assert make_state().commit("manifest.json", add_excel, "Create") is True
    first, second = put_bodies(github)
    assert "sha" not in first
    assert second["sha"] == "blob-theirs"
    assert decoded(second) == add_excel(OLD)


def test_commit_stale_on_every_attempt_raises_github_error(
    github: responses.RequestsMock,
) -> None:
    stale = {"message": "manifest.json is at blob-x but expected blob-1"}
    for _ in range(3):
        github.get(CONTENTS, json=file_answer(OLD, "blob-1"))
        github.put(CONTENTS, status=409, json=stale)

    with pytest.raises(GitHubError, match="during each of 3 attempts") as caught:
        make_state(attempts=3).commit("manifest.json", add_excel, "Stage")

    assert len(put_bodies(github)) == 3
    assert "blob-x" in str(caught.value)


def test_commit_on_github_enterprise_uses_its_api_url(
    github: responses.RequestsMock,
) -> None:
    ghe = "https://ghe.example.com:443/api/v3/repos/o/r/contents/manifest.json"
    github.get(ghe, json=file_answer(OLD, "blob-1"))
    github.put(ghe, json=put_answer())
    state = GitHubState(
        token=TOKEN,
        repository="o/r",
        branch="main",
        api_url="https://ghe.example.com/api/v3/",
    )

    assert state.commit("manifest.json", add_excel, "Stage excel") is True
    assert [call.request.url for call in github.calls] == [f"{ghe}?ref=main", ghe]


RESET = 1_786_000_000  # 2026-08-06 07:06:40 UTC


@pytest.mark.parametrize(
    ("status", "headers", "message", "expected"),
    [
        (401, {}, f"Bad credentials {TOKEN}", "GITHUB_TOKEN is set, valid"),
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(RESET)},
            "API rate limit exceeded for installation ID 1.",
            "resets at 2026-08-06 07:06:40 UTC",
        ),
        (
            403,
            {"Retry-After": "60"},
            "You have exceeded a secondary rate limit.",
            "wait 60 seconds",
        ),
        (
            403,
            {},
            "Resource not accessible by integration",
            "`contents: write` permission",
        ),
        (500, {}, "Server Error", "re-run later"),
    ],
    ids=[
        "401-bad-token",
        "403-rate-limit",
        "403-secondary-limit",
        "403-no-write",
        "500",
    ],
)
def test_commit_refused_raises_github_error_without_token(
    github: responses.RequestsMock,
    caplog: pytest.LogCaptureFixture,
    status: int,
    headers: dict[str, str],
    message: str,
    expected: str,
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))
    answer = {"message": message}
    github.put(CONTENTS, status=status, json=answer, headers=headers)

    with pytest.raises(GitHubError) as caught:
        make_state().commit("manifest.json", add_excel, "Stage")

    text = str(caught.value)
    assert expected in text
    assert f"({status} " in text
    assert "\n" not in text
    assert TOKEN not in text
    assert TOKEN not in caplog.text


def test_commit_5xx_is_retried_then_raises_github_error(
    github: responses.RequestsMock,
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))
    github.put(CONTENTS, status=503, json={"message": "Unavailable"})

    with (
        stamina.set_testing(True, attempts=3, cap=True),
        pytest.raises(GitHubError) as caught,
    ):
        make_state().commit("manifest.json", add_excel, "Stage")

    assert len(put_bodies(github)) == 3
    assert "503" in str(caught.value)


def test_fetch_network_error_raises_github_error_without_token(
    github: responses.RequestsMock,
) -> None:
    failure = requests.ConnectionError(f"refused, token {TOKEN}")
    github.get(CONTENTS, body=failure)

    with pytest.raises(GitHubError, match="could not reach GitHub") as caught:
        make_state().fetch("manifest.json")

    assert TOKEN not in str(caught.value)


def test_from_settings_without_token_returns_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")

    assert GitHubState.from_settings(Settings()) is None


def test_from_settings_with_token_reads_ref_name_branch(
    github: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")
    monkeypatch.setenv("GITHUB_REF_NAME", "release")
    monkeypatch.setenv("GITHUB_API_URL", "https://api.github.com")
    ref = matchers.query_param_matcher({"ref": "release"})
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"), match=[ref])

    state = GitHubState.from_settings(Settings())

    assert state is not None
    assert state.fetch("manifest.json") == OLD


def test_stale_commit_warning_log_names_file_and_attempt(
    github: responses.RequestsMock, caplog: pytest.LogCaptureFixture
) -> None:
    github.get(CONTENTS, json=file_answer(OLD, "blob-1"))
    github.put(CONTENTS, status=409, json={"message": "is at blob-2"})
    github.get(CONTENTS, json=file_answer(NEW, "blob-2"))
    github.put(CONTENTS, json=put_answer())

    with caplog.at_level(logging.INFO, logger="m365_update_manager"):
        make_state().commit("manifest.json", add_excel, "Stage")

    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "manifest.json on o/r@main changed while committing"
        " (attempt 1 of 4, GitHub said: 409 is at blob-2)"
    ]
