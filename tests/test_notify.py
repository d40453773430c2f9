"""Tests of the Markdown report and of GitHub issues as notifications."""

import io
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
import responses
import stamina

from m365_update_manager.errors import GitHubError
from m365_update_manager.events import Event, EventKind
from m365_update_manager.notify import (
    GitHubNotifier,
    PrintNotifier,
    render_markdown,
    write_step_summary,
)
from m365_update_manager.settings import Settings

TOKEN = "ghp_TestToken0123456789abcdefABCDEF"
WHEN = datetime(2026, 8, 17, 20, 15, tzinfo=UTC)
RUN_URL = "https://github.com/o/r/actions/runs/42"
FAILURE_MARKER = "<!-- m365-update-manager:failure=check -->"

Answer = tuple[int, dict[str, str], str]


def event(
    kind: EventKind,
    app: str,
    to_version: str | None = "16.112.26081720",
    *,
    detail: str = "",
) -> Event:
    location = f"staging/{app}/{to_version}.pkg"
    return Event(kind, app, "16.111.26071414", to_version, WHEN, location, detail)


STAGED = [event(EventKind.STAGED, "word"), event(EventKind.STAGED, "excel")]
FAILED = [event(EventKind.FAILED, "word", detail="download of word.pkg was short")]


class FakeGitHub:
    """A minimal in-memory issue tracker for one repository, served by `responses`."""

    def __init__(
        self,
        mock: responses.RequestsMock,
        api: str = "https://api.github.com",
        port_api: str = "https://api.github.com:443",
    ) -> None:
        self.api = f"{api}/repos/o/r"
        self.labels = {"m365-update-manager"}
        self.issues: list[dict[str, Any]] = []
        self.comments: list[tuple[int, str]] = []
        self.refuse_labels: set[str] = set()
        self.lose_next_issue_answer = False
        base = f"{port_api}/repos/o/r"
        mock.add_callback("GET", f"{base}/labels", self._list_labels)
        mock.add_callback("POST", f"{base}/labels", self._create_label)
        mock.add_callback("GET", f"{base}/issues", self._list_issues)
        mock.add_callback("POST", f"{base}/issues", self._create_issue)
        comments = re.compile(rf"{re.escape(base)}/issues/\d+/comments")
        mock.add_callback("POST", comments, self._comment)

    def add_issue(self, title: str, body: str, labels: list[str]) -> int:
        number = len(self.issues) + 1
        self.issues.append(
            {
                "number": number,
                "title": title,
                "body": body,
                "state": "open",
                "labels": [{"name": name} for name in labels],
                "url": f"{self.api}/issues/{number}",
            }
        )
        return number

    def _list_labels(self, request: requests.PreparedRequest) -> Answer:
        return 200, {}, json.dumps([{"name": name} for name in sorted(self.labels)])

    def _create_label(self, request: requests.PreparedRequest) -> Answer:
        name = json.loads(request.body or b"{}")["name"]
        if name in self.refuse_labels:
            errors = [{"resource": "Label", "code": "already_exists", "field": "name"}]
            body = {"message": "Validation Failed", "errors": errors}
            return 422, {}, json.dumps(body)
        self.labels.add(name)
        return 201, {}, json.dumps({"name": name})

    def _list_issues(self, request: requests.PreparedRequest) -> Answer:
        query = parse_qs(urlsplit(request.url or "").query)
        assert query["state"] == ["open"]
        assert query["labels"] == ["m365-update-manager"]
        return 200, {}, json.dumps(self.issues)

    def _create_issue(self, request: requests.PreparedRequest) -> Answer:
        sent = json.loads(request.body or b"{}")
        number = self.add_issue(sent["title"], sent["body"], sent["labels"])
        if self.lose_next_issue_answer:
            self.lose_next_issue_answer = False
            return 502, {}, json.dumps({"message": "Server Error"})
        return 201, {}, json.dumps(self.issues[number - 1])

    def _comment(self, request: requests.PreparedRequest) -> Answer:
        number = int((request.url or "").split("/")[-2])
        body = json.loads(request.body or b"{}")["body"]
        self.comments.append((number, body))
        return 201, {}, json.dumps({"id": 1, "body": body})


@pytest.fixture(autouse=True)
def _no_backoff() -> Iterator[None]:
    with stamina.set_testing(True):
        yield


@pytest.fixture
def mock() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as requests_mock:
        yield requests_mock


@pytest.fixture
def github(mock: responses.RequestsMock) -> FakeGitHub:
    return FakeGitHub(mock)


def notifier(api_url: str = "https://api.github.com") -> GitHubNotifier:
    return GitHubNotifier(token=TOKEN, repository="o/r", api_url=api_url)


def posts(mock: responses.RequestsMock, suffix: str) -> list[dict[str, Any]]:
    sent = [
        call.request
        for call in mock.calls
        if call.request.method == "POST" and (call.request.url or "").endswith(suffix)
    ]
    return [json.loads(request.body or b"{}") for request in sent]


def test_render_markdown_lists_each_event_as_table_row() -> None:
    markdown = render_markdown(STAGED, command="check", run_url=RUN_URL)

    lines = markdown.splitlines()
    assert "| App | From | To | When | Where the package lives |" in lines
    assert (
        "| word | 16.111.26071414 | 16.112.26081720 | 2026-08-17 20:15 UTC"
        " | staging/word/16.112.26081720.pkg |"
    ) in lines
    assert (
        "| excel | 16.111.26071414 | 16.112.26081720 | 2026-08-17 20:15 UTC"
        " | staging/excel/16.112.26081720.pkg |"
    ) in lines
    assert "### Staged (2)" in lines
    assert f"[run log]({RUN_URL})" in markdown


def test_render_markdown_local_time_shows_as_utc() -> None:
    cest = timezone(timedelta(hours=2))
    moment = datetime(2026, 8, 17, 22, 15, tzinfo=cest)
    staged = Event(EventKind.STAGED, "word", None, "16.112", moment, "staging/w.pkg")

    markdown = render_markdown([staged], command="check", run_url=None)

    assert "| word | - | 16.112 | 2026-08-17 20:15 UTC | staging/w.pkg |" in markdown
    assert "run log" not in markdown


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (EventKind.STAGED, 'python promote.py --hold word --reason "..."'),
        (EventKind.PROMOTED, "`python promote.py --rollback word`"),
        (EventKind.ROLLED_BACK, "does not downgrade Macs that already installed"),
        (EventKind.HELD, "Microsoft's release notes"),
        (EventKind.FAILED, "run `python check_updates.py` now"),
    ],
    ids=[kind.value for kind in EventKind],
)
def test_render_markdown_kind_says_what_to_do_next(
    kind: EventKind, expected: str
) -> None:
    markdown = render_markdown([event(kind, "word")], command="check", run_url=None)

    assert expected in markdown


def test_render_markdown_several_apps_uses_app_placeholder() -> None:
    markdown = render_markdown(STAGED, command="check", run_url=None)

    assert "--hold APP --reason" in markdown


def test_render_markdown_failure_lists_detail_per_app() -> None:
    failures = [*FAILED, event(EventKind.FAILED, "excel", detail="feed: HTTP 503")]

    markdown = render_markdown(failures, command="check", run_url=None)

    assert "- **word**: download of word.pkg was short" in markdown.splitlines()
    assert "- **excel**: feed: HTTP 503" in markdown.splitlines()


def test_render_markdown_feed_text_cannot_break_table_or_comment() -> None:
    odd = Event(
        EventKind.FAILED, "word", "1|2", "3", WHEN, "a|b", "bad --> <b>html</b>\nnext"
    )

    markdown = render_markdown([odd], command="check", run_url=None)

    assert "| word | 1\\|2 | 3 | 2026-08-17 20:15 UTC | a\\|b |" in markdown
    assert "- **word**: bad --&gt; &lt;b&gt;html&lt;/b&gt; next" in markdown


def test_render_markdown_without_events_says_nothing_to_report() -> None:
    markdown = render_markdown([], command="promote", run_url=None)

    assert "nothing to report" in markdown
    assert "|" not in markdown


def test_write_step_summary_appends_to_file(tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("# Earlier step\n", encoding="utf-8")

    write_step_summary(summary, "first")
    write_step_summary(summary, "second\n")

    assert summary.read_text(encoding="utf-8") == "# Earlier step\nfirst\nsecond\n"


def test_write_step_summary_unwritable_path_raises_github_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(GitHubError, match="GITHUB_STEP_SUMMARY"):
        write_step_summary(tmp_path, "text")


def test_print_notifier_prints_title_and_body_without_marker() -> None:
    out = io.StringIO()

    PrintNotifier(out).publish(STAGED, command="check", run_url=None)

    printed = out.getvalue()
    assert printed.startswith(
        "Staged: word 16.112.26081720, excel 16.112.26081720\n\n### Staged (2)"
    )
    assert "| word | 16.111.26071414 |" in printed
    assert "<!--" not in printed


def test_publish_twice_with_same_events_opens_one_issue(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    notifier().publish(STAGED, command="check", run_url=RUN_URL)
    notifier().publish(list(reversed(STAGED)), command="check", run_url=RUN_URL)

    assert len(posts(mock, "/issues")) == 1
    [issue] = github.issues
    assert issue["title"] == "Staged: word 16.112.26081720, excel 16.112.26081720"
    assert github.comments == []


def test_publish_issue_has_labels_marker_and_table(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    notifier().publish(STAGED, command="check", run_url=RUN_URL)

    [sent] = posts(mock, "/issues")
    assert sent["labels"] == ["m365-update-manager", "staged"]
    marker = (
        "<!-- m365-update-manager:event=staged:"
        "excel@16.112.26081720,word@16.112.26081720 -->"
    )
    assert sent["body"].rstrip().endswith(marker)
    assert "| excel | 16.111.26071414 | 16.112.26081720 |" in sent["body"]


def test_publish_missing_kind_label_is_created_once(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    notifier().publish(STAGED, command="check", run_url=None)
    notifier().publish(STAGED, command="check", run_url=None)

    assert [label["name"] for label in posts(mock, "/labels")] == ["staged"]


def test_publish_label_already_exists_answer_is_ignored(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    github.refuse_labels = {"staged"}

    notifier().publish(STAGED, command="check", run_url=None)

    assert len(posts(mock, "/labels")) == 1
    assert len(github.issues) == 1


def test_publish_issue_with_same_title_but_no_marker_is_not_a_duplicate(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    title = "Staged: word 16.112.26081720, excel 16.112.26081720"
    github.add_issue(title, "written by a person", ["m365-update-manager"])

    notifier().publish(STAGED, command="check", run_url=None)

    assert len(posts(mock, "/issues")) == 1
    assert len(github.issues) == 2


def test_publish_new_build_of_same_app_opens_new_issue(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    notifier().publish(STAGED, command="check", run_url=None)
    newer = [event(EventKind.STAGED, "word", "16.113.26091010")]

    notifier().publish(newer, command="check", run_url=None)

    assert [issue["title"] for issue in github.issues] == [
        "Staged: word 16.112.26081720, excel 16.112.26081720",
        "Staged: word 16.113.26091010",
    ]


def test_publish_failure_with_open_failure_issue_adds_comment(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    body = f"earlier failure\n{FAILURE_MARKER}\n"
    number = github.add_issue("Failed (check): excel", body, ["m365-update-manager"])

    notifier().publish(FAILED, command="check", run_url=RUN_URL)

    assert posts(mock, "/issues") == []
    [(commented_on, comment)] = github.comments
    assert commented_on == number
    assert "- **word**: download of word.pkg was short" in comment
    assert RUN_URL in comment


def test_publish_failure_without_open_issue_opens_one_per_command(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    github.add_issue("Failed (check): excel", FAILURE_MARKER, ["m365-update-manager"])

    notifier().publish(FAILED, command="promote", run_url=None)

    [sent] = posts(mock, "/issues")
    assert sent["title"] == "Failed (promote): word"
    assert sent["labels"] == ["m365-update-manager", "failed"]
    assert "<!-- m365-update-manager:failure=promote -->" in sent["body"]
    assert github.comments == []


def test_publish_mixed_kinds_opens_one_issue_per_kind(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    promoted = event(EventKind.PROMOTED, "outlook")

    notifier().publish([*STAGED, promoted], command="promote", run_url=None)

    titles = [sent["title"] for sent in posts(mock, "/issues")]
    assert titles == [
        "Staged: word 16.112.26081720, excel 16.112.26081720",
        "Promoted: outlook 16.112.26081720",
    ]


def test_publish_lost_answer_to_issue_creation_opens_no_second_issue(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    github.lose_next_issue_answer = True

    with stamina.set_testing(True, attempts=2, cap=True):
        notifier().publish(STAGED, command="check", run_url=None)

    assert len(posts(mock, "/issues")) == 1
    assert len(github.issues) == 1


def test_publish_many_apps_keeps_title_short(
    mock: responses.RequestsMock, github: FakeGitHub
) -> None:
    many = [event(EventKind.STAGED, f"app{index:02d}") for index in range(30)]

    notifier().publish(many, command="check", run_url=None)

    [sent] = posts(mock, "/issues")
    assert len(sent["title"]) <= 200
    assert re.search(r", and \d+ more$", sent["title"])


def test_publish_without_events_sends_no_request(
    mock: responses.RequestsMock,
) -> None:
    notifier().publish([], command="check", run_url=None)

    assert len(mock.calls) == 0


def test_publish_on_github_enterprise_uses_its_api_url(
    mock: responses.RequestsMock,
) -> None:
    ghe = FakeGitHub(
        mock,
        api="https://ghe.example.com/api/v3",
        port_api="https://ghe.example.com:443/api/v3",
    )
    ghe.add_issue("Failed (check): excel", FAILURE_MARKER, ["m365-update-manager"])

    notifier("https://ghe.example.com/api/v3").publish(
        FAILED, command="check", run_url=None
    )

    hosts = {urlsplit(call.request.url or "").netloc for call in mock.calls}
    assert hosts == {"ghe.example.com:443"}
    assert len(ghe.comments) == 1


@pytest.mark.parametrize(
    ("status", "headers", "expected"),
    [
        (401, {}, "GITHUB_TOKEN"),
        (
            403,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1786000000"},
            "resets at",
        ),
        (403, {}, "`issues: write` permission"),
        (500, {}, "re-run later"),
    ],
    ids=["401-bad-token", "403-rate-limit", "403-no-permission", "500"],
)
def test_publish_refused_raises_github_error_without_token(
    mock: responses.RequestsMock,
    status: int,
    headers: dict[str, str],
    expected: str,
) -> None:
    labels = "https://api.github.com:443/repos/o/r/labels"
    answer = {"message": f"refused {TOKEN}"}
    mock.get(labels, status=status, json=answer, headers=headers)

    with pytest.raises(GitHubError) as caught:
        notifier().publish(STAGED, command="check", run_url=None)

    assert expected in str(caught.value)
    assert TOKEN not in str(caught.value)
    assert posts(mock, "/issues") == []


def test_publish_network_error_raises_github_error(
    mock: responses.RequestsMock,
) -> None:
    labels = "https://api.github.com:443/repos/o/r/labels"
    mock.get(labels, body=requests.ConnectionError("no route to host"))

    with pytest.raises(GitHubError, match="could not reach GitHub"):
        notifier().publish(STAGED, command="check", run_url=None)


def test_notifier_from_settings_without_token_returns_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GITHUB_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "o/r")

    assert GitHubNotifier.from_settings(Settings()) is None
