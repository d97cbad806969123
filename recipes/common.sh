# Shared by every run_*.sh: profile detection, served models through the one launcher, data
# validation, cleanup of everything this run started, and the end-of-run summary.
# Source it; do not execute it.

VK_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VK_PY="${VK_PYTHON:-python}"

VK_STATES=()

vk_log() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# PROFILE=gpu|cpu (override with VK_PROFILE). The CPU profile exports the env verl's processes need.
vk_detect_profile() {
  if [[ -n "${VK_PROFILE:-}" ]]; then PROFILE="$VK_PROFILE"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then PROFILE=gpu
  else PROFILE=cpu; fi
  if [[ "$PROFILE" == cpu ]]; then
    while IFS= read -r kv; do export "$kv"; done < <("$VK_PY" -m verlkit.cpu_profile.overrides env)
  fi
  export WANDB_MODE="${WANDB_MODE:-offline}"
  vk_log "profile: $PROFILE"
}

# vk_serve NAME MODEL [launcher options...]: start (or reuse, with VERLKIT_<NAME>_URL / --external-url)
# a served model, wait until it answered a real generation (or classification, --task classify), and
# set VK_URL and VK_MODEL_NAME. Stopped by vk_cleanup (or earlier by vk_stop NAME).
vk_serve() { vk_serve_start "$@" && vk_serve_wait "$1"; }

# vk_serve_start NAME MODEL [options...] starts without waiting, so several servers can start at
# once; vk_serve_wait NAME then waits for one and sets VK_URL and VK_MODEL_NAME.
vk_serve_start() {
  local name="$1" model="$2"; shift 2
  local state="$RUN_DIR/$name.server.json"
  rm -f "$state"
  "$VK_PY" -m verlkit.serving serve --name "$name" --model "$model" --run-dir "$RUN_DIR" "$@" \
    >"$RUN_DIR/$name.launcher.out" 2>"$RUN_DIR/$name.launcher.err" &
  VK_STATES+=("$state")
}

vk_serve_wait() {
  local name="$1" state="$RUN_DIR/$1.server.json"
  if ! VK_URL="$("$VK_PY" -m verlkit.serving wait-ready --state "$state" --timeout "${VK_READY_TIMEOUT:-900}")"; then
    vk_log "the $name server did not become ready:"; tail -n 40 "$RUN_DIR/$name.launcher.err" >&2
    return 1
  fi
  # the name clients must send (an external server decides its own)
  VK_MODEL_NAME="$("$VK_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["served_model_name"])' "$state")"
  vk_log "$name ready at $VK_URL as '$VK_MODEL_NAME' (log: $RUN_DIR/$name.vllm.log)"
}

# vk_stop NAME: stop a server this run started, before the run ends (frees its memory or GPU).
vk_stop() {
  local state="$RUN_DIR/$1.server.json"
  [[ -f "$state" ]] && "$VK_PY" -m verlkit.serving stop --state "$state" >&2 || true
}

vk_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for state in "${VK_STATES[@]}"; do
    [[ -f "$state" ]] && "$VK_PY" -m verlkit.serving stop --state "$state" >&2 || true
  done
  # verl's own processes (Ray) started by this run: stop the local Ray instance if we started one.
  if [[ -n "${VK_TRAIN_PID:-}" ]] && kill -0 "$VK_TRAIN_PID" 2>/dev/null; then
    kill -TERM -- "-$VK_TRAIN_PID" 2>/dev/null || kill -TERM "$VK_TRAIN_PID" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$VK_TRAIN_PID" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$VK_TRAIN_PID" 2>/dev/null || true
  fi
  exit "$rc"
}

vk_install_cleanup() { trap vk_cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; }

vk_validate() { "$VK_PY" -m data_prep.validate "$@"; }

# vk_train LOG ARGS...: run a trainer in a new session (its own process group, so cleanup stops all of
# it), output to the console and LOG. Running it in the background and `wait`ing keeps the shell able
# to act on SIGINT/SIGTERM at once (a foreground child would defer the traps until it exits).
vk_train() {
  local log="$1"; shift
  local pgid_file="$RUN_DIR/train.pgid"
  rm -f "$pgid_file"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pgid_file" "$@" 2>&1 | tee "$log" &
  local pipeline=$!
  until [[ -s "$pgid_file" ]] || ! kill -0 "$pipeline" 2>/dev/null; do sleep 0.1; done
  VK_TRAIN_PID="$(cat "$pgid_file" 2>/dev/null || true)"
  local rc=0
  wait "$pipeline" || rc=$?  # pipefail: the trainer's status, not tee's
  VK_TRAIN_PID=""
  return "$rc"
}

# vk_args "$@": split a recipe's arguments at "--" into POSITIONAL (the recipe's own) and EXTRA (hydra
# overrides passed through to the trainer).
vk_args() {
  POSITIONAL=(); EXTRA=()
  while (($#)); do
    if [[ "$1" == "--" ]]; then shift; EXTRA=("$@"); return; fi
    POSITIONAL+=("$1"); shift
  done
}

# vk_begin PREFIX "$@": what every run_*.sh does first — split its arguments (vk_args), pick the
# profile, create RUN_DIR (runs/PREFIX-<timestamp>) and install the cleanup. The caller then does
# set -- "${POSITIONAL[@]+"${POSITIONAL[@]}"}" (a function cannot reset its caller's arguments).
vk_begin() {
  local prefix="$1"; shift
  vk_args "$@"
  vk_detect_profile
  vk_run_dir "$prefix"
  vk_install_cleanup
}

# vk_run_dir PREFIX: create RUN_DIR (default runs/PREFIX-<timestamp>), absolute, exported.
vk_run_dir() {
  RUN_DIR="${RUN_DIR:-runs/$1-$(date +%Y%m%d-%H%M%S)}"
  mkdir -p "$RUN_DIR" && RUN_DIR="$(cd "$RUN_DIR" && pwd)" && export RUN_DIR
}
