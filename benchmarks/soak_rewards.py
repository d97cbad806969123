"""Fault soak: real CPU-profile GRPO steps with a real vLLM verifier behind a fault-injecting proxy.

    flock /tmp/verlkit-heavy.lock python benchmarks/soak_rewards.py [--steps 20] [--seed 0] [--json PATH]

What runs: ``bash run_rubric.sh`` (the recipe driver, CPU default: tiny policy, GRPO, batch 4 x n 2,
TinyV template) with ``VERLKIT_VERIFIER_URL`` pointing at our proxy (``benchmarks/fault_proxy.py``) on
127.0.0.1, which forwards to a real vLLM server (SmolLM2-135M-Instruct) that this script starts. At
seeded random positions in the stream of verifier requests the proxy injects 5xx bursts, 429 with
Retry-After, garbage bodies, truncated replies and 10x latency, and this script SIGKILLs the server
(and restarts it) and SIGSTOPs it for longer than the client's whole retry budget.

What it reports (and checks; exit status 1 if a check fails):
- per fault kind: injected, attempts it failed, requests that failed on it (the proxy's ledger), rows
  the reward flagged (``verifier_failed``, from the client's per-request ledger, joined by request
  id) and the difference (must be 0); every flagged row in total equals the sum of the step metric
  ``reward/verifier_failed/count`` (the reward's own count reaches training's metrics);
- the longest verifier call against the client's documented bound ``timeout x (retries + 1) +
  backoff`` (``verlkit.clients.llm.worst_case_s``), and the longest step against the median step plus
  that bound;
- crashes (the recipe's exit status, missing steps, ``reward_error`` rows): must be 0;
- RSS and open file descriptors of every long-lived process at the first step, after the warm-up
  (``--warmup`` steps) and at the last step: growth from the warm-up to the last step <= 10 %;
- processes and listening ports of the run left 60 s after it ended: must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
from fault_proxy import KINDS, FaultPlan, FaultProxy

from verlkit.clients.llm import LEDGER_ENV, ClientConfig, worst_case_s
from verlkit.runs.summary import parse_step_metrics

REPO = Path(__file__).resolve().parents[1]
ROWS_PER_STEP = 8  # the CPU default: train_batch_size 4 x rollout.n 2, one verifier call per row
GROWTH_LIMIT = 0.10
TIMER_SLACK_PER_ATTEMPT_S = 0.5
PORT_RELEASE_S = 60.0  # how long a restart waits for the killed server's port to be released
FD_SLACK = 2  # descriptors that come and go (a socket being opened) are not growth


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the report here as JSON")
    p.add_argument("--run-dir", type=Path, help="default: runs/soak-<time>")
    p.add_argument("--timeout-s", type=float, default=6.0, help="verifier client timeout per attempt")
    p.add_argument("--retries", type=int, default=2, help="verifier client retries")
    p.add_argument("--backoff-s", type=float, default=0.5)
    p.add_argument("--warmup", type=int, default=3, help="steps before memory/descriptor growth is judged")
    p.add_argument("--per-kind", type=int, help="request-level faults of each kind (default: steps / 10)")
    p.add_argument("--server-events", type=int, help="kills and freezes each (default: 1 per 20 steps)")
    return p.parse_args(argv)


class Verifier:
    """The real vLLM verifier on a fixed port, which the soak kills, restarts, freezes and thaws."""

    def __init__(self, run_dir: Path):
        from verlkit.models.local import smollm2_135m_instruct
        from verlkit.serving import ServerSpec
        from verlkit.serving.processes import pick_free_port

        self.spec = ServerSpec(model=smollm2_135m_instruct(), name="verifier", served_model_name="verifier",
                               port=pick_free_port(), run_dir=run_dir / "verifier", max_model_len=2048,
                               ready_timeout_s=900)  # fmt: skip
        self.server = None
        self.pids: set[int] = set()
        self.restarts = 0

    def start(self) -> None:
        from verlkit.serving import launch

        self.server = launch(self.spec)
        self.pids |= set(self.server.pids)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def kill_and_restart(self) -> None:
        from verlkit.serving.processes import port_is_free

        os.killpg(self.server.pgid, signal.SIGKILL)
        self.server.stop()  # reaps it and marks the state file
        self.restarts += 1
        # the restart takes the same port (the proxy forwards there): a killed process can hold its socket
        # for a moment after its group leader was reaped (one run's restart was refused: port in use)
        deadline = time.monotonic() + PORT_RELEASE_S
        while not port_is_free(self.spec.host, self.spec.port) and time.monotonic() < deadline:
            time.sleep(0.2)  # polling the port; bounded by PORT_RELEASE_S
        self.start()

    def freeze(self, seconds: float) -> None:
        os.killpg(self.server.pgid, signal.SIGSTOP)
        try:
            time.sleep(seconds)  # the fault itself: the server stays frozen this long
        finally:
            os.killpg(self.server.pgid, signal.SIGCONT)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


class Events:
    """Runs the server events the proxy announces, one at a time, off the proxy's thread."""

    def __init__(self, verifier: Verifier, freeze_s: float, settle_s: float):
        self.verifier, self.freeze_s, self.settle_s = verifier, freeze_s, settle_s
        self.proxy: FaultProxy | None = None
        self.done: list[dict] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def __call__(self, kind: str) -> None:
        t = threading.Thread(target=self._run, args=(kind,), name=kind, daemon=True)
        self._threads.append(t)
        t.start()

    def _run(self, kind: str) -> None:
        with self._lock:
            start = time.monotonic()
            handle = self.proxy.window(kind, start)
            try:
                if kind == "server_kill":
                    self.verifier.kill_and_restart()
                    end = time.monotonic()
                else:
                    self.verifier.freeze(self.freeze_s)
                    end = time.monotonic() + self.settle_s  # the server works off its backlog
            except Exception as e:  # reported: a soak whose fault could not be done is not a pass
                self.errors.append(f"{kind}: {e!r}")
                end = time.monotonic()
            self.proxy.close_window(handle, end)
            self.done.append({"kind": kind, "seconds": round(time.monotonic() - start, 1)})

    def join(self) -> None:
        for t in self._threads:
            t.join()


# ---- processes -------------------------------------------------------------------------------------


def label(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    text = " ".join(cmd)
    for needle, name in (("group_guard", "group guard"), ("vllm.entrypoints", "vllm server"), ("raylet", "raylet"), ("gcs_server", "gcs_server"),
                         ("main_ppo", "trainer (main_ppo)"), ("recipes.", "recipe driver"), ("run_rubric", "recipe script"),
                         ("soak_rewards", "soak + proxy"), ("default_worker", "ray worker"),
                         ("dashboard", "ray dashboard"), ("log_monitor", "ray log monitor"),
                         ("_WORKER_SOURCE", "rule-check worker"), ("math_verify", "rule-check worker")):  # fmt: skip
        if needle in text:
            return f"{name}: {proc.name()}" if name == "ray worker" else name
    return proc.name()


def sample(pids: set[int]) -> dict[int, dict]:
    out = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            with proc.oneshot():
                memory = proc.memory_info()
                # shared: resident pages the process maps but does not own alone (libraries, and Ray's
                # object store, whose pages a worker touches as the store's objects move around)
                out[pid] = {"label": label(proc), "rss_mb": memory.rss / 2**20, "shared_mb": memory.shared / 2**20,
                            "fds": proc.num_fds()}  # fmt: skip
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def tree(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def listening_ports(pids: set[int], owners: dict) -> set[tuple[str, int]]:
    found = set()
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            found.add((conn.laddr.ip, conn.laddr.port))
            if (conn.laddr.ip, conn.laddr.port) not in owners:
                try:
                    owners[(conn.laddr.ip, conn.laddr.port)] = label(psutil.Process(conn.pid))
                except psutil.NoSuchProcess:
                    pass
    return found


def still_listening(ports: set[tuple[str, int]]) -> list[tuple[str, int]]:
    now = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
    return sorted(ports & now)


def alive(pids: set[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{pid} {label(proc)}")
        except psutil.NoSuchProcess:
            pass
    return out


# ---- the run ---------------------------------------------------------------------------------------


def run_recipe(args, run_dir: Path, proxy: FaultProxy, verifier: Verifier, ledger: Path) -> dict:
    kw = "++reward.custom_reward_function.reward_kwargs.tinyv"
    overrides = [f"trainer.total_epochs={args.steps}", f"{kw}.timeout_s={args.timeout_s}",
                 f"{kw}.max_retries={args.retries}", f"{kw}.backoff_s={args.backoff_s}", f"{kw}.max_tokens=8",
                 f"{kw}.template=tinyv", f"{kw}.setup=tinyv_only", f"{kw}.on_failure=rule"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env.update(VK_PROFILE="cpu", LOGGER="console", STEPS=str(args.steps), TEMPLATE="tinyv", ON_FAILURE="rule",
               RUN_DIR=str(run_dir / "recipe"), VERLKIT_VERIFIER_URL=proxy.base_url, VERIFIER_NAME="verifier",
               VK_PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
               **{LEDGER_ENV: str(ledger)})  # fmt: skip
    log_path = run_dir / "recipe.out"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(["bash", str(REPO / "run_rubric.sh"), "--", *overrides], cwd=REPO, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    train_log = run_dir / "recipe" / "train.log"
    seen, ports, samples, owners = set(), set(), {}, {}
    while proc.poll() is None:
        now = tree(proc.pid) | set(verifier.server.pids if verifier.server else ()) | {os.getpid()}
        seen |= now - {os.getpid()}
        ports |= listening_ports(now - {os.getpid()}, owners)
        steps = parse_step_metrics(train_log.read_text(errors="replace")) if train_log.exists() else {}
        for step in sorted(set(steps) - set(samples)):
            samples[step] = sample(now)
        time.sleep(1.0)  # polling the run's process tree and log; the run's own pace sets the length
    return {"rc": proc.returncode, "seen": seen, "ports": ports, "owners": owners, "samples": samples,
            "log": log_path, "train_log": train_log}  # fmt: skip


def growth(samples: dict[int, dict], warmup: int, verifier_restarted: bool) -> dict:
    """Per long-lived process (alive at the warm-up step and the last step): RSS and fds at the first,
    the warm-up and the last step. The verifier is matched by role when a restart changed its PID."""
    steps = sorted(samples)
    if not steps:
        return {"rows": [], "ok": False}
    first, last = steps[0], steps[-1]
    base = min((s for s in steps if s >= warmup), default=first)
    rows, ok = [], True

    def by_label(step):
        return {v["label"]: (pid, v) for pid, v in samples[step].items()}

    for pid, b in samples[base].items():
        later = samples[last].get(pid)
        restarted = False
        if later is None and b["label"] == "vllm server":
            pid_now, later = by_label(last).get("vllm server", (None, None))
            restarted = later is not None
        if later is None:
            continue
        start = samples[first].get(pid, b)
        rss_growth = (later["rss_mb"] - b["rss_mb"]) / b["rss_mb"]
        fd_growth = (later["fds"] - b["fds"]) / max(1, b["fds"])
        passed = rss_growth <= GROWTH_LIMIT and (fd_growth <= GROWTH_LIMIT or later["fds"] - b["fds"] <= FD_SLACK)
        ok &= passed
        rows.append({"pid": pid, "label": b["label"] + (" (restarted)" if restarted else ""),
                     "rss_mb": [round(start["rss_mb"]), round(b["rss_mb"]), round(later["rss_mb"])],
                     "fds": [start["fds"], b["fds"], later["fds"]], "rss_growth": round(rss_growth, 3),
                     "fd_growth": round(fd_growth, 3), "ok": passed})  # fmt: skip
    # RSS (and its shared part) at every step of the processes that grew by more than half the limit:
    # a plateau or a climb, and of which memory?
    for row in rows:
        if row["rss_growth"] > GROWTH_LIMIT / 2:
            mine = [(s, samples[s][row["pid"]]) for s in steps if row["pid"] in samples[s]]
            row["rss_mb_by_step"] = {s: round(v["rss_mb"]) for s, v in mine}
            row["shared_mb_by_step"] = {s: round(v.get("shared_mb", 0.0)) for s, v in mine}
    return {"steps": [first, base, last], "rows": sorted(rows, key=lambda r: r["label"]), "ok": ok}


def fault_table(plan: FaultPlan, proxy: FaultProxy, events: Events, ledger_rows: list[dict]) -> dict:
    summary = proxy.summary()
    failed = proxy.failed_ids()
    rows_by_id: dict[str, list[dict]] = {}
    for row in ledger_rows:
        rows_by_id.setdefault(row["request_id"], []).append(row)
    injected = {k: 0 for k in KINDS}
    for req in proxy.requests.values():
        if req.planned:
            injected[req.planned] += 1
    for e in events.done:
        injected[e["kind"]] += 1
    table = {}
    for kind in (*KINDS, "unexplained"):
        ids = [rid for rid, cause in failed.items() if cause == kind]
        expected = [r for rid in ids for r in rows_by_id.get(rid, [])]
        table[kind] = {"injected": injected.get(kind, 0), "attempts_failed": summary["attempts"].get(kind, 0),
                       "requests_failed": len(ids), "rows_to_flag": len(expected),
                       "rows_flagged": sum(not r["ok"] for r in expected)}  # fmt: skip
        table[kind]["difference"] = table[kind]["rows_to_flag"] - table[kind]["rows_flagged"]
    # flagged rows whose request the proxy delivered (or that never reached it): flags without a fault
    stray = [r for r in ledger_rows if not r["ok"] and r["request_id"] not in failed]
    return {"kinds": table, "stray_flags": len(stray), "stray_examples": [r["error"] for r in stray[:5]],
            "requests": summary["requests"], "rows": len(ledger_rows),
            "rows_flagged": sum(not r["ok"] for r in ledger_rows)}  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.monotonic()
    run_dir = (args.run_dir or Path("runs") / f"soak-{time.strftime('%Y%m%d-%H%M%S')}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    ledger = run_dir / "client_ledger.jsonl"
    client = ClientConfig(base_url="http://127.0.0.1:1/v1", model="verifier", timeout_s=args.timeout_s,
                          max_retries=args.retries, backoff_s=args.backoff_s)  # fmt: skip
    bound = worst_case_s(client, retry_after_s=1.0)  # the proxy's 429s say Retry-After: 1
    # A timer fires late when the event loop's thread waits for the GIL or a core: allowed 0.5 s per
    # attempt (the figures report the raw numbers; the first 4-step soak here was 0.7 s over in all).
    slack = TIMER_SLACK_PER_ATTEMPT_S * (args.retries + 1)
    plan = FaultPlan(args.seed, requests=args.steps * ROWS_PER_STEP, per_kind=args.per_kind or max(1, args.steps // 10),
                     server_events=args.server_events or max(1, args.steps // 20))  # fmt: skip
    verifier = Verifier(run_dir)
    events = Events(verifier, freeze_s=bound + 5.0, settle_s=args.timeout_s)
    proxy = None
    try:
        print(f"[soak] starting the verifier (vLLM, {verifier.spec.model})", flush=True)
        verifier.start()
        proxy = FaultProxy(verifier.root, plan, timeout_s=args.timeout_s, on_event=events)
        events.proxy = proxy.start()
        print(f"[soak] proxy {proxy.base_url} -> {verifier.root}; {args.steps} steps; bound per call "
              f"{bound:.2f} s; faults at request indices {sorted({**plan.by_index, **plan.events}.items())}", flush=True)
        run = run_recipe(args, run_dir, proxy, verifier, ledger)
        events.join()
    finally:
        verifier.stop()
        if proxy is not None:
            proxy.close()
            proxy.dump(run_dir / "proxy_ledger.jsonl")
    seen = run["seen"] | verifier.pids
    deadline = time.monotonic() + 60
    while alive(seen) and time.monotonic() < deadline:
        time.sleep(0.5)  # polling for the run's processes to exit; bounded
    left, ports_left = alive(seen), still_listening(run["ports"])

    steps = parse_step_metrics(run["train_log"].read_text(errors="replace")) if run["train_log"].exists() else {}
    ledger_rows = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    faults = fault_table(plan, proxy, events, ledger_rows)
    metric_flags = sum(m.get("reward/verifier_failed/count", 0.0) for m in steps.values())
    reward_errors = sum(m.get("reward/reward_error/count", 0.0) for m in steps.values())
    # step 1 loads the models and warms every kernel up (~30 s here, with or without faults): it is
    # reported, the bound is judged on the steps after it
    step_times = [m["timing_s/step"] for s, m in sorted(steps.items()) if s > 1 and "timing_s/step" in m]
    first_step = steps.get(1, {}).get("timing_s/step", 0.0)
    longest_call = max((r["wall_s"] for r in ledger_rows), default=0.0)
    median_step = statistics.median(step_times) if step_times else 0.0
    crashes = int(run["rc"] != 0) + int(len(steps) < args.steps) + int(reward_errors > 0) + len(events.errors)
    report = {
        "steps": args.steps, "steps_done": len(steps), "seed": args.seed, "wall_s": round(time.monotonic() - t0),
        "client": {"timeout_s": args.timeout_s, "max_retries": args.retries, "backoff_s": args.backoff_s,
                   "bound_s": round(bound, 2)},
        "faults": faults, "events": events.done, "event_errors": events.errors,
        "metric_flags": metric_flags, "reward_errors": reward_errors, "recipe_rc": run["rc"], "crashes": crashes,
        "longest_call_s": round(longest_call, 2), "longest_step_s": round(max(step_times, default=0.0), 1),
        "median_step_s": round(median_step, 1), "step_bound_s": round(median_step + bound, 1),
        "first_step_s": round(first_step, 1), "call_slack_s": round(slack, 2),
        "growth": growth(run["samples"], args.warmup, verifier.restarts > 0),
        "processes_left": left, "ports_left": [f"{h}:{p}" for h, p in ports_left],
        "ports_seen": {f"{h}:{p}": run["owners"].get((h, p), "?") for h, p in sorted(run["ports"])},
        "run_dir": str(run_dir),
    }  # fmt: skip
    checks = {
        "every fault kind injected": all(faults["kinds"][k]["injected"] > 0 for k in KINDS),
        "differences 0": all(v["difference"] == 0 for v in faults["kinds"].values()) and faults["stray_flags"] == 0,
        "step metrics count every flag": metric_flags == faults["rows_flagged"],
        "no unexplained failures": faults["kinds"]["unexplained"]["requests_failed"] == 0,
        "longest call within bound (+ timer slack)": longest_call <= bound + slack,
        "longest step within median + bound (+ timer slack)": max(step_times, default=0.0) <= median_step + bound + slack,
        "no crashes": crashes == 0,
        "growth within 10%": report["growth"]["ok"],
        "nothing left": not left and not ports_left,
    }
    report["checks"] = checks
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if all(checks.values()) else 1


def print_report(r: dict) -> None:
    print(f"\nsoak: {r['steps_done']}/{r['steps']} steps, seed {r['seed']}, wall {r['wall_s']} s, "
          f"client timeout {r['client']['timeout_s']} s x ({r['client']['max_retries']} + 1) + backoff = "
          f"bound {r['client']['bound_s']} s per call")  # fmt: skip
    print(f"{'fault kind':<16}{'injected':>9}{'att.fail':>9}{'req.fail':>9}{'to flag':>9}{'flagged':>9}{'diff':>6}")
    for kind, v in r["faults"]["kinds"].items():
        print(f"{kind:<16}{v['injected']:>9}{v['attempts_failed']:>9}{v['requests_failed']:>9}"
              f"{v['rows_to_flag']:>9}{v['rows_flagged']:>9}{v['difference']:>6}")  # fmt: skip
    f = r["faults"]
    print(f"rows {f['rows']} (requests {f['requests']}), flagged {f['rows_flagged']}, step metrics' "
          f"verifier_failed count {r['metric_flags']:.0f}, flags without a fault {f['stray_flags']}")
    print(f"longest call {r['longest_call_s']} s (bound {r['client']['bound_s']} s, timer slack {r['call_slack_s']} s); "
          f"longest step after the first {r['longest_step_s']} s (median {r['median_step_s']} s + bound = "
          f"{r['step_bound_s']} s); first step {r['first_step_s']} s")
    print(f"crashes {r['crashes']} (recipe rc {r['recipe_rc']}, reward_error rows {r['reward_errors']:.0f}, "
          f"event errors {r['event_errors']}); server events {r['events']}")
    g = r["growth"]
    print(f"RSS MB / fds at steps {g.get('steps')} (first, after warm-up, last):")
    for row in g["rows"]:
        print(f"  {row['label']:<28} pid {row['pid']:>7}  rss {row['rss_mb']}  fds {row['fds']}  "
              f"growth rss {row['rss_growth']:+.1%} fds {row['fd_growth']:+.1%} {'ok' if row['ok'] else 'FAIL'}")
        if "rss_mb_by_step" in row:
            print(f"    rss by step: {row['rss_mb_by_step']}")
            print(f"    of it shared: {row['shared_mb_by_step']}")
    print(f"left after 60 s: processes {r['processes_left']} ports {r['ports_left']}")
    beyond = {k: v for k, v in r["ports_seen"].items() if not k.startswith("127.")}
    print(f"listening during the run: {len(r['ports_seen'])} ports; beyond loopback: {beyond}")
    for name, passed in r["checks"].items():
        print(f"  [{'pass' if passed else 'FAIL'}] {name}")


if __name__ == "__main__":
    sys.exit(main())
