#!/usr/bin/env bash
# tinyllm's two entry points. Each sets up .venv (once, or again when the dependencies change) and then:
#   bash run.sh          the main job: tokenizer -> token files -> tinyllm train configs/cpu-smoke.toml (CPU, ~2 minutes)
#   bash run.sh test     the tests: nbdev_test on every notebook, then pytest
#   bash run.sh setup    only the set-up
#   bash run.sh report   chapter 05's full run (the ablation ladder, the speed probes, then the main run of under an hour: several hours),
#                        its outputs saved into nbs/05_report.ipynb; finished runs in runs/report/ are reused
# Environment: TINYLLM_DATA=folder with TinyStories' train.txt/valid.txt (default: ../shared/data/tinystories);
#              TINYLLM_TORCH=pip requirement for PyTorch (default torch==2.13.0; e.g. "torch" for your CUDA build);
#              TINYLLM_VENV=where the virtual environment lives (default .venv); PYTHON=interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")"
VENV=${TINYLLM_VENV:-.venv}
TORCH_REQ=${TINYLLM_TORCH:-torch==2.13.0}

pip_quiet() {  # pip without the per-package notices of unused local indexes; errors still show and still fail
  "$VENV/bin/python" -m pip -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
}

setup() {
  local stamp="$VENV/.tinyllm-installed" want
  want=$(cat settings.ini setup.py | sha256sum | cut -c1-16)-$TORCH_REQ
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
  fi
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "== installing PyTorch ($TORCH_REQ) and tinyllm[dev,logging] into $VENV"
    pip_quiet install --upgrade pip
    pip_quiet install "$TORCH_REQ"
    pip_quiet install -e ".[dev,logging]"
    echo "$want" > "$stamp"
  fi
  # shellcheck disable=SC1091
  source "$VENV/bin/activate"
}

main_job() {
  local out=${TINYLLM_OUT:-runs/demo}
  local data
  data=$(python -c 'import sys; from tinyllm.core import tinystories_dir, TinyLLMError
try: print(tinystories_dir())
except TinyLLMError as e: sys.exit(f"error: {e}")')
  mkdir -p "$out"
  echo "== 1. tokenizer: byte-level BPE, 4096 tokens, trained on $data/train.txt"
  tinyllm tokenizer train --data "$data/train.txt" --vocab-size 4096 --out "$out/tokenizer"
  echo "== 2. data: train and valid stories -> uint16 token files"
  tinyllm data prepare --data "$data" --split train --split valid --tokenizer "$out/tokenizer" --out "$out/tokens"
  echo "== 3. train configs/cpu-smoke.toml on those tokens (checkpoints, metrics.jsonl and samples in $out/run)"
  local resume=()
  if [ -e "$out/run/checkpoints/last" ]; then resume=(--resume last); echo "(continuing the run already in $out/run)"; fi
  tinyllm train configs/cpu-smoke.toml data.tokenizer="$out/tokenizer" data.tokens="$out/tokens" out_dir="$out/run" "${resume[@]}"
}

tests() {
  echo "== nbdev_test (every notebook; cells flagged slow/gpu/data are skipped)"
  nbdev_test --n_workers 2 --do_print
  echo "== pytest"
  python -m pytest -q -ra "$@"
}

case "${1:-main}" in
  setup) setup ;;
  main) setup; main_job ;;
  test) shift || true; setup; tests "$@" ;;
  report) setup; cd nbs && TINYLLM_REPORT=full jupyter nbconvert --to notebook --execute --inplace 05_report.ipynb && nbdev_clean --fname 05_report.ipynb ;;
  *) echo "usage: bash run.sh [main|test|setup|report]" >&2; exit 2 ;;
esac
