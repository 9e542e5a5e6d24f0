#!/usr/bin/env bash
# vae_jax launcher. Run from anywhere; paths in arguments are relative to the repo root.
#
#   bash launch.sh setup                      create .venv and install requirements.txt
#   bash launch.sh train CONFIG [FLAGS...]    train one VAE (sets up .venv when missing)
#   bash launch.sh test [PYTEST ARGS...]      run the test suite (sets up .venv when missing)
#
# train: FLAGS are passed to experiments.train (--config.FIELD=VALUE overrides,
# --workdir=DIR). Without --workdir, the run goes to workdirs/NAME-TIMESTAMP.
# Environment: VENV (default .venv), PYTHON (default python3.11, else python3).
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

cmd=${1:-}
shift || true
case "$cmd" in
  setup)
    setup
    ;;
  train)
    [[ $# -ge 1 ]] || { echo "usage: bash launch.sh train CONFIG [FLAGS...]" >&2; exit 2; }
    config=$1
    shift
    setup
    args=("$@")
    if ! printf '%s\n' "${args[@]+"${args[@]}"}" | grep -q -- '^--workdir'; then
      name=$(basename "${config%%:*}" .py)${config#"${config%%:*}"}
      name=${name//[^A-Za-z0-9._=-]/_}
      args+=("--workdir=workdirs/$name-$(date +%Y%m%d-%H%M%S)")
    fi
    exec "$VENV/bin/python" -m experiments.train --config="$config" "${args[@]}"
    ;;
  test)
    setup
    exec "$VENV/bin/python" -m pytest -q tests "$@"
    ;;
  *)
    sed -n '2,11p' "$0" >&2
    exit 2
    ;;
esac
