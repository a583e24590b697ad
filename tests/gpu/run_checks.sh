#!/usr/bin/env bash
# The GPU machine's checks in one run (device README: one short, prepared script). From the repo
# root, with the wheels the image lacks in .whl/ (fastapi, starlette, uvicorn, pydantic,
# pydantic-core, annotated-types, typing-inspection, typing-extensions, opentelemetry-api):
#
#   tests/gpu/run_checks.sh OUT_DIR
#
# Writes nvml.txt, engine_tests.txt, bench.txt and bench_wide.txt to OUT_DIR; each step has its
# own time limit, so one that hangs still leaves the others' figures.
set -u
out=${1:?usage: tests/gpu/run_checks.sh OUT_DIR}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/kiln-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/kiln-site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD/platform:$PWD/runtimes:$PWD
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee "$out/$name.txt"
  local started=$SECONDS
  timeout "$limit" "$@" >>"$out/$name.txt" 2>&1
  echo "== $name: exit $? after $((SECONDS - started)) s" | tee -a "$out/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
step nvml 60 python3 tests/gpu/check_nvml.py
step engine_tests 150 python3 -m pytest -q -p no:cacheprovider --noconftest \
  -p tests.gpu.engine_plugin tests/runtimes/test_llm_engine.py
step bench 200 python3 tests/gpu/bench_llm.py
step bench_wide 150 python3 tests/gpu/bench_llm.py --requests 32 --concurrency 32 --max-tokens 64
tail -n 12 "$out"/*.txt
