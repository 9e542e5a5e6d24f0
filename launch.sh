#!/usr/bin/env bash
# vae_jax launcher. Run from anywhere; paths in arguments are relative to the repo root.
#
#   bash launch.sh setup                      create .venv and install requirements.txt
#   bash launch.sh train CONFIG [FLAGS...]    train one VAE (sets up .venv when missing)
#   bash launch.sh sweep CONFIG [FLAGS...]    run a sweep (sets up .venv when missing)
#   bash launch.sh test [PYTEST ARGS...]      run the whole test suite, as CI does (sets up .venv
#                                             when missing; one worker a core, at most 4:
#                                             VAE_JAX_TEST_WORKERS=N, 0 for none)
#   bash launch.sh test --fast [PYTEST ARGS...]  only the unit tests (-m "not slow", pytest.ini):
#                                             no subprocess, no training run end to end; keeps
#                                             XLA's compiled programs in ~/.cache/vae_jax
#
# Cloud TPU VMs, from your own machine (gcloud compute tpus tpu-vm; a pod slice has one
# VM, a "worker", per host; every worker runs the same command and they train as one run):
#   bash launch.sh tpu-create [GCLOUD FLAGS...]        create the TPU VM
#   bash launch.sh tpu-setup                           copy this checkout to every worker; install
#                                                      requirements.txt and jax[tpu] there
#   bash launch.sh tpu-train CONFIG [FLAGS...]         train on every worker at once
#   bash launch.sh tpu-sweep CONFIG [FLAGS...]         a whole sweep on every worker at once,
#                                                      its members trained as populations
#                                                      (experiments.sweep --in_process)
#   bash launch.sh tpu-sweep-member CONFIG K [FLAGS...]  sweep member K on every worker at once
#   bash launch.sh tpu-fetch WORKDIR [DEST]            copy a workdir back from worker 0
#                                                      (WORKDIR relative to TPU_REMOTE_DIR;
#                                                      DEST defaults to workdirs/)
#   bash launch.sh tpu-delete [GCLOUD FLAGS...]        delete the TPU VM (asks first)
#
# train, tpu-train: FLAGS go to experiments.train (--config.FIELD=VALUE overrides,
# --workdir=DIR). Without --workdir, the run goes to a new folder workdirs/NAME-TIMESTAMP
# (named by vae_jax/training/workdir_names.py; the run logs it: pass it to resume).
# sweep, tpu-sweep, tpu-sweep-member: FLAGS go to experiments.sweep (--workdir=DIR is
# required; --population_size=N, --parallel=N, --dry_run, --config.FIELD=VALUE).
# Environment: VENV (default .venv), PYTHON (default python3.11, else python3).
# train and sweep keep JAX's compiled programs in a persistent cache, so a resumed run or a
# sweep's next member loads them instead of compiling again: JAX_COMPILATION_CACHE_DIR if
# set, else ${XDG_CACHE_HOME:-~/.cache}/vae_jax/jax_compilation_cache (private to the user);
# VAE_JAX_COMPILATION_CACHE=off turns it off.
# TPU environment:
#   TPU_NAME        the TPU VM's name (required), e.g. vae-v4-32
#   TPU_ZONE        its zone (required), e.g. us-central2-b
#   TPU_TYPE        accelerator type (tpu-create; required there), e.g. v4-32, v5litepod-16
#   TPU_RUNTIME     software version (tpu-create); default from TPU_TYPE: v2/v3/v4
#                   tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite, v5p v2-alpha-tpuv5,
#                   v6e v2-alpha-tpuv6e
#   GCP_PROJECT     the Google Cloud project (default: gcloud's configured project)
#   TPU_REMOTE_DIR  the checkout on every worker, relative to the home directory or
#                   absolute (default vae_jax)
#   TPU_SPOT        1: create a Spot VM (cheaper, preemptible; a preempted run resumes
#                   when its command is rerun on the same --workdir); default 0
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=${VENV:-.venv}

setup() {
  if [[ -x "$VENV/bin/python" && -f "$VENV/.installed" && ! requirements.txt -nt "$VENV/.installed" ]]; then
    return
  fi
  local python=${PYTHON:-$(command -v python3.11 || command -v python3)}
  "$python" -c 'import sys; assert sys.version_info >= (3, 11), "vae_jax needs Python >= 3.11"'
  echo "Setting up $VENV with $("$python" --version) ..." >&2
  "$python" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -r requirements.txt
  touch "$VENV/.installed"
}

compilation_cache() {  # exports JAX's persistent compilation cache dir (see the header)
  case ${VAE_JAX_COMPILATION_CACHE:-on} in
    off | 0 | false | no) unset JAX_COMPILATION_CACHE_DIR; return ;;
    on | 1 | true | yes | "") ;;
    *) echo "launch.sh: VAE_JAX_COMPILATION_CACHE=$VAE_JAX_COMPILATION_CACHE: use on or off" >&2
       exit 2 ;;
  esac
  if [[ -z ${JAX_COMPILATION_CACHE_DIR:-} ]]; then
    export JAX_COMPILATION_CACHE_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/vae_jax/jax_compilation_cache"
  fi
  mkdir -p "$JAX_COMPILATION_CACHE_DIR" && chmod 700 "$JAX_COMPILATION_CACHE_DIR"
  # On a CPU most programs compile in under JAX's default threshold of 1 s: keep them too.
  export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=${JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS:-0}
}

usage() {  # usage LINE: the subcommand's usage, exit status 2
  echo "usage: bash launch.sh $1" >&2
  exit 2
}

with_default_workdir() {  # CONFIG FLAGS... -> FLAGS, plus --workdir=workdirs/NAME-TIMESTAMP if absent
  local config=$1 workdir
  shift
  args=("$@")
  if ! printf '%s\n' "${args[@]+"${args[@]}"}" | grep -q -- '^--workdir'; then
    # Named as experiments.train names its default (the module needs only the standard library).
    workdir=$(python3 -m vae_jax.training.workdir_names "$config")
    args+=("--workdir=$workdir")
  fi
}

# --- Cloud TPU VMs: nothing here needs .venv, and nothing runs setup ---------------------

need() {  # need VAR EXAMPLE: fails, naming VAR, if it is unset or empty
  if [[ -z ${!1:-} ]]; then
    echo "launch.sh $cmd: set $1, e.g. export $1=$2 (see the header of launch.sh)" >&2
    exit 2
  fi
}

tpu_init() {  # checks the variables every tpu-* command needs; sets gcloud_flags
  need TPU_NAME vae-v4-32
  need TPU_ZONE us-central2-b
  TPU_REMOTE_DIR=${TPU_REMOTE_DIR:-vae_jax}
  gcloud_flags=("--zone=$TPU_ZONE")
  if [[ -n ${GCP_PROJECT:-} ]]; then
    gcloud_flags+=("--project=$GCP_PROJECT")
  fi
}

default_runtime() {  # TPU_TYPE -> the software version Cloud TPU recommends for JAX, or ""
  case $1 in
    v2-* | v3-* | v4-*) echo tpu-ubuntu2204-base ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v6e-*) echo v2-alpha-tpuv6e ;;
    *) echo "" ;;
  esac
}

quoted() {  # ARGS... -> one string the workers' shell splits back into exactly ARGS
  local out="" a
  for a in "$@"; do
    out+=" $(printf '%q' "$a")"
  done
  printf '%s' "${out# }"
}

on_all_workers() {  # COMMAND: runs it on every worker at once (a pod slice's hosts)
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${gcloud_flags[@]}" --worker=all --command="$1"
}

remote_python() {  # MODULE ARGS...: python -m MODULE ARGS... in the checkout on every worker
  # VAE_JAX_DISTRIBUTED=auto: the processes join one job (jax finds the slice's workers).
  on_all_workers "cd $(quoted "$TPU_REMOTE_DIR") && VAE_JAX_DISTRIBUTED=auto .venv/bin/python -m $(quoted "$@")"
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup)
    setup
    ;;
  train)
    [[ $# -ge 1 ]] || usage "train CONFIG [FLAGS...]"
    config=$1
    shift
    setup
    compilation_cache
    # Without --workdir, experiments.train makes a new workdirs/NAME-TIMESTAMP and logs it.
    exec "$VENV/bin/python" -m experiments.train --config="$config" "$@"
    ;;
  sweep)
    [[ $# -ge 1 ]] || usage "sweep CONFIG [FLAGS...]"
    config=$1
    shift
    setup
    compilation_cache
    exec "$VENV/bin/python" -m experiments.sweep --config="$config" "$@"
    ;;
  test)
    tier=()
    if [[ ${1:-} == --fast ]]; then
      shift
      tier=(-m "not slow")  # leaves out the tests marked @pytest.mark.slow
      # XLA's compiled programs are kept from one fast run to the next (the full suite
      # starts from an empty cache, as CI does); delete the folder at any time.
      cache=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/vae_jax/xla_fast_tests
      export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$cache}
    fi
    # One pytest worker a core, at most 4 (pytest-xdist): most tests wait on a subprocess or
    # run one thread, so two workers keep CI's 2 cores busy. A test file stays on one worker
    # (--dist loadfile: its module fixtures run once). VAE_JAX_TEST_WORKERS=N sets the count;
    # 0, or -n 0 among the arguments, runs everything in this process (pdb, -s).
    cores=$(nproc 2>/dev/null || echo 1)
    workers=${VAE_JAX_TEST_WORKERS:-$(( cores < 4 ? cores : 4 ))}
    if [[ ! $workers =~ ^[0-9]+$ ]]; then
      echo "launch.sh test: VAE_JAX_TEST_WORKERS=$workers: use a whole number (0: no workers)" >&2
      exit 2
    fi
    setup
    exec "$VENV/bin/python" -m pytest -q tests studies -n "$workers" --dist loadfile \
      "${tier[@]+"${tier[@]}"}" "$@"
    ;;
  tpu-create)
    tpu_init
    need TPU_TYPE v4-32
    runtime=${TPU_RUNTIME:-$(default_runtime "$TPU_TYPE")}
    if [[ -z $runtime ]]; then
      echo "launch.sh tpu-create: no default software version for TPU_TYPE=$TPU_TYPE; set" \
        "TPU_RUNTIME, e.g. export TPU_RUNTIME=tpu-ubuntu2204-base" >&2
      exit 2
    fi
    create=(--accelerator-type="$TPU_TYPE" --version="$runtime")
    case ${TPU_SPOT:-0} in
      1 | true | yes) create+=(--spot) ;;
      0 | false | no | "") ;;
      *) echo "launch.sh tpu-create: TPU_SPOT=$TPU_SPOT: use 1 or 0" >&2; exit 2 ;;
    esac
    exec gcloud compute tpus tpu-vm create "$TPU_NAME" "${gcloud_flags[@]}" "${create[@]}" "$@"
    ;;
  tpu-setup)
    tpu_init
    jax_version=$(sed -n 's/^jax==//p' requirements.txt)
    archive=$(mktemp "${TMPDIR:-/tmp}/vae_jax_src.XXXXXX")
    trap 'rm -f "$archive"' EXIT
    # The checkout's files (tracked, and new ones git does not ignore): no .venv, no workdirs.
    git ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
      tar czf "$archive" --null -T -
    gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:vae_jax_src.tar.gz" \
      "${gcloud_flags[@]}" --worker=all
    dir=$(quoted "$TPU_REMOTE_DIR")
    # TPU VM images have Python 3.10; vae_jax needs >= 3.11 (Ubuntu 22.04 packages it).
    on_all_workers "set -e; mkdir -p $dir && tar xzf vae_jax_src.tar.gz -C $dir && \
rm vae_jax_src.tar.gz && cd $dir && \
{ command -v python3.11 >/dev/null || { sudo apt-get update -qq && \
sudo apt-get install -y -qq python3.11 python3.11-venv; }; } && \
PYTHON=python3.11 bash launch.sh setup && \
.venv/bin/python -m pip install --quiet $(quoted "jax[tpu]==$jax_version") && \
.venv/bin/python -c 'import jax, libtpu; print(\"jax\", jax.__version__, \"and libtpu ready\")'"
    ;;
  tpu-train)
    [[ $# -ge 1 ]] || usage "tpu-train CONFIG [FLAGS...]"
    tpu_init
    config=$1
    shift
    with_default_workdir "$config" "$@"  # one timestamp, here: every worker gets the same
    remote_python experiments.train --config="$config" "${args[@]}"
    ;;
  tpu-sweep)
    [[ $# -ge 1 ]] || usage "tpu-sweep CONFIG [FLAGS...]"
    tpu_init
    config=$1
    shift
    remote_python experiments.sweep --config="$config" --in_process "$@"
    ;;
  tpu-sweep-member)
    [[ $# -ge 2 && $2 =~ ^[0-9]+$ ]] || usage "tpu-sweep-member CONFIG K [FLAGS...] (K: 0, 1, ...)"
    tpu_init
    config=$1
    member=$2
    shift 2
    remote_python experiments.sweep --config="$config" --member="$member" "$@"
    ;;
  tpu-fetch)
    [[ $# -ge 1 && $# -le 2 ]] || usage "tpu-fetch WORKDIR [DEST]"
    tpu_init
    src=$1
    [[ $src == /* ]] || src="$TPU_REMOTE_DIR/$src"
    dest=${2:-workdirs/}
    mkdir -p "$dest"
    exec gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$src" "$dest" \
      "${gcloud_flags[@]}" --worker=0
    ;;
  tpu-delete)
    tpu_init
    exec gcloud compute tpus tpu-vm delete "$TPU_NAME" "${gcloud_flags[@]}" "$@"
    ;;
  *)
    sed -n '2,/^set -euo pipefail$/p' "$(basename "${BASH_SOURCE[0]}")" | sed '$d' >&2
    exit 2
    ;;
esac
