"""The Ray dashboard of a sweep: on loopback, its URL printed, its API behind Ray's token.

One toy-world sweep runs in a subprocess with its own HOME, so that Ray (2.60: token mode by
default for a local cluster) writes a fresh token there instead of the user's ~/.ray/auth_token,
and `ray get-auth-token` run with the same HOME prints it.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from sweep.runner import ClusterInfo, dashboard_note

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 240  # Ray's start, on a busy 2-CPU machine
TRIAL_TIMEOUT_S = 180  # until the trial's actor is alive
EXIT_TIMEOUT_S = 90
REQUEST_TIMEOUT_S = 20
RAY_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS")
COOKIE = "ray-authentication-token"  # the cookie the dashboard's sign-in (POST /api/authenticate) sets


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes, dict]:
    """(status, body, headers) of one request; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:
            return answer.status, answer.read(), dict(answer.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def live_actors(url: str, token: str) -> list[dict]:
    """The cluster's live actors (none while the state API is not ready)."""
    status, body, _ = fetch(url + "/api/v0/actors", bearer(token))
    answer = json.loads(body) if status == 200 else {}
    listing = (answer.get("data") or {}).get("result") or {}
    return [a for a in listing.get("result", []) if a["state"] == "ALIVE"]


def write_experiment(path: Path, data: Path, model: Path) -> Path:
    """One toy trial with enough epochs to outlast the checks (the sweep is stopped after them)."""
    experiment = dict(
        name="dashboard",
        models={"toy-bert": dict(source=str(model), cpu=1, gpu=0)},
        settings=dict(data_dir=str(data), langs=["es"], epochs=10_000, batch_size=16, micro_batch_size=16,
                      train_subset=32, test_subset=8, parallel_subset=50, align_pairs=20, num_threads=1),
        grids=[dict(model=["toy-bert"], task=["udpos"], realign=["none"], pairs=["dico"], corpus=["toy"],
                    seed=[0])],
    )
    path.write_text(f"EXPERIMENT = {experiment!r}\n")
    return path


def wait_for_line(lines: queue.Queue, prefix: str, seen: list[str], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1.0)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if line.startswith(prefix):
            return line
    raise AssertionError(f"no line starting {prefix!r} within {timeout:g} s; output:\n" + "".join(seen[-40:]))


def drain(lines: queue.Queue, seen: list[str]) -> str:
    """The driver's last output lines, for a failure's message."""
    time.sleep(1)
    while not lines.empty():
        line = lines.get()
        if line is not None:
            seen.append(line)
    return "".join(seen[-40:])


def test_the_sweeps_dashboard_answers_with_the_token_and_refuses_without(tmp_path, toy_assets):
    data, model = toy_assets
    experiment = write_experiment(tmp_path / "exp.py", data, model)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in RAY_ENV}
    env.update(HOME=str(home), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "sweep", str(experiment), "--storage", str(tmp_path / "results"),
               "--no-live", "--no-report", "--num-cpus", "1"]
    driver = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: ([lines.put(line) for line in driver.stdout], lines.put(None)),
                              daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        note = wait_for_line(lines, "Ray dashboard: ", seen, START_TIMEOUT_S)
        url = note.split()[2]
        assert url.startswith("http://127.0.0.1:"), note  # bound to loopback only
        port = url.rpartition(":")[2]
        assert "`ray get-auth-token`" in note and f"ssh -L {port}:127.0.0.1:{port}" in note, note

        # The command the line names prints the token Ray generated for this cluster.
        printed = subprocess.run([str(Path(sys.executable).with_name("ray")), "get-auth-token"], env=env,
                                 capture_output=True, text=True, timeout=120)
        assert printed.returncode == 0, printed.stderr[-2000:]
        token = printed.stdout.strip()
        assert token and token == (home / ".ray" / "auth_token").read_text().strip()

        # The page itself loads without a token: it is the sign-in form.
        status, body, _ = fetch(url + "/")
        assert status == 200 and b"<title>Ray Dashboard</title>" in body
        status, body, _ = fetch(url + "/api/authentication_mode")
        assert status == 200 and json.loads(body) == {"authentication_mode": "token"}

        for path in ("/api/jobs/", "/nodes?view=summary"):
            assert fetch(url + path)[0] == 401, path
            assert fetch(url + path, bearer(token[::-1]))[0] == 403, path
            status, body, _ = fetch(url + path, bearer(token))
            assert status == 200, (path, body[:200])

        jobs = json.loads(fetch(url + "/api/jobs/", bearer(token))[1])
        (job,) = [j for j in jobs if j["type"] == "DRIVER" and j["status"] == "RUNNING"]
        assert f"-m sweep {experiment}" in job["entrypoint"]
        nodes = json.loads(fetch(url + "/nodes?view=summary", bearer(token))[1])["data"]["summary"]
        assert [n["raylet"]["state"] for n in nodes] == ["ALIVE"]

        # The browser's way in: the sign-in sets a cookie that then opens the API.
        status, _, headers = fetch(url + "/api/authenticate", bearer(token), method="POST")
        assert status == 200 and f"{COOKIE}={token}" in headers.get("Set-Cookie", ""), headers
        assert fetch(url + "/api/jobs/", {"Cookie": f"{COOKIE}={token}"})[0] == 200
        assert fetch(url + "/api/jobs/", {"Cookie": f"{COOKIE}=not-the-token"})[0] == 403

        # During the sweep, the dashboard shows its trial: the actor Tune runs it in, alive, in
        # the sweep's job (its only actor).
        deadline = time.monotonic() + TRIAL_TIMEOUT_S
        while True:
            assert driver.poll() is None, "the sweep ended before its trial started:\n" + drain(lines, seen)
            actors = live_actors(url, token)
            if any(a["job_id"] == job["job_id"] and a["pid"] for a in actors):
                break
            assert time.monotonic() < deadline, f"no live trial actor within {TRIAL_TIMEOUT_S} s: {actors}"
            time.sleep(2)
    finally:
        if driver.poll() is None:
            driver.send_signal(signal.SIGINT)  # Tune stops the sweep; the local Ray shuts down with it
            try:
                driver.wait(timeout=EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                driver.kill()
                driver.wait(timeout=EXIT_TIMEOUT_S)
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    while True:  # the cluster goes away with its driver
        try:
            urllib.request.urlopen(url + "/api/authentication_mode", timeout=5).close()
        except OSError:
            break
        assert time.monotonic() < deadline, f"the dashboard still answers {EXIT_TIMEOUT_S} s after its sweep"
        time.sleep(1)


def test_dashboard_note_names_the_port_and_the_sign_in(monkeypatch):
    import sweep.runner as runner

    assert dashboard_note(ClusterInfo(0.0, 0.0, 1.0, dashboard_url=None)) is None
    cluster = ClusterInfo(0.0, 0.0, 1.0, dashboard_url="127.0.0.1:8270")
    monkeypatch.setattr(runner, "dashboard_authentication_mode", lambda address: "token")
    assert dashboard_note(cluster) == ("Ray dashboard: http://127.0.0.1:8270 (sign in with the token "
                                       "`ray get-auth-token` prints; from another machine: "
                                       "ssh -L 8270:127.0.0.1:8270 <head node>)")
    monkeypatch.setattr(runner, "dashboard_authentication_mode", lambda address: "disabled")
    note = dashboard_note(cluster)
    assert "get-auth-token" not in note and "RAY_AUTH_MODE" in note


def test_authentication_mode_falls_back_to_the_environment_when_nothing_answers(monkeypatch):
    from sweep.runner import dashboard_authentication_mode

    closed = "127.0.0.1:1"  # nothing listens on port 1
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    assert dashboard_authentication_mode(closed) == "disabled"
    monkeypatch.delenv("RAY_AUTH_MODE")
    assert dashboard_authentication_mode(closed) == "token"  # Ray 2.60's local default
