#!/usr/bin/env bash
# Install mnist_loc in a fresh venv per stack, then run README's test command there.
#
#   bash scripts/check_versions.sh                 # pins, colab, oldest
#   bash scripts/check_versions.sh colab pins-3.12 # any of the stacks below
#
# Stacks:
#   pins       requirements.txt's exact pins on Python 3.11 (what CI runs)
#   pins-3.12  the same pins on Python 3.12 (pins-3.13: on 3.13)
#   colab      Google Colab's runtime: Python 3.13, TensorFlow 2.20.0, Keras 3.13.2, numpy 2.1.3;
#              first the main and several-digits notebooks' quick runs as in a fresh runtime (no
#              mnist_loc: their install cell installs the checkout), then the suite
#   oldest     the lowest versions pyproject.toml claims: Python 3.11, TensorFlow 2.20.0, Keras 3.13.2,
#              numpy 2.1.3 (TensorFlow 2.16.2 / Keras 3.3.3 / numpy 1.26.4 are untested candidates
#              for lower bounds: they import and build the model)
# Outside `pins*`, the other packages (tfds, matplotlib, pytest, papermill, ...) keep
# requirements.txt's pins. Interpreters come from pyenv, else python3.X on PATH. Uses
# the prepared MNIST in $TFDS_DATA_DIR, else ../shared/tensorflow_datasets. Prints one line
# per stack (versions, install and test seconds, pytest's closing line) and the logs' folder.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

declare -A PYTHON=([pins]=3.11 [pins-3.12]=3.12 [pins-3.13]=3.13 [colab]=3.13 [oldest]=3.11)
declare -A CORE=(
  [colab]="tensorflow==2.20.0 keras==3.13.2 numpy==2.1.3"
  [oldest]="tensorflow==2.20.0 keras==3.13.2 numpy==2.1.3"
)
(($# == 0)) && set -- pins colab oldest

if [[ -z ${TFDS_DATA_DIR:-} && -d ../shared/tensorflow_datasets ]]; then
  TFDS_DATA_DIR=$(cd ../shared/tensorflow_datasets && pwd)
fi
export TFDS_DATA_DIR MPLBACKEND=Agg

work=$(mktemp -d)
results=()
status=0
for stack in "$@"; do
  version=${PYTHON[$stack]:-}
  if [[ -z $version ]]; then
    results+=("$stack: unknown stack (known: ${!PYTHON[*]})")
    status=1
    continue
  fi
  python=$(ls -d "$(pyenv root 2>/dev/null || echo /nonexistent)"/versions/"$version".*/bin/python3 2>/dev/null | sort -V | tail -n 1)
  python=${python:-python$version}
  if ! command -v "$python" >/dev/null; then
    results+=("$stack: Python $version not found")
    status=1
    continue
  fi
  venv=$work/$stack
  log=$work/$stack.log
  requirements=requirements.txt
  if [[ -n ${CORE[$stack]:-} ]]; then
    # The stack's TensorFlow, Keras and numpy; everything else as pinned (jupyter is not needed to test).
    requirements=$work/$stack-requirements.txt
    grep -v -E '^(tensorflow|keras|numpy|jupyter)==' requirements.txt >"$requirements"
    tr ' ' '\n' <<<"${CORE[$stack]}" >>"$requirements"
  fi
  start=$SECONDS
  if "$python" -m venv "$venv" \
    && "$venv/bin/python" -m pip install --quiet --upgrade pip >>"$log" 2>&1 \
    && "$venv/bin/python" -m pip install --quiet -r "$requirements" >>"$log" 2>&1 \
    && "$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null 2>>"$log"; then
    installed=$((SECONDS - start))
    fresh=""
    if [[ $stack == colab ]]; then
      began=$SECONDS
      # A fresh runtime: the notebook alone, no mnist_loc; its install cell installs the package only.
      nb=$work/fresh-runtime
      mkdir -p "$nb" && cp object_localization.ipynb notebooks/several_digits.ipynb notebooks/dense_scenes.ipynb "$nb/"
      if (cd "$nb" && "$venv/bin/python" -m papermill object_localization.ipynb executed.ipynb --cwd "$nb" \
          -p EPOCHS 1 -p STEPS_PER_EPOCH 50 -p CHECK_CANVASES 1000 -p MNIST_LOC_SOURCE "$root" \
          && "$venv/bin/python" -m papermill several_digits.ipynb executed-several.ipynb --cwd "$nb" \
          -p EPOCHS 1 -p STEPS_PER_EPOCH 5 -y 'SEEDS: [0]' -y 'CURVE_EPOCHS: [2]' -y 'COURSE_SEEDS: []' \
          -p OUT_DIR "$nb/runs" -p MNIST_LOC_SOURCE "$root" \
          && "$venv/bin/python" -m papermill dense_scenes.ipynb executed-dense.ipynb --cwd "$nb" \
          -p EPOCHS 1 -p STEPS_PER_EPOCH 3 -y 'SEEDS: [0]' -p OUT_DIR "$nb/dense-runs" -p MNIST_LOC_SOURCE "$root") >>"$log" 2>&1; then
        fresh=", fresh-runtime notebook passed ($((SECONDS - began)) s)"
      else
        fresh=", fresh-runtime notebook FAILED"
        status=1
      fi
      "$venv/bin/python" -m pip uninstall --quiet --yes mnist_loc >>"$log" 2>&1
    fi
    "$venv/bin/python" -m pip install --quiet --no-deps -e . >>"$log" 2>&1 || { results+=("$stack: install of mnist_loc FAILED"); status=1; continue; }
    versions=$("$venv/bin/python" -c 'import platform, numpy, keras, tensorflow as tf; print(f"Python {platform.python_version()}, TF {tf.__version__}, Keras {keras.__version__}, numpy {numpy.__version__}")' 2>/dev/null | tail -n 1)
    start=$SECONDS
    (source "$venv/bin/activate" && cd "$root" && python -m pytest -q -p no:cacheprovider) >>"$log" 2>&1
    code=$?
    summary=$(grep -E '(passed|failed|error)' "$log" | tail -n 1)
    results+=("$stack ($versions): install ${installed} s$fresh, tests $((SECONDS - start)) s, exit $code: $summary")
    ((code == 0)) || status=1
  else
    results+=("$stack: install FAILED after $((SECONDS - start)) s (see $log)")
    status=1
  fi
done
printf '%s\n' "${results[@]}"
echo "logs and venvs: $work"
exit $status
