"""The dashboard's files as the controller serves them (the page itself is tested in a
real browser: tests/integration/test_dashboard.py), and the newest-events query it reads."""

from __future__ import annotations

import re

from conftest import Api

from edgetier.control._dashboard import DASHBOARD_FILES, DEFAULT_REFRESH_S


async def test_ui_serves_the_page_and_its_files_without_a_token(api: Api) -> None:
    moved = await api.http.get("/ui")
    assert moved.status_code == 307 and moved.headers["location"] == "/ui/"
    page = await api.http.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    # nothing from elsewhere: every script and style sheet is one of the package's files
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert linked and all(link.removeprefix("/ui/") in DASHBOARD_FILES for link in linked)
    for name, media_type in DASHBOARD_FILES.items():
        answer = await api.http.get(f"/ui/{name}")
        assert answer.status_code == 200, name
        assert answer.headers["content-type"] == media_type
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "connect-src 'self'" in policy
        assert "http://" not in answer.text and "https://" not in answer.text, name


async def test_ui_refuses_other_files(api: Api) -> None:
    for name in ("missing.js", "_dashboard.py", "..%2F_api.py", "%2e%2e%2f__init__.py"):
        answer = await api.http.get(f"/ui/{name}")
        assert answer.status_code == 404, name
    answer = await api.http.get("/ui/secrets.txt")
    assert "dashboard file 'secrets.txt' does not exist" in answer.json()["error"]


def test_the_page_and_the_module_state_one_refresh_period() -> None:
    from importlib import resources

    script = (resources.files("edgetier.control") / "_www" / "dashboard.js").read_text()
    stated = re.search(r"const DEFAULT_REFRESH_S = ([0-9.]+);", script)
    assert stated is not None and float(stated.group(1)) == DEFAULT_REFRESH_S


async def test_newest_events_are_the_last_ones_oldest_first(api: Api) -> None:
    for name in ("edge-1", "edge-2", "edge-3"):
        await api.enrol(name)
    every = (await api.http.get("/v1/events", headers=api.operator)).json()
    newest = (await api.http.get("/v1/events?newest=true&limit=4", headers=api.operator)).json()
    assert [e["id"] for e in newest] == [e["id"] for e in every[-4:]]
    first = (await api.http.get("/v1/events?limit=4", headers=api.operator)).json()
    assert [e["id"] for e in first] == [e["id"] for e in every[:4]]
    # with a source and a kind the filters still hold
    enrolled = (
        await api.http.get(
            "/v1/events",
            params={"kind": "NodeEnrolled", "newest": "true", "limit": 2},
            headers=api.operator,
        )
    ).json()
    assert [e["subject"] for e in enrolled] == ["edge-2", "edge-3"]
