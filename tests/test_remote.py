"""Runs on object storage, against a real S3 API server on localhost (moto's server mode, started here): capture
publishes a run with its meta.json last, `Run.open` reads only metadata (counted from the server's request log),
arrays are read by chunk, and `kdviz export` and `kdviz serve` work from the bucket."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from browser import free_port, kdviz_server, offline_page, require_chromium
from conftest import TinyCNN

import kdviz
from kdviz import remote
from kdviz.app.export import export_html
from kdviz.cli import main
from kdviz.distributed import require_path
from kdviz.errors import InputError, NotARunError, RunExistsError, RunNotFoundError
from kdviz.store import GroupWriter

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

BUCKET = "kdviz-runs"
REQUEST = re.compile(r'"(GET|HEAD|PUT|POST|DELETE) /([^ ?]*)')


class RequestLog(logging.Handler):
    """The S3 server's access log (werkzeug's): one (method, key) per request."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = REQUEST.search(record.getMessage())
        if match:
            self.requests.append((match.group(1), match.group(2)))

    def gets(self) -> list[str]:
        return [key for method, key in self.requests if method == "GET"]


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on a free localhost port, the environment pointing s3fs at it, and its request log."""
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=True)
    server.start()
    log = RequestLog()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.addHandler(log)
    werkzeug.setLevel(logging.INFO)
    patch = pytest.MonkeyPatch()
    for key, value in {"AWS_ACCESS_KEY_ID": "kdviz", "AWS_SECRET_ACCESS_KEY": "kdviz", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
        patch.setenv(key, value)
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(BUCKET)
    try:
        yield log
    finally:
        patch.undo()
        werkzeug.removeHandler(log)
        server.stop()


@pytest.fixture(scope="module")
def published(s3, tmp_path_factory):
    """A CNN pair captured straight to the bucket, and the same capture on local disk."""
    torch.manual_seed(0)
    teacher, student = TinyCNN(8, n_classes=10), TinyCNN(4, n_classes=10)
    x, y = torch.randn(48, 1, 8, 8), torch.randint(0, 10, (48,))
    kwargs = {"layers": ["stem", "body"], "batch_size": 16, "class_names": [f"c{i}" for i in range(10)], "progress": False}
    url = f"s3://{BUCKET}/runs/cnn.kdviz"
    run = kdviz.capture(teacher, student, (x, y), path=url, **kwargs)
    local = kdviz.capture(teacher, student, (x, y), path=tmp_path_factory.mktemp("local") / "cnn.kdviz", **kwargs)
    return url, run, local


def test_capture_to_s3_equals_a_local_capture(published):
    url, run, local = published
    assert run.remote and run.path == url and run.name == "cnn"
    assert run.array_keys() == local.array_keys()
    for key in local.array_keys():
        np.testing.assert_array_equal(run.array(key)[:], local.array(key)[:], err_msg=key)
    assert {k: v for k, v in run.meta.items() if k != "created"} == {k: v for k, v in local.meta.items() if k != "created"}


def test_opening_a_run_reads_only_its_metadata(published, s3):
    url, _, _ = published
    s3.requests.clear()
    run = kdviz.Run.open(url, storage_options={"skip_instance_cache": True})  # a fresh client: nothing cached
    assert sorted(set(s3.gets())) == [f"{BUCKET}/runs/cnn.kdviz/meta.json", f"{BUCKET}/runs/cnn.kdviz/zarr.json"]
    assert not [key for _, key in s3.requests if "/c/" in key]  # no chunk of any array
    s3.requests.clear()
    logits = run.teacher.logits[:5]  # reading a slice fetches that array's metadata and its chunks only, and the
    assert logits.shape == (5, 10)   # run's manifest.json once (what the array must be, kdviz.integrity)
    read = {key.split("/cnn.kdviz/")[1] for key in s3.gets()}
    assert "manifest.json" in read
    assert {key.split("/")[0:2] == ["teacher", "logits"] for key in read - {"manifest.json"}} == {True}
    s3.requests.clear()
    run.student.logits[:5]
    assert {key.split("/cnn.kdviz/")[1].split("/")[0:2] == ["student", "logits"] for key in s3.gets()} == {True}


def test_a_run_without_meta_json_is_not_a_run_and_names_are_protected(published):
    url, _, local = published
    import fsspec

    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.pipe(f"{BUCKET}/half.kdviz/zarr.json", b"{}")  # what a failed upload could leave: arrays, no meta.json
    with pytest.raises(NotARunError, match=r"no meta\.json"):
        kdviz.Run.open(f"s3://{BUCKET}/half.kdviz")
    with pytest.raises(RunNotFoundError):
        kdviz.Run.open(f"s3://{BUCKET}/nothing.kdviz")
    with pytest.raises(RunExistsError):
        remote.upload(local.path, url)
    assert main(["upload", str(local.path), f"s3://{BUCKET}/copies/cnn.kdviz"]) == 0  # kdviz upload RUN URL
    copy = f"s3://{BUCKET}/copies/cnn.kdviz"
    assert kdviz.Run.open(copy).n_samples == local.n_samples
    assert main(["upload", str(local.path), copy]) == 2  # published already: refused without --overwrite
    assert main(["upload", str(local.path), copy, "--overwrite"]) == 0
    assert remote.list_runs(f"s3://{BUCKET}/copies") == [f"s3://{BUCKET}/copies/cnn.kdviz"]
    with pytest.raises(InputError, match="shared local path"):
        require_path(url)  # distributed capture writes parts to a shared filesystem, not to a bucket
    with pytest.raises(InputError, match="object storage"):
        GroupWriter(url, "attribution/teacher_pred")  # attributions and history are added to local runs only


def test_export_from_s3(published, tmp_path):
    url, run, _ = published
    html = export_html([url], tmp_path / "cnn.html", pages=["logits"]).read_text(encoding="utf-8")
    assert f"<h2>{run.name}</h2>" in html and "How far the student is from the teacher" in html


@pytest.mark.browser
def test_serve_from_s3(published, s3):
    require_chromium()
    _, run, _ = published
    with kdviz_server(f"s3://{BUCKET}/runs") as address, offline_page() as (page, log):  # a prefix: its runs are served
        page.goto(address)
        page.get_by_text("Teacher:").first.wait_for(timeout=30_000)
        assert page.locator(".kd-runs").first.text_content().endswith(run.name)  # the served runs, in the sidebar
        page.locator(".bk-tab", has_text="Logits").first.click()
        page.wait_for_function("""() => { let found = false; const walk = (root) => root.querySelectorAll('*').forEach(el => {
            if (el.classList && el.classList.contains('js-plotly-plot') && ((el.layout || {}).title || {}).text
                && el.layout.title.text.startsWith('How far')) found = true;
            if (el.shadowRoot) walk(el.shadowRoot); }); walk(document); return found; }""", timeout=30_000)
    assert log["console_errors"] == [] and log["blocked"] == []


@pytest.mark.browser
def test_serve_from_s3_in_several_processes(published):
    """Forked server processes each open the bucket's runs themselves (an object-storage client does not survive a
    fork): every visit renders, whichever process answers it."""
    require_chromium()
    _, run, _ = published
    with kdviz_server(f"s3://{BUCKET}/runs", extra=("--num-procs", "2", "--warm")) as address, \
            offline_page() as (page, log):
        for _ in range(4):
            page.goto(address)
            page.get_by_text("Teacher:").first.wait_for(timeout=60_000)
            assert page.locator(".kd-runs").first.text_content().endswith(run.name)
    assert log["console_errors"] == [], (log["console_errors"], log["blocked"])
