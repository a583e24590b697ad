"""The front's answers for paths no app's route takes: each in Kiln's words, none of Serve's."""

import pytest

from kiln.route.front import answer
from kiln.run.serve_config import NO_RELEASE, REFUSED, STARTING, STOPPED

APPS = {"chat": STARTING, "idle": STOPPED, "new": NO_RELEASE, "bad": REFUSED}


@pytest.mark.parametrize(
    ("path", "status", "code", "words"),
    [
        ("/chat/v1/completions", 503, "app_starting", "app 'chat' is starting"),
        ("/chat", 503, "app_starting", "try again in 2s"),
        ("/idle/", 503, "app_stopped", "kiln scale 1 -a idle"),
        ("/new/x", 404, "no_release", "kiln deploy -a new"),
        ("/bad/", 503, "app_not_running", "kiln releases -a bad"),
        ("/nobody/", 404, "no_such_app", "no app is named 'nobody' here"),
        ("/", 404, "no_app", "each app is at /<app>/"),
        ("/ch%61t/", 503, "app_starting", "'chat'"),  # the name as Serve's proxy would match it
    ],
)
def test_each_path_gets_its_apps_state_in_words(
    path: str, status: int, code: str, words: str
) -> None:
    got = answer(path, APPS)
    assert got[:2] == (status, code) and words in got[2]


def test_a_crafted_name_is_cut_short_and_quoted() -> None:
    status, _code, message = answer("/" + "a" * 5000 + "%0a%1b", APPS)
    assert status == 404 and len(message) < 120 and "\n" not in message
