#!/usr/bin/env bash
# The whole GPU check of the gpu backend in one go (issue 15), for a short window on a machine
# with an NVIDIA GPU; about 5 minutes on an H200:
#   1. install the gpu extra (CuPy and numba-cuda) unless they are already there, and sparsenet
#   2. the GPU tests: every gpu kernel against the reference on the device, and the engine on
#      the device (model.to("cuda"), optimizers, topology updates, training = the CPU's losses,
#      save/load, `sparsenet train --device cuda`)
#   3. benchmarks/gpu.py: kernels against cuBLAS and cuSPARSE, training steps, a RigL epoch;
#      its records land in benchmarks/results/gpu-<gpu model>.{json,md}
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to choose the interpreter
#
# A machine with no package registry (a GPU box that reaches nothing) works when CuPy and
# numba-cuda are installed already: the script then installs only sparsenet itself, with no
# download. If $OUT is set (a results folder that comes back), the records and logs go there.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
START=$(date +%s)
LOG_DIR=${OUT:-benchmarks/results}
mkdir -p "$LOG_DIR"
step() { echo; echo "=== [$(( $(date +%s) - START )) s] $*"; }

step "device"
nvidia-smi -L || { echo "gpu_check: no NVIDIA GPU (nvidia-smi failed)"; exit 1; }

step "install"
has_gpu_stack() {
    "$PY" -c "import cupy, numba.cuda; assert cupy.cuda.runtime.getDeviceCount() > 0; \
assert numba.cuda.is_available()" 2>/dev/null
}
if has_gpu_stack; then
    echo "CuPy and numba-cuda are installed and see the GPU: nothing to download"
else
    "$PY" -m pip install -q -e ".[gpu]" || { echo "gpu_check: installing the gpu extra failed"; exit 1; }
    has_gpu_stack || { echo "gpu_check: CuPy or numba.cuda cannot use the GPU"; exit 1; }
fi
if ! "$PY" -c "import sparsenet.kernels.gpu" 2>/dev/null; then
    # An editable install without build isolation needs no download; where the interpreter's
    # setuptools is too old for it, a copy of the package on PYTHONPATH does the same job.
    if ! "$PY" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null; then
        SITE=$(mktemp -d)
        cp -r sparsenet "$SITE/sparsenet" && cp -r kernels "$SITE/sparsenet/kernels"
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
        echo "sparsenet copied to $SITE (on PYTHONPATH)"
    fi
fi
"$PY" -c "import cupy, numba, sparsenet; from importlib.metadata import version as v
import sparsenet.backend as b
print('gpu', b.gpu_name(), '| cupy', cupy.__version__, '| numba', numba.__version__,
      '| numba-cuda', v('numba-cuda'), '| sparsenet', sparsenet.__version__)" || exit 1

step "GPU tests"
export PYTHONUNBUFFERED=1
timeout 240 "$PY" -m pytest -q -p no:cacheprovider tests/test_kernels_gpu.py tests/test_gpu_engine.py \
    2>&1 | tee "$LOG_DIR/gpu_tests.log"
TESTS=${PIPESTATUS[0]}

step "benchmarks/gpu.py"
timeout 240 "$PY" benchmarks/gpu.py 2>&1 | tee "$LOG_DIR/gpu_bench.log"
BENCH=${PIPESTATUS[0]}
if [ -n "${OUT:-}" ]; then
    cp benchmarks/results/gpu-*.json benchmarks/results/gpu-*.md "$OUT"/ 2>/dev/null
fi

step "done: tests exit $TESTS, benchmark exit $BENCH"
[ "$TESTS" -eq 0 ] && [ "$BENCH" -eq 0 ]
