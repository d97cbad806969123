"""Where the CPU goes while the verifier scores rollouts, and how fast the verifier generates then.

    python benchmarks/profile_reward_phase.py --run-dir /tmp/prof [--json out.json] [-- COMMAND ...]

COMMAND defaults to ``bash run_rubric.sh`` (the CPU default) and runs in the current directory, so
``cd OTHER_TREE && PYTHONPATH=$PWD python .../profile_reward_phase.py ...`` profiles another checkout. The tool

1. starts the verifier exactly as ``run_rubric.sh`` does on CPU (``verlkit.serving serve``,
   SmolLM2-135M-Instruct, ``--max-model-len 2048``, served as ``verifier``, the CPU profile's env),
   but itself, so the server outlives the recipe (the recipe uses it through ``VERLKIT_VERIFIER_URL``);
2. samples every process on the machine once per ``--interval`` seconds (CPU time, threads and
   threads runnable right now, with psutil and /proc), labelling the run's processes (vLLM, Ray's raylet/gcs, Ray workers by their
   ``ray::<Actor>`` proctitle, TransferQueue storage units, the HF rollout server, FSDP workers,
   rule-check workers...); everything else on the machine is "outside the run";
3. runs COMMAND with ``RUN_DIR``; the reward phase is every stats interval of the verifier's vLLM
   log (``RUN_DIR/verifier.vllm.log``, logged every ``VLLM_LOG_STATS_INTERVAL`` = 2 s) that ends with
   requests running, while COMMAND runs;
4. then sends the same kind of requests standalone to the same server (the run's rollouts, graded by
   the run's own reward function with the run's options, in batches of one step's size,
   ``--standalone-rounds`` times), and
5. prints per-label CPU use (cores: 1.0 = one core busy) in the reward phase and standalone, the
   verifier's generation throughput in both, and ``verifier_in_training_vs_standalone``.

The wall time it reports is the verifier's start plus COMMAND, what a plain ``bash run_rubric.sh``
spends in the same two parts one after the other. ``--emulate-avx2`` serves the verifier with vLLM's
AVX2 kernels on an AVX-512 machine (issue 14's machine had AVX2 only). Numbers are ratios from one
run on one machine; never compare absolute speeds across machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import psutil

STATS_INTERVAL_S = 2.0
OUTSIDE = "outside the run (other users)"
VLLM_STATS = re.compile(
    r"(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d).*Avg prompt throughput: ([\d.]+) tokens/s, "
    r"Avg generation throughput: ([\d.]+) tokens/s, Running: (\d+) reqs, Waiting: (\d+) reqs"
)
STEP_LINE = re.compile(r"\bstep:(\d+) - ")
TIMING = re.compile(r"(timing_s/[\w/]+):([\d.eE+-]+)")


# --------------------------------------------------------------------------------------------
# Process labels


def label_of(cmdline: list[str], name: str) -> str:
    """A readable role for one process of the run, from its command line (Ray workers set theirs to
    ``ray::<Actor>.<method>`` or ``ray::IDLE``)."""
    text = " ".join(cmdline) if cmdline else name
    if text.startswith("ray::"):
        # ``ray::<Class>.<method>``, or ``ray::<actor name>:<Class>.<method>`` for a named actor
        head = text[5:].split()[0] if len(text) > 5 else "?"
        actor = head.split(":", 1)[-1].split(".")[0]
        roles = {"SimpleStorageUnit": "TQ storage unit", "HFGenerationServer": "HF rollout server",
                 "WorkerDict": "FSDP worker", "TransferQueueController": "TQ controller"}
        return f"ray::{actor}" + (f" ({roles[actor]})" if actor in roles else "")
    if "VLLM::EngineCore" in text or name.startswith("VLLM::"):
        return "vLLM engine core"
    if "vllm.entrypoints" in text:
        return "vLLM server (API + engine)"
    if "verlkit.serving" in text or "recipes." in text:
        return "launcher"
    if "verl.trainer.main_ppo" in text:
        return "trainer driver (main_ppo)"
    if "math_verify" in text:
        return "rule-check worker"
    for key, lab in (("gcs_server", "ray gcs_server"), ("raylet", "ray raylet"), ("dashboard", "ray dashboard"),
                     ("log_monitor", "ray log_monitor"), ("runtime_env", "ray runtime_env agent"),
                     ("monitor.py", "ray monitor"), ("ray_client", "ray client server")):
        if key in text:
            return lab
    if "profile_reward_phase" in text:
        return "profiler (this tool)"
    exe = Path(cmdline[0]).name if cmdline else name
    return exe + (" " + Path(cmdline[1]).name if len(cmdline) > 1 and exe.startswith(("python", "bash")) else "")


def runnable_threads(pid: int) -> int:
    """Threads of ``pid`` in state R (running or waiting for a CPU) right now."""
    count = 0
    try:
        for entry in os.scandir(f"/proc/{pid}/task"):
            try:
                with open(f"{entry.path}/stat", "rb") as f:
                    count += f.read().rsplit(b") ", 1)[1][:1] == b"R"
            except (OSError, IndexError):
                continue
    except OSError:
        return 0
    return count


class Sampler(threading.Thread):
    """Every ``interval`` s: CPU seconds and threads of every process, labelled; machine busy time."""

    def __init__(self, root_pid: int, interval: float, log_files: dict[str, Path]):
        super().__init__(name="profile-sampler", daemon=True)
        self.root_pid, self.interval, self.log_files = root_pid, interval, log_files
        self.samples: list[dict] = []  # {"t", "busy", "procs": {key: (label, cpu_s, threads)}}
        self.lines: list[tuple[float, str, str]] = []  # (arrival time, file key, line) of watched logs
        self.omp: dict[str, set[str]] = defaultdict(set)  # label -> OMP_NUM_THREADS values seen
        self.affinity: dict[str, set[str]] = defaultdict(set)  # label -> CPU affinity lists seen
        self._mine: dict[tuple[int, float], bool] = {}
        self._env_seen: set[tuple[int, float]] = set()
        self._offsets: dict[str, int] = {}
        self._halt = threading.Event()

    def _label(self, proc: psutil.Process, key) -> str | None:
        """None for a process outside the run. Re-read every sample: a Ray worker or vLLM's engine
        renames itself (setproctitle) after it started."""
        try:
            if key not in self._mine:
                self._mine[key] = self.root_pid in {p.pid for p in proc.parents()} | {proc.pid}
            if not self._mine[key]:
                return None
            cmdline = proc.cmdline()
            lab = label_of(cmdline, proc.name())
            if any("multiprocessing" in c for c in cmdline):  # a spawn/forkserver/resource_tracker helper
                parent = proc.parent()
                lab = f"{label_of(parent.cmdline(), parent.name()) if parent else '?'} > mp helper"
            if key not in self._env_seen:
                self._env_seen.add(key)
                self.omp[lab].add(proc.environ().get("OMP_NUM_THREADS", "unset"))
                self.affinity[lab].add(",".join(map(str, proc.cpu_affinity())))
            return lab
        except (psutil.Error, OSError):
            return None

    def _tail_logs(self, now: float) -> None:
        for name, path in self.log_files.items():
            try:
                with open(path, "rb") as f:
                    f.seek(self._offsets.get(name, 0))
                    data = f.read()
            except OSError:
                continue
            cut = data.rfind(b"\n") + 1
            self._offsets[name] = self._offsets.get(name, 0) + cut
            self.lines += [(now, name, ln) for ln in data[:cut].decode(errors="replace").splitlines()]

    def sample(self) -> None:
        now = time.time()
        cpu = psutil.cpu_times()
        busy = cpu.user + cpu.nice + cpu.system + cpu.irq + cpu.softirq + getattr(cpu, "steal", 0.0)
        procs = {}
        for proc in psutil.process_iter():
            try:
                key = (proc.pid, proc.create_time())
                times = proc.cpu_times()
                threads = proc.num_threads()
            except (psutil.Error, OSError):
                continue
            label = self._label(proc, key) or OUTSIDE
            # the sampler's own thread is always running while it samples: not counted
            running = runnable_threads(proc.pid) - (proc.pid == self.root_pid) if label != OUTSIDE else 0
            procs[key] = (label, times.user + times.system, threads, running)
        self.samples.append({"t": now, "busy": busy, "procs": procs})
        self._tail_logs(now)

    def run(self) -> None:
        while not self._halt.is_set():
            start = time.monotonic()
            self.sample()
            self._halt.wait(max(0.0, self.interval - (time.monotonic() - start)))

    def stop(self) -> None:
        self._halt.set()
        self.join()
        self.sample()


# --------------------------------------------------------------------------------------------
# Analysis


def vllm_stats(log: Path) -> list[dict]:
    """The verifier's periodic stats lines, with the epoch time each interval ended."""
    year = datetime.now().year
    out = []
    for line in log.read_text(errors="replace").splitlines() if log.exists() else []:
        m = VLLM_STATS.search(line)
        if m:
            mo, d, h, mi, s = (int(x) for x in m.groups()[:5])
            out.append({"t": datetime(year, mo, d, h, mi, s).timestamp(), "prompt_tps": float(m[6]),
                        "gen_tps": float(m[7]), "running": int(m[8]), "waiting": int(m[9])})
    return out


def busy_windows(stats: list[dict], start: float, end: float, interval: float) -> list[tuple[float, float]]:
    """Stats intervals inside [start, end] that ended with requests running (the engine was busy)."""
    return [(max(s["t"] - interval, start), s["t"]) for s in stats if s["running"] > 0 and start <= s["t"] <= end + 1]


def throughput(stats: list[dict], windows: list[tuple[float, float]]) -> dict:
    ends = {w[1] for w in windows}
    rows = [s for s in stats if s["t"] in ends]
    if not rows:
        return {"gen_tps": None, "prompt_tps": None, "mean_running": None, "intervals": 0}
    mean = lambda k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    return {"gen_tps": mean("gen_tps"), "prompt_tps": mean("prompt_tps"), "mean_running": mean("running"),
            "intervals": len(rows)}


def cpu_by_label(samples: list[dict], windows: list[tuple[float, float]]) -> tuple[dict, float]:
    """Cores used per label (CPU seconds / seconds) over the sample intervals whose midpoint lies in a
    window, plus the machine's busy cores over the same intervals."""
    cpu_s, threads, procs, runnable = defaultdict(float), defaultdict(int), defaultdict(set), defaultdict(float)
    covered = machine = 0.0
    for prev, cur in zip(samples, samples[1:]):
        mid = (prev["t"] + cur["t"]) / 2
        if not any(a <= mid <= b for a, b in windows):
            continue
        covered += cur["t"] - prev["t"]
        machine += cur["busy"] - prev["busy"]
        for key, (label, cpu, nthreads, running) in cur["procs"].items():
            before = prev["procs"].get(key)
            cpu_s[label] += max(0.0, cpu - (before[1] if before else cpu))
            runnable[label] += running * (cur["t"] - prev["t"])
            threads[label] = max(threads[label], nthreads) if label != OUTSIDE else 0
            procs[label].add(key)
    if covered <= 0:
        return {}, 0.0
    run_total = sum(v for k, v in cpu_s.items() if k != OUTSIDE)
    table = {k: {"cores": v / covered, "procs": len(procs[k]), "max_threads": threads[k],
                 "runnable": runnable[k] / covered} for k, v in cpu_s.items()}
    table["TOTAL (run)"] = {"cores": run_total / covered, "procs": sum(len(p) for k, p in procs.items() if k != OUTSIDE),
                            "max_threads": 0, "runnable": sum(v for k, v in runnable.items() if k != OUTSIDE) / covered}
    table["machine busy (all)"] = {"cores": machine / covered, "procs": 0, "max_threads": 0}
    return table, covered


def timeline(samples: list[dict], start: float, end: float, bucket: float) -> list[dict]:
    """Cores per label in consecutive buckets of ``bucket`` seconds (to see start-up and each step)."""
    out, t = [], start
    while t < end:
        table, covered = cpu_by_label(samples, [(t, min(t + bucket, end))])
        if covered:
            out.append({"t": round(t - start), **{k: round(v["cores"], 2) for k, v in table.items() if v["cores"] >= 0.01}})
        t += bucket
    return out


def step_timings(lines: list[tuple[float, str, str]]) -> list[dict]:
    out = []
    for t, name, line in lines:
        m = STEP_LINE.search(line)
        if name == "train" and m:
            timing = {k: float(v) for k, v in TIMING.findall(line)}
            out.append({"step": int(m[1]), "logged_at": t, **{k: timing[k] for k in sorted(timing)}})
    return out


# --------------------------------------------------------------------------------------------
# The run


def cpu_profile_env() -> dict[str, str]:
    """What the recipe drivers export on the CPU profile (from the tree on PYTHONPATH)."""
    out = subprocess.run([sys.executable, "-m", "verlkit.cpu_profile.overrides", "env"], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


_AVX2_SITECUSTOMIZE = """\
# Written by benchmarks/profile_reward_phase.py --emulate-avx2: vLLM's CPU build picks its kernels
# with these two checks; answering False makes it load its AVX2 build, as on a machine without AVX-512.
import torch.cpu
torch.cpu._is_avx512_supported = lambda: False
torch.cpu._is_avx512_bf16_supported = lambda: False
"""


def avx2_env(run_dir: Path, env: dict[str, str]) -> dict[str, str]:
    """The verifier's environment on an AVX-512 machine made to run like an AVX2-only one (the issue's):
    torch's ATen and oneDNN kernels capped at AVX2, vLLM's AVX2 kernels."""
    site = run_dir / "avx2_emulation"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_AVX2_SITECUSTOMIZE)
    path = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    return {**env, "ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONPATH": path}


def start_verifier(run_dir: Path, env: dict[str, str], model: str) -> tuple[subprocess.Popen, str]:
    state = run_dir / "verifier.server.json"
    cmd = [sys.executable, "-m", "verlkit.serving", "serve", "--name", "verifier", "--model", model,
           "--run-dir", str(run_dir), "--max-model-len", "2048", "--served-model-name", "verifier",
           "--ready-timeout", "900"]
    with open(run_dir / "verifier.launcher.err", "ab") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    url = subprocess.run([sys.executable, "-m", "verlkit.serving", "wait-ready", "--state", str(state),
                          "--timeout", "900"], env=env, check=True, capture_output=True, text=True).stdout.strip()
    return proc, url


def stop_verifier(run_dir: Path, proc: subprocess.Popen, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "verlkit.serving", "stop", "--state",
                    str(run_dir / "verifier.server.json")], env=env, check=False)
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def reward_kwargs(run_dir: Path) -> dict[str, str]:
    """The verifier options the run's trainer got: from the composed config the recipe driver writes
    (``RUN_DIR/config.yaml``), else from ``...reward_kwargs.tinyv.<k>=<v>`` on a logged command line."""
    config = run_dir / "config.yaml"
    if config.exists():
        from omegaconf import OmegaConf

        tinyv = OmegaConf.select(OmegaConf.load(config), "reward.custom_reward_function.reward_kwargs.tinyv")
        if tinyv is not None:
            return {k: v for k, v in OmegaConf.to_container(tinyv, resolve=True).items() if v is not None}
    command_out = run_dir / "command.out"
    text = command_out.read_text(errors="replace") if command_out.exists() else ""
    found = re.findall(r"reward_kwargs\.tinyv\.(\w+)=(\S+)", text)
    return {k: v.strip("'\"") for k, v in found}


def standalone_requests(run_dir: Path, url: str, rounds: int = 1) -> tuple[list[list[tuple]], dict]:
    """The run's rollouts, each paired with another training question, grouped by step; ``rounds``
    times over, each round with other pairs."""
    import pandas as pd

    rows = pd.read_parquet(run_dir / "data" / "train.parquet").to_dict("records")
    steps = [[json.loads(line)["output"] for line in path.read_text().splitlines() if line.strip()]
             for path in sorted((run_dir / "rollouts").glob("*.jsonl"))]
    batches = []
    for k in range(rounds):
        for i, outputs in enumerate(steps):
            # Another question than in training (no exact repeat for the prefix cache), one of the same set.
            shift = 7 * (i + 1) + 3 * k
            picked = [rows[(j + shift) % len(rows)] for j in range(len(outputs))]
            batches.append([(r["data_source"], out, r["reward_model"]["ground_truth"], dict(r["extra_info"]))
                            for r, out in zip(picked, outputs)])
    options = {**reward_kwargs(run_dir), "url": url}
    return batches, options


def run_standalone(run_dir: Path, url: str, rounds: int) -> list[tuple[float, float, int]]:
    """Grade the requests with the run's own reward function, one step's batch at a time."""
    sys.path.insert(0, str(Path.cwd()))
    import verl  # noqa: F401  (grafts our reward modules onto verl.utils.reward_score)
    from verl.utils.reward_score import tinyv

    batches, options = standalone_requests(run_dir, url, rounds)
    if not batches:
        print(f"[profile] no rollouts under {run_dir}/rollouts: no standalone measurement", flush=True)
    async def grade(batch):
        return await asyncio.gather(*(tinyv.compute_score(*item, **options) for item in batch))

    spans = []
    for batch in batches:
        start = time.time()
        results = asyncio.run(grade(batch))
        spans.append((start, time.time(), sum(r["verifier_failed"] > 0 for r in results)))
        time.sleep(STATS_INTERVAL_S + 0.5)  # let the stats interval that holds the batch's tail close
    return spans


def fmt_table(reward: dict, standalone: dict, omp: dict) -> str:
    labels = sorted(set(reward) | set(standalone), key=lambda k: (k.startswith(("TOTAL", "machine")),
                                                                   -reward.get(k, {}).get("cores", 0.0)))
    head = (f"{'process (label)':46s} {'procs':>5s} {'threads':>7s} {'OMP':>5s} {'reward':>7s} {'alone':>7s} "
            f"{'R-thr rw':>8s} {'R-thr al':>8s}")
    out = [head, "-" * len(head)]
    for k in labels:
        r, s = reward.get(k, {}), standalone.get(k, {})
        procs = max(r.get("procs", 0), s.get("procs", 0))
        thr = max(r.get("max_threads", 0), s.get("max_threads", 0))
        out.append(f"{k[:46]:46s} {procs or '':>5} {thr or '':>7} {','.join(sorted(omp.get(k, ())))[:5]:>5s} "
                   f"{r.get('cores', 0.0):7.3f} {s.get('cores', 0.0):7.3f} {r.get('runnable', 0.0):8.2f} "
                   f"{s.get('runnable', 0.0):8.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run-dir", required=True, type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--interval", type=float, default=1.0, help="sampling period, s")
    ap.add_argument("--verifier-model", default=None, help="default: the local SmolLM2-135M-Instruct")
    ap.add_argument("--standalone-rounds", type=int, default=2,
                    help="times the run's rollouts are graded standalone (the machine may be shared: more is steadier)")
    ap.add_argument("--emulate-avx2", action="store_true",
                    help="serve the verifier with AVX2 kernels only (as on a machine without AVX-512)")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="after --: the run (default: bash run_rubric.sh)")
    args = ap.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    command = command or ["bash", "run_rubric.sh"]
    run_dir = args.run_dir.resolve()
    run_dir.mkdir(parents=True, exist_ok=True)

    env = {**os.environ, **cpu_profile_env(), "RUN_DIR": str(run_dir)}
    env.setdefault("VLLM_LOG_STATS_INTERVAL", str(STATS_INTERVAL_S))
    interval = float(env["VLLM_LOG_STATS_INTERVAL"])
    model = args.verifier_model or subprocess.run([sys.executable, "-m", "verlkit.models.local", "smollm2"],
                                                  check=True, capture_output=True, text=True).stdout.strip()
    sampler = Sampler(os.getpid(), args.interval, {"train": run_dir / "train.log"})
    sampler.start()
    t0 = time.time()
    server, url = start_verifier(run_dir, avx2_env(run_dir, env) if args.emulate_avx2 else env, model)
    t_ready = time.time()
    try:
        print(f"[profile] verifier ready at {url} after {t_ready - t0:.0f}s; running: {shlex.join(command)}", flush=True)
        env.update(VERLKIT_VERIFIER_URL=url, VERIFIER_NAME="verifier")
        with open(run_dir / "command.out", "wb") as out:
            rc = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
        t_done = time.time()
        print(f"[profile] command exited {rc} after {t_done - t_ready:.0f}s; standalone requests...", flush=True)
        spans = run_standalone(run_dir, url, args.standalone_rounds) if rc == 0 else []
    finally:
        stop_verifier(run_dir, server, env)
        sampler.stop()

    stats = vllm_stats(run_dir / "verifier.vllm.log")
    reward_w = busy_windows(stats, t_ready, t_done, interval)
    alone_w = [w for a, b, _ in spans for w in busy_windows(stats, a, b + interval, interval)]
    in_training, alone = throughput(stats, reward_w), throughput(stats, alone_w)
    reward_cpu, reward_s = cpu_by_label(sampler.samples, reward_w)
    alone_cpu, alone_s = cpu_by_label(sampler.samples, alone_w)
    run_cpu, run_s = cpu_by_label(sampler.samples, [(t_ready, t_done)])
    ratio = (in_training["gen_tps"] / alone["gen_tps"]) if in_training["gen_tps"] and alone["gen_tps"] else None
    report = {
        "verifier_in_training_vs_standalone": ratio,
        "verifier_in_training": in_training, "verifier_standalone": alone,
        "wall_s": {"verifier_start": t_ready - t0, "command": t_done - t_ready, "total": t_done - t0},
        "outside_cores": {"reward_phase": reward_cpu.get(OUTSIDE, {}).get("cores"),
                          "standalone": alone_cpu.get(OUTSIDE, {}).get("cores")},
        "command": command, "returncode": rc, "emulate_avx2": args.emulate_avx2, "reward_phase_s": reward_s, "standalone_s": alone_s,
        "standalone_failed_requests": sum(f for *_, f in spans),
        "steps": step_timings(sampler.lines),
        "cpu_cores": {"reward_phase": reward_cpu, "standalone": alone_cpu, "whole_command": run_cpu},
        "omp_num_threads": {k: sorted(v) for k, v in sampler.omp.items()},
        "cpu_affinity": {k: sorted(v) for k, v in sampler.affinity.items()},
        "timeline_10s": timeline(sampler.samples, t0, t_done, 10.0),
        "loadavg_end": os.getloadavg(),
    }
    print(f"\n## CPU cores per process label (1.0 = one core busy): reward phase ({reward_s:.0f}s) vs "
          f"standalone ({alone_s:.0f}s); whole command {run_s:.0f}s.\nOMP: OMP_NUM_THREADS in the environment the "
          f"process started with (Ray sets its workers' later); R-thr: mean threads runnable (running or waiting "
          f"for a core)")
    print(fmt_table(reward_cpu, alone_cpu, sampler.omp))
    print("\n## Timeline (10 s buckets from the verifier's start): the 4 busiest run labels, cores")
    for row in report["timeline_10s"]:
        top = sorted(((k, v) for k, v in row.items() if k not in ("t", OUTSIDE, "TOTAL (run)", "machine busy (all)")),
                     key=lambda kv: -kv[1])[:4]
        print(f"{row['t']:5d}s run {row.get('TOTAL (run)', 0):4.2f} other {row.get(OUTSIDE, 0):4.2f} | "
              + ", ".join(f"{k[:28]} {v:.2f}" for k, v in top))
    for s in report["steps"]:
        print(f"step {s['step']}: " + ", ".join(f"{k[9:]}={v:.1f}s" for k, v in s.items() if k.startswith("timing_s/")
                                                 and k[9:] in ("gen", "reward", "update_actor", "step")))
    fmt = lambda d: "n/a" if d["gen_tps"] is None else (  # noqa: E731
        f"{d['gen_tps']:.1f} gen tok/s, {d['prompt_tps']:.0f} prompt tok/s, {d['mean_running']:.1f} running "
        f"({d['intervals']} intervals)")
    print(f"\nverifier in training: {fmt(in_training)}\nverifier standalone: {fmt(alone)}")
    print(f"verifier_in_training_vs_standalone = {ratio:.2f}" if ratio else "verifier_in_training_vs_standalone = n/a")
    print("cores used outside the run (other users of the machine): reward phase "
          f"{report['outside_cores']['reward_phase'] or 0:.2f}, standalone {report['outside_cores']['standalone'] or 0:.2f}")
    print(f"wall: verifier start {t_ready - t0:.0f}s + command {t_done - t_ready:.0f}s = {t_done - t0:.0f}s (rc={rc})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return rc


if __name__ == "__main__":
    sys.exit(main())
