"""Signal trials: every recipe script, every way a run gets stopped, and what it leaves behind.

    flock /tmp/verlkit-heavy.lock python benchmarks/signal_trials.py [--recipes rubric,confidence,c3po,pipeline]
        [--signals INT,TERM,HUP,KILL] [--trials 1] [--seed 0] [--json PATH]

Each trial starts ``bash run_<recipe>.sh`` (CPU default, shortened by its knobs; the script ``exec``s
the recipe's driver, ``python -m recipes.<name>``, so the script's PID is the driver's) in a session of its
own, waits for a seeded random moment of the run (a log line marks each phase: a server starting,
training, exporting or evaluating; then a random 0-5 s more), sends the signal to the script's own
PID (SIGHUP is what a closed terminal sends; SIGKILL leaves no handler a chance), and counts, 60 s
later, what is still alive of everything the run started: vLLM servers, Ray processes, trainer
workers, anything else, and the TCP ports they listened on. Everything the run started is known
from a snapshot of the script's process tree taken every half second, the server PIDs and process
groups the driver records in ``RUN_DIR/processes.json``, and the kernel's socket table. Leftovers
are killed after they were counted, so one failed trial does not spoil the next.

Exit status 1 if any trial left anything behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
CLEAN_WITHIN_S = 60.0
PHASE_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class Phase:
    name: str
    pattern: str  # a regex searched in the script's console output (or in ``file``)
    file: str | None = None  # a file of the run directory, instead of the console output


SERVER = Phase("server start", r"starting the \w+ server")
# the trainer's own output goes to RUN_DIR/train.log (the console shows one line per finished step):
# verl's progress bar marks a trainer in its first step, its metric line "step:2 " the third
TRAINING = Phase("training", r"Training Progress", file="train.log")
RECIPES: dict[str, dict] = {
    # the moments, as the drivers (recipes/<name>/run.py, recipes/driver.py) and the trainers log them
    "rubric": {"env": {"STEPS": "3"}, "phases": (SERVER, TRAINING, Phase("training (step 3)", r"step:2 ", file="train.log"))},
    "confidence": {"env": {"STEPS": "1"},
                   "phases": (SERVER, TRAINING, Phase("export", r"exported \S+ -> "), Phase("evaluation", r"evaluating: "))},
    "c3po": {"env": {}, "phases": (SERVER, Phase("sampling", r"sampling: python"),
                                   Phase("training", r": python -m torch\.distributed\.run"),
                                   Phase("evaluation", r"loaded into the student server as"))},
    "pipeline": {"env": {}, "phases": (Phase("sft training", r"\bsft: python"), Phase("dpo training", r"\bdpo: python"),
                                       SERVER, Phase("rloo training", r"\brloo: python"))},
}  # fmt: skip
SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP, "KILL": signal.SIGKILL}


def category(proc: psutil.Process) -> str:
    try:
        text = " ".join(proc.cmdline()) or proc.name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "vllm" in text.lower():
        return "vllm server"
    if re.search(r"raylet|gcs_server|ray::|default_worker\.py|ray/dashboard|log_monitor|runtime_env|ray\.util", text):
        return "ray"
    if re.search(r"main_ppo|torchrun|torch\.distributed|verlkit\.preference|verl\.trainer|sft_trainer", text):
        return "trainer"
    if re.search(r"run_\w+\.sh|recipes\.", text):
        return "driver"
    return "other"


def alive(procs: dict[int, psutil.Process]) -> list[psutil.Process]:
    out = []
    for proc in procs.values():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.NoSuchProcess:
            pass
    return out


def recorded(run_dir: Path) -> tuple[set[int], set[int]]:
    """(server PIDs, process group IDs) from the driver's processes.json."""
    try:
        record = json.loads((run_dir / "processes.json").read_text())
    except (OSError, ValueError):
        return set(), set()
    pids = set()
    for server in record.get("servers", {}).values():
        pids |= {p for p in [server.get("pid"), *server.get("pids", [])] if isinstance(p, int)}
    groups = {g["pgid"] for g in record.get("process_groups", {}).values() if isinstance(g.get("pgid"), int)}
    return pids, groups


def group_members(pgids: set[int]) -> dict[int, psutil.Process]:
    out = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in pgids:
                out[proc.pid] = proc
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def listening(pids: set[int]) -> set[tuple[str, int]]:
    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.pid in pids}  # fmt: skip


def trial(recipe: str, sig_name: str, phase: Phase, delay_s: float, work: Path) -> dict:
    name = f"{recipe}-{sig_name}-{phase.name.replace(' ', '_').replace('(', '').replace(')', '')}"
    run_dir = work / name
    out_path = work / f"{name}.out"
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "CUDA_VISIBLE_DEVICES")}
    env.update(VK_PROFILE="cpu", LOGGER="console", RUN_DIR=str(run_dir), VK_PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}", **RECIPES[recipe]["env"])  # fmt: skip
    with open(out_path, "w") as out:
        script = subprocess.Popen(["bash", str(REPO / f"run_{recipe}.sh")], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    seen: dict[int, psutil.Process] = {}
    kinds: dict[int, str] = {}
    ports: set[tuple[str, int]] = set()
    pattern = re.compile(phase.pattern)
    deadline, signalled_at, result = time.monotonic() + PHASE_TIMEOUT_S, None, {}
    while True:
        try:
            root = psutil.Process(script.pid)
            for proc in (root, *root.children(recursive=True)):
                seen.setdefault(proc.pid, proc)
        except psutil.NoSuchProcess:
            pass
        server_pids, pgids = recorded(run_dir)
        for pid in server_pids:
            try:
                seen.setdefault(pid, psutil.Process(pid))
            except psutil.NoSuchProcess:
                pass
        seen.update({p: proc for p, proc in group_members(pgids).items() if p not in seen})
        for pid in seen.keys() - kinds.keys():  # the kind from the command line, while it still runs
            kinds[pid] = category(seen[pid])
        ports |= listening(set(seen))
        if signalled_at is None:
            source = run_dir / phase.file if phase.file else out_path
            text = source.read_text(errors="replace") if source.exists() else ""
            if pattern.search(text):
                time.sleep(delay_s)  # the random part of the moment, after the phase's log line
                signalled_at = time.monotonic()
                if script.poll() is not None:
                    result["note"] = f"the run ended (rc={script.returncode}) before the signal"
                else:
                    os.kill(script.pid, SIGNALS[sig_name])
            elif script.poll() is not None or time.monotonic() > deadline:
                result["error"] = f"the run ended (rc={script.returncode}) before the phase {phase.name!r}"
                break
        elif script.poll() is not None or time.monotonic() - signalled_at > CLEAN_WITHIN_S:
            break
        time.sleep(0.5)  # polling the run's process tree and log; bounded by the deadlines
    # what is left CLEAN_WITHIN_S after the signal (the script itself included)
    while signalled_at is not None and alive(seen) and time.monotonic() - signalled_at < CLEAN_WITHIN_S:
        time.sleep(0.5)  # polling for exit; bounded
    clean_s = time.monotonic() - signalled_at if signalled_at is not None else None
    left = alive(seen) + [p for p in alive(group_members(recorded(run_dir)[1])) if p.pid not in seen]
    now_listening = {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="tcp")
                     if c.status == psutil.CONN_LISTEN}  # fmt: skip
    ports_left = sorted(ports & now_listening)
    counts: dict[str, int] = {}
    for proc in left:
        counts[category(proc)] = counts.get(category(proc), 0) + 1
    cats = {kind for kind in kinds.values()}
    seen_by_kind = {k: sum(1 for v in kinds.values() if v == k) for k in sorted(cats - {"gone"})}
    details = [f"{p.pid} {category(p)}: {' '.join(p.cmdline())[:100]}" for p in left if p.is_running()]
    for proc in left:  # clean up after counting, so that the next trial starts clean
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    script.wait(timeout=30)
    return {"recipe": recipe, "signal": sig_name, "phase": phase.name, "delay_s": round(delay_s, 1),
            "rc": script.returncode, "clean_after_s": round(clean_s, 1) if clean_s is not None else None,
            "processes_seen": len(seen), "kinds_seen": sorted(cats - {"gone"}), "seen_by_kind": seen_by_kind, "left": counts, "left_details": details,
            "ports_seen": len(ports), "ports_left": [f"{h}:{p}" for h, p in ports_left], **result}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--signals", default=",".join(SIGNALS))
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    p.add_argument("--work-dir", type=Path, help="default: a temporary directory")
    p.add_argument("--moments", help="only these moments (phase names, comma-separated), e.g. 'training'")
    a = p.parse_args(argv)
    rng = random.Random(a.seed)
    work = (a.work_dir or Path(tempfile.mkdtemp(prefix="signal-trials-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    results, t0 = [], time.monotonic()
    for recipe in a.recipes.split(","):
        phases = [ph for ph in RECIPES[recipe]["phases"] if not a.moments or ph.name in a.moments.split(",")]
        for n in range(a.trials):
            order = rng.sample(phases, len(phases))  # each signal of a round meets another phase
            for i, sig_name in enumerate(a.signals.split(",")):
                phase = order[i % len(order)]
                res = trial(recipe, sig_name, phase, rng.uniform(0, 5), work / f"trial{n}")
                results.append(res)
                print(json.dumps(res), flush=True)
    ok = all(not r["left"] and not r["ports_left"] and "error" not in r for r in results)
    print(f"\n{'recipe':<11}{'signal':<7}{'moment':<20}{'rc':>5}{'clean s':>9}{'seen':>6}  left / ports left")
    for r in results:
        left = ", ".join(f"{k} {v}" for k, v in r["left"].items()) or "0"
        print(f"{r['recipe']:<11}{r['signal']:<7}{r['phase']:<20}{r['rc']!s:>5}{r['clean_after_s']!s:>9}"
              f"{r['processes_seen']:>6}  {left} / {len(r['ports_left'])}{'  ' + r['error'] if 'error' in r else ''}")
    print(f"processes checked for: {sorted({k for r in results for k in r['kinds_seen']})}; "
          f"{len(results)} trials in {time.monotonic() - t0:.0f} s: {'PASS' if ok else 'FAIL'}")
    if a.json:
        a.json.write_text(json.dumps({"trials": results, "wall_s": round(time.monotonic() - t0), "ok": ok}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
