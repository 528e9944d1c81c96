"""modelcache.logs: text lines as ever, JSON lines with the request's fields, typed errors,
and Python logging (libraries, uvicorn, warnings) through the same writer."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import warnings

import pytest

from modelcache import logs
from modelcache.errors import ConfigError
from modelcache.service.http.middleware import request_id_of


@pytest.fixture
def fmt():
    """Set the format for one test; put text back (and Python logging as pytest had it) after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level

    def use(value: str) -> str:
        return logs.configure({logs.VARIABLE: value})

    yield use
    logs.configure({})
    root.handlers, root.level = handlers, level
    logging.captureWarnings(False)


def test_text_lines_keep_their_form_and_name_the_request(fmt) -> None:
    assert fmt("text") == "text"
    assert logs.line("volume verified") == "modelcache: volume verified"
    with logs.request_scope("abc123"):
        logs.bind(model="m")
        assert logs.line("slow answer", event="x") == "modelcache: slow answer (request abc123)"
    assert logs.line("after") == "modelcache: after"


def test_json_lines_carry_time_level_event_fields_and_the_request(fmt) -> None:
    assert fmt("json") == "json"
    with logs.request_scope("abc123"):
        logs.bind(model="sentence-transformers/all-MiniLM-L6-v2")
        record = json.loads(logs.line("done", event="request", status=200, duration_ms=4.2, skipped=None))
    assert record.pop("time").endswith("Z") and len(record) == 7
    assert record == {
        "level": "info",
        "event": "request",
        "message": "done",
        "request_id": "abc123",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "status": 200,
        "duration_ms": 4.2,
    }
    outside = json.loads(logs.line("no request"))
    assert "request_id" not in outside and outside["event"] == "log"


def test_a_wrong_format_falls_back_to_text_and_the_settings_refuse_it(fmt) -> None:
    from modelcache.settings import Settings

    assert fmt("JSON") == "text"  # exact values only, as the settings take them
    with pytest.raises(ConfigError, match=r"MODELCACHE_LOG_FORMAT='JSON' is not one of: text, json"):
        Settings.from_env({"MODELCACHE_LOG_FORMAT": "JSON"})
    assert Settings.from_env({"MODELCACHE_LOG_FORMAT": "json"}).log_format == "json"


def test_errors_are_one_json_line_with_details_remedy_and_exit_code(fmt) -> None:
    exc = ConfigError("MODELCACHE_X is wrong", remedy="fix it", details=["a", "b"])
    out = io.StringIO()
    fmt("text")
    logs.error(exc, stream=out)
    assert out.getvalue() == exc.render() + "\n"
    fmt("json")
    out = io.StringIO()
    logs.error(exc, stream=out)
    (line,) = out.getvalue().splitlines()
    record = json.loads(line)
    assert record["level"] == "error" and record["event"] == "error" and record["error"] == "configuration error"
    assert record["message"] == "MODELCACHE_X is wrong" and record["details"] == ["a", "b"]
    assert record["remedy"] == "fix it" and record["exit_code"] == 2


def test_python_logging_and_warnings_go_through_the_same_writer(fmt, capsys) -> None:
    fmt("json")
    logging.getLogger("uvicorn.error").warning("Invalid HTTP request received.")
    warnings.warn("a library is unhappy", UserWarning, stacklevel=1)
    logging.getLogger("somelib").info("below the root's level: not written")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["event"], r["level"]) for r in lines] == [("uvicorn.error", "warning"), ("py.warnings", "warning")]
    assert lines[0]["message"] == "Invalid HTTP request received."
    assert "a library is unhappy" in lines[1]["message"]
    fmt("text")
    logging.getLogger("modelcache.service.http.routes.realtime").info("session opened")
    assert capsys.readouterr().err == "modelcache: session opened\n"


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("req-42", True),
        ("0f6c1d9a-1b7e-4c52-9b1a-2f0e8d5c7a31", True),
        ("trace@host:1/2+3=4_5.6", True),
        ("has space", False),
        ('quote"d', False),
        ("x" * 129, False),
        ("", False),
        ("é", False),
    ],
)
def test_a_request_id_is_taken_only_when_it_is_a_sane_token(given: str, kept: bool) -> None:
    got = request_id_of([(b"content-type", b"text/plain"), (b"x-request-id", given.encode())])
    if kept:
        assert got == given
    else:
        assert got != given and len(got) == 32 and int(got, 16) >= 0
    made = request_id_of([])
    assert len(made) == 32 and made != request_id_of([])


def test_native_writes_to_fd_2_and_childrens_lines_come_out_as_json_objects() -> None:
    program = """
import os, subprocess, sys
from modelcache import logs
logs.configure({"MODELCACHE_LOG_FORMAT": "json"})
logs.capture_native_output()
os.write(2, b"[ WARN:0@0.021] a native library speaks\\n")
subprocess.run([sys.executable, "-c", "from modelcache import logs; logs.configure({'MODELCACHE_LOG_FORMAT': 'json'}); logs.log('from a child', event='child')"])
subprocess.run(["sh", "-c", "echo plain child line >&2"])
logs.log("from the parent", event="parent")
import time; time.sleep(0.3)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines()]  # each line an object, or this fails
    by_message = {r["message"]: r for r in records}
    assert by_message["[ WARN:0@0.021] a native library speaks"]["event"] == "stderr"
    assert by_message["plain child line"]["event"] == "stderr"
    assert by_message["from a child"]["event"] == "child"  # passed through, not wrapped twice
    assert by_message["from the parent"]["event"] == "parent"
    assert len(records) == 4
