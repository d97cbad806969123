"""Exposure: the servers we start listen on 127.0.0.1 (checked in the kernel's socket table, not in
our own records), and an API key given the documented way (the NAME of an environment variable)
never appears in a log, a state or output file, or a process's command line.

The key test plants a key in the environment and runs the parts of a run that handle one, as the
recipes run them: the launcher attached to a hosted-style external server (``serve
--external-url``, whose readiness probe authenticates with ``VERLKIT_API_KEY``) and a client-side
CLI (``python -m verlkit.evaluation.verifier --api-key-env``) whose requests the server holds while
``ps`` and every ``/proc/*/cmdline`` are read. The server is the FAKE OpenAI server of
``support.fake_openai``: it records the ``Authorization`` header it received (proof that the key
was really used) and can hold a request on demand, which a real vLLM server cannot.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from support.fake_openai import FakeOpenAIServer
from support.processes import listening_sockets

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_the_vllm_server_we_started_listens_on_loopback_only(vllm_server):
    sockets = listening_sockets(set(vllm_server.pids))
    port = int(vllm_server.base_url.rsplit(":", 1)[1].split("/")[0])
    assert (("127.0.0.1", port) in sockets), sockets
    assert {ip for ip, _ in sockets} == {"127.0.0.1"}, f"a socket of the server listens beyond loopback: {sockets}"


def test_our_fake_and_fault_servers_listen_on_loopback_only():
    fake = FakeOpenAIServer()
    try:
        sockets = listening_sockets({os.getpid()})
        assert ("127.0.0.1", fake.port) in sockets
        assert all(ip == "127.0.0.1" for ip, port in sockets if port == fake.port)
    finally:
        fake.close()


def _all_command_lines() -> str:
    ps = subprocess.run(["ps", "-eo", "pid,args", "--no-headers"], capture_output=True, text=True, check=True).stdout
    cmdlines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdlines.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return ps + "\n".join(cmdlines)


def test_a_planted_key_never_reaches_logs_files_or_command_lines(tmp_path):
    key = f"sk-planted-{uuid.uuid4().hex}"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fake = FakeOpenAIServer(reply=lambda content: "mode:hold" if "HOLD" in content else
                            ("mode:always500" if "FAIL" in content else "True"))  # fmt: skip
    env = {**os.environ, "HOSTED_API_KEY": key, "VERLKIT_API_KEY": key, "PYTHONPATH": str(REPO)}
    procs = []
    try:
        # 1. the launcher, attached to the hosted-style server (it probes it with the key)
        serve = subprocess.Popen([sys.executable, "-m", "verlkit.serving", "serve", "--name", "judge", "--model",
                                  "hosted-judge", "--run-dir", str(run_dir), "--external-url", fake.base_url,
                                  "--ready-timeout", "60"], env=env, cwd=REPO,
                                 stdout=open(run_dir / "serve.out", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        procs.append(serve)
        subprocess.run([sys.executable, "-m", "verlkit.serving", "wait-ready", "--state",
                        str(run_dir / "judge.server.json"), "--timeout", "60"], env=env, cwd=REPO, check=True,
                       stdout=open(run_dir / "wait.out", "w"), stderr=subprocess.STDOUT, timeout=120)  # noqa: SIM115
        # 2. a client CLI with --api-key-env: one pair answered, one failing (its error is logged), one held
        pairs = run_dir / "pairs.jsonl"
        pairs.write_text("".join(json.dumps({"question": q, "ground_truth": "4", "answer": "4", "label": True}) + "\n"
                                 for q in ("What is 2+2?", "FAIL: what is 2+2?", "HOLD: what is 2+2?")))
        evaluate = subprocess.Popen([sys.executable, "-m", "verlkit.evaluation.verifier", "--pairs", str(pairs),
                                     "--url", fake.base_url, "--model", "fake", "--api-key-env", "HOSTED_API_KEY",
                                     "--timeout-s", "60", "--out", str(run_dir / "metrics.json")], env=env, cwd=REPO,
                                    stdout=open(run_dir / "evaluate.out", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115
        procs.append(evaluate)
        deadline = time.monotonic() + 120
        while not any("HOLD" in p for p in fake.prompts):  # the held request is in flight now
            assert evaluate.poll() is None and time.monotonic() < deadline, (run_dir / "evaluate.out").read_text()
            time.sleep(0.1)  # polling the fake server's record; bounded
        command_lines = _all_command_lines()
        fake.release_all()
        assert evaluate.wait(timeout=120) in (0, 1)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=60) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        fake.release_all()
        fake.close()
    assert f"Bearer {key}" in fake.auth, "the key was never sent: the test proves nothing"
    assert fake.auth.count(f"Bearer {key}") >= 4  # the launcher's probes and the CLI's requests
    assert "HOSTED_API_KEY" in " ".join(map(str, evaluate.args))  # the NAME travels, the key does not
    assert key not in command_lines
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {f.name for f in files} >= {"judge.server.json", "serve.out", "evaluate.out", "metrics.json"}
    leaked = [str(f) for f in files if key.encode() in f.read_bytes()]
    assert leaked == [], f"the key was written to {leaked}"
