"""The public server under hostile clients (issue 27): five holes an outside visitor found, each
reproduced here over HTTP on loopback (or, for the handlers, through the handler the route
calls). Each test failed on the code before its fix.

1. upload files gradio stores but the app never records (a field not named ``files``, a client
   that hangs up mid-body, a restart) are deleted, never left to fill the disk budget;
2. an upload's declared length is the most the server reads: a chunked body is refused and a
   body longer than its ``Content-Length`` is cut off;
3. a client's hourly quota counts the uploads still arriving, so parallel uploads cannot pass it;
4. a student zip cannot make the server build a model bigger than its weights file, and the
   model cache keeps to a memory budget, not only a count;
5. Draw's cost is capped by the characters it encodes, not only by its sentence count.

Then the doubtful points the issue left to decide (docs/public-server.md, *Hostile clients*):
other routes take small bodies without files or remote URLs, values of the wrong type get one
line, the Search query renders as text, refusals name no visitor folder, a refused zip leaves
no folder, an upload never deletes another visitor's folder, one address queues one run, and a
forwarded header from loopback changes no client's address.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

import pytest

gr = pytest.importorskip("gradio")

from tests.test_app import serve_app  # noqa: E402
from webapp import budget, model_cache, settings, uploads  # noqa: E402

KB = 1024


@pytest.fixture(autouse=True)
def _hermetic(tmp_path, monkeypatch, allow_tiny_models, isolated_cache):
    """Visitors' folders and gradio's upload folder in the test's folder; small upload caps."""
    monkeypatch.setattr(settings, "WORK_ROOT", tmp_path / "visitors")
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(uploads, "_uploads", {})
    monkeypatch.setattr(settings, "MAX_STUDENT_ZIP_BYTES", 200 * KB)
    monkeypatch.setattr(settings, "MAX_UPLOAD_BYTES", 100 * KB)
    monkeypatch.setattr(settings, "UPLOAD_QUOTA_BYTES", 350 * KB)


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def _multipart(field: str, filename: str, payload: bytes) -> tuple[str, bytes]:
    """(Content-Type header, body) of a one-file multipart form."""
    boundary = "kdboundary" + os.urandom(6).hex()
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    body = head + payload + f"\r\n--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", body


def _open(port: int, content_type: str, headers: dict[str, str]) -> socket.socket:
    """A raw connection that has sent an upload request's head, not yet its body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    lines = [
        "POST /gradio_api/upload HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: {content_type}",
        *(f"{k}: {v}" for k, v in headers.items()),
        "",
        "",
    ]
    sock.sendall("\r\n".join(lines).encode())
    return sock


def _send(sock: socket.socket, data: bytes) -> None:
    """Send what the server still reads (it may have answered and stopped reading)."""
    with contextlib.suppress(OSError):
        sock.sendall(data)


def _status(sock: socket.socket) -> int:
    """The HTTP status the server answered on a raw connection."""
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0


def _wait_until(predicate, seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


# ---- 1. leftover upload files ------------------------------------------------------------------
def test_a_file_under_another_field_name_is_refused_and_leaves_nothing(tmp_path):
    """Finding 1: a file posted under a field not named ``files`` answered 200 ``[]`` and left a
    ``tmpXXXX`` file in the upload folder that no quota counted and no sweep deleted."""
    import httpx

    folder = tmp_path / "gradio"
    with serve_app() as (_, url, _port):
        response = httpx.post(
            f"{url}gradio_api/upload",
            files=[("junk", ("x.zip", os.urandom(150 * KB), "application/zip"))],
            timeout=60,
        )
        assert response.status_code == 400, (response.status_code, response.text)
        assert "files" in response.text  # says which field the route takes
        assert _wait_until(lambda: budget.in_flight_bytes() == 0)
        assert _files_in(folder) == []
        # A well-formed upload still works.
        ok = httpx.post(
            f"{url}gradio_api/upload",
            files=[("files", ("y.tsv", os.urandom(50 * KB), "text/plain"))],
            timeout=60,
        )
        assert ok.status_code == 200 and Path(ok.json()[0]).is_file()


def test_an_upload_cut_off_midway_leaves_nothing(tmp_path):
    """Finding 1: a client that sends half its declared body and hangs up left gradio's
    temporary file behind (admitted, then never recorded)."""
    folder = tmp_path / "gradio"
    with serve_app() as (_, _url, port):
        content_type, body = _multipart("files", "half.zip", os.urandom(150 * KB))
        sock = _open(port, content_type, {"Content-Length": str(len(body))})
        _send(sock, body[: len(body) // 2])
        assert _wait_until(lambda: any(p.name.startswith("tmp") for p in _files_in(folder)))
        sock.close()
        assert _wait_until(lambda: budget.in_flight_bytes() == 0)
        assert _wait_until(lambda: _files_in(folder) == []), _files_in(folder)


def test_leftovers_of_an_earlier_process_are_deleted_at_start(tmp_path):
    """Finding 1: 152 MB of such files were still there after a restart."""
    import httpx

    folder = tmp_path / "gradio"
    folder.mkdir()
    leftover = folder / "tmpab12cd34"
    leftover.write_bytes(b"\0" * (64 * KB))
    with serve_app() as (_, url, _port):
        assert httpx.get(url, timeout=30).status_code == 200
        assert _wait_until(lambda: not leftover.exists())


# ---- 2. the declared length --------------------------------------------------------------------
def test_a_chunked_upload_with_a_small_declared_length_is_refused(tmp_path):
    """Finding 2: ``Content-Length: 100`` with ``Transfer-Encoding: chunked`` was admitted on
    the 100 bytes, and the whole chunked body was read and stored."""
    folder = tmp_path / "gradio"
    with serve_app() as (_, _url, port):
        content_type, body = _multipart("files", "big.zip", os.urandom(180 * KB))
        sock = _open(port, content_type, {"Content-Length": "100", "Transfer-Encoding": "chunked"})
        for start in range(0, len(body), 16 * KB):
            piece = body[start : start + 16 * KB]
            _send(sock, f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        _send(sock, b"0\r\n\r\n")
        status = _status(sock)
        assert status in (400, 411, 413), status
        assert _wait_until(lambda: budget.in_flight_bytes() == 0)
        assert _files_in(folder) == []


def test_the_server_reads_no_more_than_the_declared_length():
    """Finding 2, the guard's own count: whatever the transport, a body that runs past the
    length it declared is cut off there (the request fails, nothing is stored)."""
    import anyio

    from webapp.upload_guard import UploadGuard

    content_type, body = _multipart("files", "big.zip", os.urandom(100 * KB))
    read = {"bytes": 0}

    async def app(scope, receive, send):  # reads the whole body, as gradio's route does
        while True:
            message = await receive()
            read["bytes"] += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    chunks = [body[i : i + 8 * KB] for i in range(0, len(body), 8 * KB)]

    async def receive():
        piece = chunks.pop(0)
        return {"type": "http.request", "body": piece, "more_body": bool(chunks)}

    sent = []

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/gradio_api/upload",
        "headers": [
            (b"content-type", content_type.encode()),
            (b"content-length", b"1000"),
        ],
        "client": ("10.9.9.9", 1),
    }
    with pytest.raises(Exception, match="(?i)length"):
        anyio.run(UploadGuard(app), scope, receive, send)
    assert read["bytes"] <= 1000 + 8 * KB  # at most the chunk that crossed the line
    assert budget.in_flight_bytes() == 0


# ---- 3. the quota counts uploads still arriving ------------------------------------------------
def test_parallel_uploads_from_one_address_cannot_pass_the_quota(tmp_path):
    """Finding 3: three 25 MB uploads at once passed a 30 MB hourly quota, because the quota
    counted only finished uploads. Here: 350 KB an hour, three of 150 KB at once."""
    with serve_app() as (_, _url, port):
        requests = [_multipart("files", f"p{i}.zip", os.urandom(150 * KB)) for i in range(3)]
        socks = []
        for n, (content_type, body) in enumerate(requests):
            sock = _open(port, content_type, {"Content-Length": str(len(body))})
            _send(sock, body[: 4 * KB])
            socks.append(sock)
            if n < 2:  # the guard has admitted it (counted as arriving) before the next comes
                want = sum(len(b) for _, b in requests[: n + 1])
                assert _wait_until(lambda w=want: budget.in_flight_bytes() >= w)
        socks[2].settimeout(15)  # today's code waited for a body that never comes
        third = _status(socks[2])  # answered before its body: nothing more was sent
        for sock, (_, body) in zip(socks[:2], requests[:2], strict=True):
            _send(sock, body[4 * KB :])
        firsts = [_status(s) for s in socks[:2]]
        assert firsts == [200, 200], firsts
        assert third == 429, third


# ---- 4. a student zip and the model cache ------------------------------------------------------
def _inflated_student_zip(tmp_path: Path, tiny_student: str) -> Path:
    """The attack's zip, scaled down: the tiny student's tokenizer and modules, a 2 x 2 weights
    file, and a config.json declaring a 300,000-word vocabulary 64 wide (~20 M parameters)."""
    import json
    import shutil
    import zipfile

    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "inflated"
    shutil.copytree(tiny_student, folder)
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config.update(vocab_size=300_000, hidden_size=64, intermediate_size=128)
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    save_file({"x": torch.zeros(2, 2)}, str(folder / "model.safetensors"))
    archive = tmp_path / "inflated.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, f"run-1/{file.relative_to(folder).as_posix()}")
    return archive


def test_a_student_zip_cannot_declare_a_model_bigger_than_its_weights(tmp_path, tiny_student):
    """Finding 4: a 3.8 MB zip whose config.json declared vocab_size 300000 and hidden_size 1024
    over a 2 x 2 weights file loaded (randomly initialised) and raised the server's memory by
    1.1 GB. Now the model a zip's config declares must be the one its weights hold, checked
    before anything is built."""
    from webapp.session import Visitor
    from webapp.student_zip import load_student_zip

    archive = _inflated_student_zip(tmp_path, tiny_student)
    loads = model_cache._load_encoder.cache_info().misses
    visitor = Visitor()
    with pytest.raises(gr.Error) as err:
        load_student_zip(str(archive), visitor)
    message = str(getattr(err.value, "message", err.value))
    assert "declares" in message and "weights" in message, message
    assert "visitor-" not in message and str(settings.WORK_ROOT) not in message
    assert model_cache._load_encoder.cache_info().misses == loads  # nothing was built
    assert visitor.student_dir is None


def _weight_bytes(encoder) -> int:
    """A model's tensors in memory, each once (its state dict names shared modules twice)."""
    tensors = {t.data_ptr(): t for t in encoder.state_dict().values()}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_the_model_cache_keeps_to_a_memory_budget(tmp_path, monkeypatch, tiny_student):
    """Finding 4: valid students cost 650-700 MB each while cached, and the cache was bounded by
    a count (6) only. Now the models it keeps take at most KD_MODEL_CACHE_MB together, the
    least recently used going first."""
    import shutil

    models = tmp_path / "models"
    folders = [shutil.copytree(tiny_student, models / f"m{i}") for i in range(3)]
    monkeypatch.setenv(settings.MODEL_DIRS_ENV, str(models))
    model_cache._load_encoder.cache_clear()
    one = _weight_bytes(model_cache.get_encoder(str(folders[0])))
    # Room for two of them, not three.
    monkeypatch.setattr(settings, "MODEL_CACHE_BYTES", int(2.5 * one), raising=False)
    # A larger model met before the clear (earlier tests load the real ones) is forgotten with
    # it: CI once failed here when the room kept for it evicted every tiny model.
    model_cache._load_encoder._largest = 10 * one
    model_cache._load_encoder.cache_clear()
    for folder in folders:
        model_cache.get_encoder(str(folder))
    info = model_cache._load_encoder.cache_info()
    assert info.currsize == 2, info
    misses = info.misses
    model_cache.get_encoder(str(folders[2]))  # the most recent one is still there
    assert model_cache._load_encoder.cache_info().misses == misses
    model_cache.get_encoder(str(folders[0]))  # the oldest went, and loads again
    assert model_cache._load_encoder.cache_info().misses == misses + 1
    model_cache._load_encoder.cache_clear()


# ---- 5. Draw's cost by length ------------------------------------------------------------------
def test_draw_is_capped_by_the_characters_it_encodes(tmp_path, monkeypatch, tiny_teacher):
    """Finding 5: 500 sentences a language of ~90 words (de, fr, es, PCA) took 429 s of CPU for
    one Draw: the cap counted sentences, not their length. Now a Draw encodes at most
    KD_DRAW_MAX_CHARS characters, refused before any model is asked."""
    import random

    import webapp.aligned
    from webapp.aligned import aligned_space

    def no_encoding(*a, **k):
        raise AssertionError("the cap must refuse before anything is encoded")

    monkeypatch.setattr(webapp.aligned, "model_vectors", no_encoding)
    monkeypatch.setattr(settings, "DRAW_MAX_CHARS", 20_000, raising=False)
    rng = random.Random(0)
    words = ["the", "cat", "sits", "on", "a", "big", "red", "mat", "and", "dog"]
    rows = ["en\tde"]
    for i in range(40):  # 80 sentences of ~90 words (~400 characters each): 32,000 characters
        en = " ".join(rng.choice(words) for _ in range(90)) + f" {i}"
        rows.append(f"{en}\t{en.upper()}")
    upload = tmp_path / "long.tsv"
    upload.write_text("\n".join(rows) + "\n", encoding="utf-8")
    args = (settings.SOURCES[2], "", str(upload), "de", 40, "pca", ["teacher"])
    with pytest.raises(gr.Error) as err:
        aligned_space(*args, tiny_teacher, tiny_teacher, None)
    message = str(getattr(err.value, "message", err.value))
    assert "characters" in message and "20,000" in message, message


# ---- the doubtful items ------------------------------------------------------------------------
def test_other_routes_take_no_multipart_no_chunked_and_no_large_bodies(tmp_path, monkeypatch):
    """``/gradio_api/component_server`` and ``/gradio_api/process_recording`` took multipart
    bodies outside the upload guard (80 MB held on disk while the connection stayed open), and
    the API took bodies of any size (a 116 MB JSON body cost 300 MB of memory before its
    refusal). Every route but the upload takes at most KD_MAX_BODY_KB, stated up front."""
    import httpx

    monkeypatch.setattr(settings, "MAX_BODY_BYTES", 64 * KB, raising=False)
    folder = tmp_path / "gradio"
    with serve_app() as (_, url, port):
        for route in ("component_server", "process_recording"):
            response = httpx.post(
                f"{url}gradio_api/{route}",
                files=[("files", ("x.zip", os.urandom(40 * KB), "application/zip"))],
                timeout=60,
            )
            assert response.status_code == 415, (route, response.status_code, response.text)
        big = httpx.post(
            f"{url}gradio_api/queue/join",
            content=b'{"data": ["' + b"a" * (200 * KB) + b'"]}',
            headers={"Content-Type": "application/json"},
            timeout=60,
        )
        assert big.status_code == 413 and "limit" in big.text, (big.status_code, big.text)
        sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        sock.sendall(
            b"POST /gradio_api/queue/join HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        assert _status(sock) == 411
        assert httpx.get(url, timeout=30).status_code == 200
    assert _files_in(folder) == []


def test_a_file_reference_to_a_remote_url_is_refused(tiny_teacher, tiny_student):
    """A file value whose path is a public URL made gradio download it, with no size cap."""
    import httpx

    with serve_app() as (_, url, _port):
        remote = {"path": "https://example.com/huge.tsv", "meta": {"_type": "gradio.FileData"}}
        data = [settings.SOURCES[2], "", remote, "fr", 4, "pca", ["teacher"]]
        response = httpx.post(
            f"{url}gradio_api/call/aligned",
            json={"data": [*data, tiny_teacher, tiny_student]},
            timeout=30,
        )
        assert response.status_code == 400, (response.status_code, response.text)
        assert "URL" in response.text


def test_values_of_the_wrong_type_get_a_one_line_refusal(capfd, tiny_teacher, tiny_student):
    """A model name sent as a number or a list, a string in a number field, NaN for sentences
    per language: each gave gradio's generic error and a traceback in the log."""
    import json

    import httpx

    def call(api: str, data: list) -> str:
        body = json.dumps({"data": data})  # NaN written as JSON's NaN, as a client may
        event = httpx.post(
            f"{url}gradio_api/call/{api}",
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        if event.status_code != 200:
            return event.text
        answer = f"{url}gradio_api/call/{api}/{event.json()['event_id']}"
        return httpx.get(answer, timeout=60).text

    aligned = [settings.SOURCES[0], "", None, "de", 4, "pca", ["teacher"], tiny_teacher]
    with serve_app() as (_, url, _port):
        capfd.readouterr()
        cases = [
            ("compare", ["the cat\nthe dog", 123, tiny_student], "teacher"),
            ("compare", ["the cat\nthe dog", [tiny_teacher], tiny_student], "teacher"),
            ("aligned", [*aligned[:4], "abc", *aligned[5:], tiny_student], "sentences per"),
            ("aligned", [*aligned[:4], float("nan"), *aligned[5:], tiny_student], "sentences per"),
        ]
        for api, data, field in cases:
            stream = call(api, data)
            assert "event: error" in stream, stream
            message = stream.split("event: error", 1)[1]
            assert field in message and "null" not in message, (api, message)
        log = capfd.readouterr()
    assert "Traceback" not in log.err + log.out


def test_the_search_query_is_shown_as_text_not_markdown(tiny_teacher, tiny_student):
    """The Search query went into the notes as Markdown: an image (a remote one too) rendered."""
    from webapp.search import ALL_LANGS, search

    query = "![x](https://example.com/p.png) <img src=x> the *cat*"
    notes = search(query, 3, ALL_LANGS, tiny_teacher, tiny_student, None)[0]
    assert "![" not in notes and "<img" not in notes and "](" not in notes, notes
    assert "the \\*cat\\*" in notes  # the words are all there, shown as typed


def test_refusals_do_not_name_the_visitors_folder(tiny_student):
    """A refusal listing the folders a model may lie in named the visitor's own folder
    (``visitor-...``), against the README's claim."""
    from webapp.compare import compare
    from webapp.session import Visitor

    visitor = Visitor()
    visitor.new_run_dir()  # the visitor has a work folder (a run, a zip brought back)
    with pytest.raises(gr.Error) as err:
        compare("the cat\nthe dog", "/etc", tiny_student, visitor)
    message = str(getattr(err.value, "message", err.value))
    assert "unknown model '/etc'" in message
    assert "visitor-" not in message and "your own" in message, message


def test_a_refused_zip_leaves_no_empty_folder(tmp_path):
    """Every failed zip load left an empty ``visitor-*`` folder until the session ended."""
    import zipfile

    from webapp.session import Visitor
    from webapp.student_zip import load_student_zip

    archive = tmp_path / "empty.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("README.md", "no student here")
    for _ in range(3):
        with pytest.raises(gr.Error, match="no kd_delta.json or modules.json"):
            load_student_zip(str(archive), Visitor())
    assert not settings.WORK_ROOT.is_dir() or list(settings.WORK_ROOT.iterdir()) == []


def test_one_address_queues_one_run(tiny_teacher, tiny_student):
    """One address with three sessions queued three runs, each holding the training slot up to
    10 minutes. A page's second session from the same address is refused while the first's run
    is queued or running; another address is not."""
    from tests.test_app import _form
    from webapp.distill import prepare_run
    from webapp.session import Visitor, register_session

    class Request:
        def __init__(self, session: str, address: str) -> None:
            self.session_hash = session
            self.headers = {}
            self.client = type("Client", (), {"host": address})()

    form = _form(tiny_teacher, tiny_student, None, max_pairs=10)
    first, second, elsewhere = Visitor(), Visitor(), Visitor()
    register_session(first, Request("s1", "10.1.1.1"))
    register_session(second, Request("s2", "10.1.1.1"))
    register_session(elsewhere, Request("s3", "10.2.2.2"))
    assert prepare_run(*form, first).queued
    with pytest.raises(gr.Error, match="already queued or running") as err:
        prepare_run(*form, second)
    assert "\n" not in str(getattr(err.value, "message", err.value))
    assert prepare_run(*form, elsewhere).queued
    first.queued = False  # the first run has ended: the address may queue again
    assert prepare_run(*form, second).queued


def test_a_forwarded_header_from_loopback_changes_no_clients_address(monkeypatch):
    """uvicorn took the client's address from ``X-Forwarded-For`` whenever the connection came
    from 127.0.0.1, whatever KD_BEHIND_PROXY said: a local client could be any number of
    clients, each with a fresh quota. ``main()`` now tells uvicorn to trust no such header
    (unless the operator set FORWARDED_ALLOW_IPS)."""
    import httpx

    from webapp.guards import trust_no_forwarded_header

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "recorded")  # so that teardown restores it
    monkeypatch.delenv("FORWARDED_ALLOW_IPS")
    trust_no_forwarded_header()
    assert os.environ["FORWARDED_ALLOW_IPS"] == ""
    monkeypatch.setattr(settings, "BEHIND_PROXY", False)
    with serve_app() as (_, url, _port):
        codes = [
            httpx.post(
                f"{url}gradio_api/upload",
                files=[("files", (f"f{i}.tsv", os.urandom(150 * KB), "text/plain"))],
                headers={"X-Forwarded-For": f"10.0.0.{i}"},
                timeout=60,
            ).status_code
            for i in range(3)
        ]
    assert codes == [200, 200, 429], codes  # one client: 450 KB over its 350 KB an hour
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.1.2.3")
    trust_no_forwarded_header()
    assert os.environ["FORWARDED_ALLOW_IPS"] == "10.1.2.3"  # the operator's choice stands
    # Behind a proxy: the last entry, across every X-Forwarded-For line (a proxy may add its
    # own line after the client's rather than extend it).
    from webapp.session import client_address

    monkeypatch.setattr(settings, "BEHIND_PROXY", True)
    assert client_address("10.0.0.9", ["6.6.6.6, 7.7.7.7", "203.0.113.5"]) == "203.0.113.5"
    assert client_address("10.0.0.9", []) == "10.0.0.9"


def test_an_upload_never_deletes_another_visitors_folder(monkeypatch):
    """Finding 1's aftermath: making room for an upload deleted other visitors' idle folders
    first, so one client's uploads could delete everyone else's runs. Only a run makes room
    that way (one at a time, behind the training slot); an upload that does not fit is 507."""
    folder = settings.WORK_ROOT / "visitor-idle"
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(b"\0" * (300 * KB))
    old = time.time() - 3600
    for path in (folder / "weights.bin", folder):
        os.utime(path, (old, old))
    # 300 KB held + a 200 KB upload + the run reserve of 100 KB: over a 500 KB budget.
    monkeypatch.setattr(settings, "DISK_BUDGET_BYTES", 500 * KB)
    monkeypatch.setattr(settings, "RUN_RESERVE_BYTES", 100 * KB)
    refused = upload_guard_admit("10.3.3.3", str(200 * KB))
    assert refused[0] == 507, refused
    assert (folder / "weights.bin").exists()
    # A run may still make room by deleting the oldest idle folder (the budget's design).
    from webapp.session import Visitor

    monkeypatch.setattr(settings, "RUN_RESERVE_BYTES", 300 * KB)  # 300 + 300 > 500
    Visitor().new_run_dir()
    assert not folder.exists()


def upload_guard_admit(client: str, length: str):
    from webapp.upload_guard import admit

    answer = admit(client, length)
    if isinstance(answer, int):  # admitted: let it go again, as the route would
        budget.upload_written(int(length))
        uploads.settle(answer, 0)
        return 200, "admitted"
    return answer
