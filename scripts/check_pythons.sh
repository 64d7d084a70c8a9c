#!/usr/bin/env bash
# README's install, then the full test suite, on each Python in a fresh venv.
#
#   bash scripts/check_pythons.sh              # 3.11, 3.12 and 3.13 (pyenv's, else python3.X on PATH)
#   bash scripts/check_pythons.sh python3.12   # any interpreters
#
# Uses the prepared MNIST in $TFDS_DATA_DIR, else ../shared/tensorflow_datasets. Prints one
# line per interpreter (install and test seconds, pytest's closing line) and a log path.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if (($# == 0)); then
  set --
  for version in 3.11 3.12 3.13; do
    found=$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/"$version".*/bin/python3 2>/dev/null | sort -V | tail -n 1)
    set -- "$@" "${found:-python$version}"
  done
fi
if [[ -z ${TFDS_DATA_DIR:-} && -d ../shared/tensorflow_datasets ]]; then
  TFDS_DATA_DIR=$(cd ../shared/tensorflow_datasets && pwd)
fi
export TFDS_DATA_DIR MPLBACKEND=Agg

work=$(mktemp -d)
results=()
status=0
for python in "$@"; do
  if ! command -v "$python" >/dev/null; then
    results+=("$python: not found")
    status=1
    continue
  fi
  version=$("$python" -c 'import platform; print(platform.python_version())')
  venv=$work/venv-$version
  log=$work/python-$version.log
  start=$SECONDS
  # README's install, in a fresh venv (plus the Jupyter kernel the notebook test runs on).
  if "$python" -m venv "$venv" \
    && "$venv/bin/python" -m pip install --quiet --upgrade pip \
    && "$venv/bin/python" -m pip install --quiet -r requirements.txt \
    && "$venv/bin/python" -m pip install --quiet -e . \
    && "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null; then
    installed=$((SECONDS - start))
    start=$SECONDS
    # README's test command, in the venv.
    (source "$venv/bin/activate" && cd "$root" && python -m pytest -q) >"$log" 2>&1
    code=$?
    summary=$(grep -E '(passed|failed|error)' "$log" | tail -n 1)
    results+=("Python $version: install ${installed} s, tests $((SECONDS - start)) s, exit $code: $summary")
    ((code == 0)) || status=1
  else
    results+=("Python $version: install FAILED after $((SECONDS - start)) s")
    status=1
  fi
done
printf '%s\n' "${results[@]}"
echo "logs and venvs: $work"
exit $status
