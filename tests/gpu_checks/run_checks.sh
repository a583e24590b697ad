#!/usr/bin/env bash
# The GPU machine's checks in one run, as one short prepared script. From the repository
# root, with the wheels the GPU image lacks in .whl/ (an ignored folder: .git/info/exclude):
#   fastapi starlette uvicorn pydantic pydantic-core annotated-types typing-inspection
#   typing-extensions opentelemetry-api, at the versions in .venv, fetched for CPython 3.12 with
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp
#   --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl NAME==VERSION
#
#   tests/gpu_checks/run_checks.sh OUT_DIR      (device run: carry .whl)
#
# Writes nvml.txt, engine_tests.txt, bench_wide.txt (with a profile of the engine thread),
# bench.txt and vllm.txt (the vLLM engine, or a plain line saying the machine has no vLLM) to
# OUT_DIR. Each step has its own time limit: one that hangs leaves the others.
set -u
out=${1:?usage: tests/gpu_checks/run_checks.sh OUT_DIR}
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
step nvml 60 python3 tests/gpu_checks/check_nvml.py
step engine_tests 150 python3 -m pytest -q -p no:cacheprovider --noconftest \
  -p tests.gpu_checks.engine_plugin tests/runtimes/test_llm_engine.py
step bench_wide 150 python3 -m kiln.bench.gpu_llm --requests 32 --concurrency 32 --max-tokens 64 \
  --profile
step bench 200 python3 -m kiln.bench.gpu_llm
step vllm 480 python3 tests/gpu_checks/check_vllm.py
tail -n 12 "$out"/*.txt
