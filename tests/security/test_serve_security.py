"""`kdviz serve` trusts nothing from the network, tried against a real server on localhost: no URL imports a module
or reaches a route the dashboard does not need, foreign Host headers are refused on HTTP and on the websocket, any
query string is answered without a server error, broken runs are listed while the good ones are served, and a
session writes nothing into the runs."""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import shutil
import sys
import urllib.parse
from pathlib import Path

import pytest
from browser import free_port, served
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from load import open_session

pytestmark = pytest.mark.slow  # a real server, started once for the module

WEBSOCKET_UPGRADE = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                     "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def request(port: int, path: str, host: str | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """(status, body) of one GET to the server on 127.0.0.1:port, with the given Host header."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", f"localhost:{port}" if host is None else host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def tree_digest(path: Path) -> str:
    """A digest of every file's name and bytes under ``path``: any write changes it."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def runs_dir(demo_runs, tmp_path_factory) -> Path:
    """A directory with a good run (a copy of the demo CNN run) and three broken ones beside it."""
    root = tmp_path_factory.mktemp("served")
    good = root / "good.kdviz"
    shutil.copytree(demo_runs["digits-cnn"].path, good)
    not_json = root / "not-json.kdviz"
    shutil.copytree(good, not_json)
    (not_json / "meta.json").write_text("{ not json", encoding="utf-8")
    nameless = root / "nameless.kdviz"
    shutil.copytree(good, nameless)
    meta = json.loads((nameless / "meta.json").read_text())
    del meta["teacher"]["name"]
    (nameless / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    xss = root / "<img src=x onerror=alert(1)>.kdviz"
    xss.mkdir()
    (xss / "meta.json").write_text("[]", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def server(runs_dir, tmp_path_factory):
    """`python -m kdviz.cli serve DIR` started from a working directory that holds a module file which, if ever
    imported, writes a marker: yields (port, working directory, server output so far)."""
    cwd = tmp_path_factory.mktemp("cwd")
    (cwd / "kdviz_evil.py").write_text("from pathlib import Path\nPath(__file__).with_name('IMPORTED').write_text('x')\n"
                                       "class X:\n    __css__ = ['a.css']\n", encoding="utf-8")
    (cwd / "a.css").write_text("body{}", encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "kdviz.cli", "serve", str(runs_dir), "--port", str(port), "--origin", "kd.example.org"]
    with served(command, port, cwd=cwd, timeout=120) as process:
        yield port, cwd, process


def test_no_url_imports_a_module_or_reaches_an_unneeded_route(server):
    port, cwd, _ = server
    for path in ("/components/kdviz_evil/X/__css__/a.css", "/components/panel/io/x", "/autoload.js", "/metadata",
                 "/static/../kdviz_evil.py", "/kdviz_evil.py", "/liveness", "/rest/session_info", "/admin"):
        status, _ = request(port, path)
        assert status == 404, path
    assert not (cwd / "IMPORTED").exists()  # the module in the server's working directory was never imported
    for path in ("/", "/favicon.ico", "/static/js/bokeh.min.js"):
        assert request(port, path)[0] == 200, path


def test_foreign_hosts_are_refused_on_http_and_websocket(server):
    port, _, _ = server
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "kd.example.org", f"KD.example.org:{port}"):
        assert request(port, "/", host)[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", f"localhost.evil.example:{port}", "127.0.0.1.nip.io", ""):
        status, body = request(port, "/", host)
        assert status == 403 and b"--origin" in body, host
        # a websocket whose Origin equals its Host (what a DNS-rebound page sends) is refused before the upgrade
        status, _ = request(port, "/ws", host, {**WEBSOCKET_UPGRADE, "Origin": f"http://{host}"})
        assert status == 403, host
    status, _ = request(port, "/ws", f"localhost:{port}", {**WEBSOCKET_UPGRADE, "Origin": "http://evil.example"})
    assert status == 403  # an allowed Host with a foreign Origin: Bokeh's origin allowlist


ARBITRARY = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["²", "٣", "１２", "-1", "1e9", "9" * 40, "../good", "/etc/passwd", "good", "0", "%00", "\x00", "<script>"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(run=ARBITRARY, sample=ARBITRARY, step=ARBITRARY, page=ARBITRARY)
def test_any_query_is_answered_without_a_server_error(server, run, sample, step, page):
    port, _, _ = server
    query = urllib.parse.urlencode({"run": run, "sample": sample, "step": step, "page": page})
    status, _ = request(port, f"/?{query}")
    assert status == 200


def test_broken_runs_are_listed_and_the_good_run_is_served(server, runs_dir):
    port, _, _ = server
    url = f"http://localhost:{port}/"
    before = tree_digest(runs_dir)
    for page in ("overview", "logits"):
        open_session(url, page)  # raises unless the page's figures arrive
    from bokeh.client import pull_session

    session = pull_session(url=url)
    try:
        texts = html.unescape(" ".join(str(getattr(model, "text", "")) for model in session.document.models))
    finally:
        session.close()
    assert "Teacher: CNN teacher" in texts
    for name, reason in (("not-json", "not valid JSON"), ("nameless", "teacher.name: Field required")):
        assert f"{name} cannot be shown" in texts and reason in texts, name
    assert "&lt;img src=x onerror=alert(1)&gt; cannot be shown" in texts  # a run's name is text, escaped
    assert str(runs_dir) not in texts  # visitors see run names, never where the runs lie on the server
    assert tree_digest(runs_dir) == before  # the sessions wrote nothing
