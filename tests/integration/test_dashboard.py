"""The fleet dashboard in a real browser: Debian's headless Chromium driven by Selenium
through chromium-driver, against a real controller with nodes that speak the agent
protocol (enrol, heartbeat with telemetry, report their assignments as running).

What a person would see: a wrong token is refused on the sign-in form; the operator
token opens the dashboard; the nodes appear in their tiers with utilisation, power and
temperature; a node whose heartbeats stop turns red within the page's refresh period
once the controller has marked it Offline. ``EDGETIER_DASHBOARD_SCREENSHOT=<png>`` also
writes the screenshot of the docs (docs/images/dashboard.png).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Header

from edgetier.control import Controller, ControllerSettings, create_app
from edgetier.testing import free_port, make_random_classifier

pytestmark = pytest.mark.integration

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra)")
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="needs Debian's chromium and chromium-driver (make system-deps)",
)

REFRESH_S = 1.0
"""The page's refresh period in these tests (``/ui/?refresh_s=1``)."""
NODE_TIMEOUT_S = 1.5
HEARTBEAT_S = 0.3
# A node's tile has one period to follow the API, plus one read of the API by a browser
# on a busy two-core machine.
TILE_DEADLINE_S = 2 * REFRESH_S + 1.0

FLEET = [  # name, tier, catalog profile, utilisation, temperature, power
    ("cam-gate-1", "terminal", "jetson-orin-nano-8gb", 0.35, 48.0, 7.5),
    ("cam-gate-2", "terminal", "jetson-orin-nano-8gb", 0.52, 55.5, 9.0),
    ("edge-1", "edge", "jetson-agx-orin-64gb", 0.61, 62.0, 38.0),
    ("edge-2", "edge", "jetson-agx-orin-64gb", 0.18, 44.0, 21.0),
    ("edge-3", "edge", "jetson-xavier-nx", 0.93, 83.5, 14.2),
    ("region-1", "region", "l4", 0.47, 58.0, 51.0),
]


class FakeNode:
    """A node that speaks the agent protocol from a thread: heartbeats with fixed
    telemetry (and a Throttled condition when asked) and reports every assignment of its
    desired state as Running, until stopped."""

    def __init__(self, url: str, enrol_token: str, row: tuple[Any, ...], *, hot: bool) -> None:
        self.name, self.tier, self.profile, self.utilisation, self.temp_c, self.power_w = row
        self.hot = hot
        answer = httpx.post(
            f"{url}/v1/enrol",
            json={
                "token": enrol_token,
                "name": self.name,
                "tier": self.tier,
                "profile": self.profile,
            },
        )
        assert answer.status_code == 201, answer.text
        headers = {"Authorization": f"Bearer {answer.json()['credential']}"}
        self.client = httpx.Client(base_url=url, headers=headers, timeout=10)
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"fake-{self.name}", daemon=True)
        self.thread.start()

    def _beat(self) -> dict[str, Any]:
        desired = self.client.get(f"/v1/nodes/{self.name}/desired").json()
        workloads = [
            {"deployment": a["deployment"], "generation": a["generation"], "phase": "Running"}
            for a in desired["assignments"]
        ]
        conditions = []
        if self.hot:
            conditions.append(
                {
                    "type": "Throttled",
                    "status": "True",
                    "reason": "Thermal",
                    "message": f"{self.temp_c} °C, clocks lowered",
                }
            )
        return {
            "telemetry": {
                "time": _now(),
                "utilisation": self.utilisation,
                "temperature_c": self.temp_c,
                "power_w": self.power_w,
            },
            "conditions": conditions,
            "workloads": workloads,
            "desired_generation": desired["generation"],
        }

    def _run(self) -> None:
        while not self.stopped.is_set():
            with contextlib.suppress(httpx.HTTPError):  # the controller is stopping
                self.client.post(f"/v1/nodes/{self.name}/heartbeat", json=self._beat())
            self.stopped.wait(HEARTBEAT_S)

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=10)
        self.client.close()


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat()


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Controller, httpx.Client, dict[str, FakeNode]]]:
    settings = ControllerSettings(
        data_dir=tmp_path / "controller",
        port=free_port(),
        node_timeout_s=NODE_TIMEOUT_S,
        heartbeat_interval_s=HEARTBEAT_S,
        resync_s=1.0,
    )
    with Controller(settings).running() as controller:
        operator = {"Authorization": f"Bearer {controller.service.operator_token}"}
        with httpx.Client(base_url=controller.url, headers=operator, timeout=30) as client:
            nodes = {}
            for row in FLEET:
                token = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
                nodes[row[0]] = FakeNode(controller.url, token, row, hot=row[0] == "edge-3")
            try:
                yield controller, client, nodes
            finally:
                for node in nodes.values():
                    node.stop()


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1100",
        "--lang=en-GB",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(browser: WebDriver, url: str, token: str) -> None:
    browser.get(f"{url}/ui/?refresh_s={REFRESH_S:g}")
    field = WebDriverWait(browser, 10).until(lambda b: b.find_element(By.ID, "token"))
    WebDriverWait(browser, 10).until(lambda b: field.is_displayed())
    field.clear()
    field.send_keys(token)
    browser.find_element(By.ID, "login-button").click()


# The page redraws every refresh, so elements found a moment ago go stale: what a person
# sees is read in one script run (the page's JavaScript cannot redraw in between).
_TILES_JS = """
const tiles = {};
for (const tile of document.querySelectorAll(".node-tile")) {
  const style = getComputedStyle(tile);
  tiles[tile.dataset.node] = {
    health: tile.dataset.health,
    tier: tile.closest("section.tier").dataset.tier,
    text: tile.innerText,
    border: style.borderLeftColor,
    background: style.backgroundColor,
  };
}
return tiles;
"""


def _tiles(browser: WebDriver) -> dict[str, dict[str, str]]:
    return dict(browser.execute_script(_TILES_JS))


def _text(browser: WebDriver, selector: str) -> str:
    return str(
        browser.execute_script(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            selector,
        )
    )


def _rgb(css: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


@needs_browser
def test_a_wrong_token_is_refused(fleet: Any, browser: WebDriver) -> None:
    controller, client, _ = fleet
    _sign_in(browser, controller.url, "eto_0000000000000000.not-the-secret")
    error = WebDriverWait(browser, 10).until(
        lambda b: (
            b.find_element(By.ID, "login-error")
            if b.find_element(By.ID, "login-error").is_displayed()
            else False
        )
    )
    assert "refused this token" in error.text
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert not browser.find_elements(By.CSS_SELECTOR, ".node-tile")
    assert browser.execute_script("return sessionStorage.length") == 0

    # a token no header could carry is refused before it is sent
    _sign_in(browser, controller.url, "eto_clé secrète")
    WebDriverWait(browser, 10).until(lambda b: "printable ASCII" in _text(b, "#login-error"))

    # a valid token that is not an operator's (an enrolment token) is refused too
    enrol = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
    _sign_in(browser, controller.url, enrol)
    WebDriverWait(browser, 10).until(
        lambda b: "not an operator token" in b.find_element(By.ID, "login-error").text
    )
    assert not browser.find_element(By.ID, "dashboard").is_displayed()

    # an operator token revoked while the page is open ends the session at the next refresh
    second = client.post("/v1/tokens", json={"kind": "operator"}).json()
    _sign_in(browser, controller.url, second["token"])
    WebDriverWait(browser, 10).until(lambda b: len(_tiles(b)) == len(FLEET))
    assert client.delete(f"/v1/tokens/{second['id']}").status_code == 200
    WebDriverWait(browser, TILE_DEADLINE_S).until(
        lambda b: "no longer accepts this token" in _text(b, "#login-error")
    )
    assert not browser.find_element(By.ID, "dashboard").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


@needs_browser
def test_nodes_by_tier_and_a_lost_node_turns_red(
    fleet: Any, browser: WebDriver, tmp_path: Path
) -> None:
    controller, client, nodes = fleet
    model = make_random_classifier(tmp_path / "classifier.onnx")
    pushed = client.post(
        "/v1/models/classifier/versions", files={"file": ("model.onnx", model.read_bytes())}
    )
    assert pushed.status_code == 201, pushed.text
    deployment = {
        "apiVersion": "edgetier/v1",
        "kind": "Deployment",
        "metadata": {"name": "classify"},
        "spec": {"model": {"name": "classifier"}, "replicas": 2, "selector": {"tiers": ["edge"]}},
    }
    applied = client.put("/v1/deployments/classify", json=deployment)
    assert applied.status_code == 201, applied.text

    _sign_in(browser, controller.url, controller.service.operator_token)
    WebDriverWait(browser, 10).until(lambda b: len(_tiles(b)) == len(FLEET))
    assert not browser.find_element(By.ID, "login").is_displayed()

    # every node in its tier's section, tiers in order terminal -> region
    order = browser.execute_script(
        "return [...document.querySelectorAll('#tiers section.tier')].map(s => s.dataset.tier)"
    )
    assert order == ["terminal", "edge", "region"]
    assert {name: tile["tier"] for name, tile in _tiles(browser).items()} == {
        row[0]: row[1] for row in FLEET
    }

    # health, utilisation, power and temperature as the heartbeats said
    WebDriverWait(browser, 10).until(lambda b: _tiles(b)["edge-3"]["health"] == "warn")
    tiles = _tiles(browser)
    assert "Throttled" in tiles["edge-3"]["text"]
    edge1 = tiles["edge-1"]
    assert edge1["health"] == "ok" and "Ready" in edge1["text"]
    for figure in ("61 %", "38.0 W", "62.0 °C"):
        assert figure in edge1["text"]

    # the deployment, its placements and (without a rollout API here) "no rollouts"
    classify = 'tr[data-deployment="classify"]'
    WebDriverWait(browser, 15).until(lambda b: "Ready" in _text(b, classify).split())
    assert "model classifier" in _text(browser, classify)
    assert browser.find_element(By.ID, "no-rollouts").is_displayed()
    assert "DeploymentApplied" in _text(browser, "#events")

    # the node's heartbeats stop: once the controller marks it Offline, its tile turns
    # red within the page's refresh period (and nothing else does)
    nodes["edge-2"].stop()
    WebDriverWait(browser, NODE_TIMEOUT_S * 10, poll_frequency=0.05).until(
        lambda _: any(
            c["type"] == "Offline" and c["status"] == "True"
            for c in client.get("/v1/nodes/edge-2").json()["status"]["conditions"]
        ),
        "the controller never marked edge-2 Offline",
    )
    try:
        WebDriverWait(browser, TILE_DEADLINE_S, poll_frequency=0.05).until(
            lambda b: _tiles(b)["edge-2"]["health"] == "offline"
        )
    except TimeoutException:
        pytest.fail(
            f"edge-2 was Offline in the API but its tile did not turn red within "
            f"{TILE_DEADLINE_S} s (refresh period {REFRESH_S} s)"
        )
    tiles = _tiles(browser)
    red, green, blue = _rgb(tiles["edge-2"]["border"])
    assert red > 180 and green < 80 and blue < 80, f"not red: {tiles['edge-2']['border']}"
    r, g, b = _rgb(tiles["edge-2"]["background"])
    assert r > g + 20 and r > b + 20, f"background not red: {tiles['edge-2']['background']}"
    assert _rgb(tiles["edge-1"]["border"]) != (red, green, blue)
    assert "Offline" in tiles["edge-2"]["text"]
    assert {n for n, t in tiles.items() if t["health"] == "offline"} == {"edge-2"}
    WebDriverWait(browser, TILE_DEADLINE_S).until(lambda b: "NodeOffline" in _text(b, "#events"))
    assert "1 offline" in _text(browser, "#tier-edge h3").lower()

    shot = os.environ.get("EDGETIER_DASHBOARD_SCREENSHOT")
    if shot:
        browser.execute_script("window.scrollTo(0, 0)")
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1440, min(1500, max(900, int(height) + 40)))
        browser.save_screenshot(shot)

    # what nodes send is shown as text, never run as HTML
    sent = nodes["edge-1"].client.post(
        "/v1/nodes/edge-1/records",
        json={
            "records": [
                {
                    "sequence": 1,
                    "time": _now(),
                    "kind": "WorkloadFailed",
                    "subject": '<img src="x" onerror="window.pwned = 1">',
                    "data": {"message": "<b>not bold</b>"},
                }
            ]
        },
    )
    assert sent.status_code == 200, sent.text
    WebDriverWait(browser, TILE_DEADLINE_S).until(
        lambda b: "<b>not bold</b>" in _text(b, "#events")
    )
    assert '<img src="x" onerror="window.pwned = 1">' in _text(browser, "#events")
    assert browser.execute_script("return window.pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#events img, #events b")

    # signing out forgets the token: the sign-in form is back
    browser.find_element(By.ID, "logout").click()
    assert browser.find_element(By.ID, "login").is_displayed()
    assert browser.execute_script("return sessionStorage.length") == 0


# Rollouts in every state without driving real ones: the controller's GET /v1/rollouts
# is replaced by a route that answers in its shape (the fields the page draws:
# `deployment`, `state`, `from_revision`, `to_revision`, `batch` (1-based), `batches`,
# `nodes_updated`, `nodes_total`, `message`, `started_at`, `updated_at`), so that the
# page's drawing of each state is tested; test_fleet_rollout drives real ones.
def _rollout(deployment: str, state: str, batch: int, updated: int, **more: Any) -> dict[str, Any]:
    return {
        "deployment": deployment,
        "state": state,
        "from_revision": 3,
        "to_revision": 4,
        "batch": batch,
        "batches": 5,
        "nodes_updated": updated,
        "nodes_total": 10,
        "message": more.get("message", ""),
        "started_at": _now(),
        "updated_at": _now(),
    }


@pytest.fixture
def rollouts(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the controller's ``GET /v1/rollouts`` answers (the test changes it)."""
    from edgetier.control import _controller

    shown: list[dict[str, Any]] = []

    def with_rollouts(service: Any, **options: Any) -> Any:
        app = create_app(service, **options)
        app.router.routes[:] = [
            r for r in app.router.routes if getattr(r, "path", None) != "/v1/rollouts"
        ]

        @app.get("/v1/rollouts")
        def list_rollouts(authorization: str | None = Header(None)) -> list[dict[str, Any]]:
            service.principal(authorization).require_operator()  # as the API's routes do
            return shown

        return app

    monkeypatch.setattr(_controller, "create_app", with_rollouts)
    return shown


@needs_browser
def test_rollouts_show_state_batch_and_progress(
    rollouts: list[dict[str, Any]], fleet: Any, browser: WebDriver
) -> None:
    controller, _, _ = fleet
    _sign_in(browser, controller.url, controller.service.operator_token)
    WebDriverWait(browser, 10).until(lambda b: len(_tiles(b)) == len(FLEET))
    assert browser.find_element(By.ID, "no-rollouts").is_displayed()  # an empty list

    rollouts.append(_rollout("traffic", "Progressing", 2, 4))
    rollouts.append(
        _rollout("counting", "RolledBack", 1, 0, message="p99 412 ms over the 200 ms target")
    )
    progressing = '[data-rollout="traffic"]'
    WebDriverWait(browser, TILE_DEADLINE_S).until(lambda b: _text(b, progressing))
    text = _text(browser, progressing)
    for shown in ("Progressing", "revision 3 → 4", "batch 2 of 5", "4 of 10 nodes updated"):
        assert shown in text
    width = browser.execute_script(
        "return document.querySelector(arguments[0] + ' .progress > span').style.width",
        progressing,
    )
    assert width == "40%"
    failed = _text(browser, '[data-rollout="counting"]')
    assert "RolledBack" in failed and "p99 412 ms over the 200 ms target" in failed
    assert not browser.find_element(By.ID, "no-rollouts").is_displayed()

    rollouts.clear()
    WebDriverWait(browser, TILE_DEADLINE_S).until(
        lambda b: b.find_element(By.ID, "no-rollouts").is_displayed()
    )


@needs_browser
def test_a_large_tier_is_drawn_as_squares(fleet: Any, browser: WebDriver) -> None:
    controller, client, _ = fleet
    extra = [f"edge-x{i:02d}" for i in range(22)]  # the edge tier then holds 25 (> 24) nodes
    for name in extra:
        token = client.post("/v1/tokens", json={"kind": "enrol"}).json()["token"]
        enrolled = httpx.post(
            f"{controller.url}/v1/enrol",
            json={"token": token, "name": name, "tier": "edge", "profile": "jetson-xavier-nx"},
        )
        assert enrolled.status_code == 201, enrolled.text
        # one heartbeat, then silence: each goes Offline after the node timeout
        beat = httpx.post(
            f"{controller.url}/v1/nodes/{name}/heartbeat",
            json={"telemetry": {"time": _now(), "utilisation": 0.5, "power_w": 10.0}},
            headers={"Authorization": f"Bearer {enrolled.json()['credential']}"},
        )
        assert beat.status_code == 200, beat.text

    _sign_in(browser, controller.url, controller.service.operator_token)
    WebDriverWait(browser, 15).until(
        lambda b: {t["health"] for n, t in _tiles(b).items() if n in extra} == {"offline"}
    )
    squares = browser.execute_script(
        "return [...document.querySelectorAll('#tier-edge .node-tile.compact')]"
        ".map(s => [s.dataset.node, s.title, getComputedStyle(s).backgroundColor])"
    )
    assert sorted(name for name, _, _ in squares) == sorted([*extra, "edge-1", "edge-2", "edge-3"])
    by_name = {name: (title, colour) for name, title, colour in squares}
    title, colour = by_name["edge-1"]
    assert "Ready" in title and "38.0 W" in title and "62.0 °C" in title
    red, green, blue = _rgb(by_name["edge-x00"][1])
    assert red > 180 and green < 80 and blue < 80
    assert _rgb(colour) != (red, green, blue)
    # the small tiers keep their full tiles
    assert not browser.find_elements(By.CSS_SELECTOR, "#tier-terminal .node-tile.compact")
    assert "25 nodes · 22 offline" in _text(browser, "#tier-edge h3").lower()
