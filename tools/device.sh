#!/usr/bin/env bash
# One call of the GPU measurement plan (README → "Measuring on a GPU"), as the device tool's
# command, in the repository root:   bash tools/device.sh STEP [STEP ...]
#
#   check        pytest tests/test_cuda.py (the data path never waits for the GPU; every method
#                and variant runs end to end on it)
#   speed        pytest benchmarks: batched augmentation vs torchvision per image, CPU and GPU
#                                                                      → $OUT/augment_speed.json
#   bench        bench throughput: tf_efficientnet_lite0 and resnet50, 224 px, batch 256,
#                eager and compiled, on the real CUB JPEGs          → $OUT/throughput.csv
#   knn          bench knn at CUB-200 and Stanford Cars sizes          → $OUT/knn.csv
#                (FAISS is timed when its wheel travels in .whl3/: carry [".whl3"] alone,
#                the 18 MiB faiss-cpu wheel does not fit beside .data and .whl)
#   recipe | timm_bar | finernet | metric | fine_labels | simtrans
#                fgvcbench run of that suite on the real CUB subset, for what is left of
#                $BUDGET seconds; its records come back as $OUT/<suite>.tgz
#
# Each call starts on a fresh machine (an idle one is given back after 30 s), so the call
# brings what it needs as carried, git-ignored paths: .whl/ (wheels the machine lacks; .whl2/
# too when present: hdbscan, for fine_labels only), .data/ (CUB_200_2011_first50 and
# splits/) and, to resume, results/<suite>/ unpacked from an earlier call's tgz. A run cut
# off by the budget is redone by the next call; finished runs are kept (records are written
# atomically).
#
# Environment: BUDGET (seconds for the suites of this call, default 520), RUN_ARGS (more
# `fgvcbench run` options, e.g. "--seeds 1"), BENCH_DATA (default .data/CUB_200_2011_first50),
# BENCH_ARGS (default "--res 224 --batch 256 --steps 30 --warmup 10"; add "--crop-extent square"
# to time the centre-square cache against the default whole-image canvas), BENCH_BACKBONES
# (default "tf_efficientnet_lite0 resnet50"), BENCH_COMPILE (default "eager compiled").
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/.out}
BUDGET=${BUDGET:-520}
RUN_ARGS=${RUN_ARGS:-}
BENCH_DATA=${BENCH_DATA:-.data/CUB_200_2011_first50}
BENCH_ARGS=${BENCH_ARGS:---res 224 --batch 256 --steps 30 --warmup 10}
BENCH_BACKBONES=${BENCH_BACKBONES:-tf_efficientnet_lite0 resnet50}
BENCH_COMPILE=${BENCH_COMPILE:-eager compiled}
START=$(date +%s)
mkdir -p "$OUT"

export PYTHONPATH=/tmp/fgvcbench-site${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
PY=${PY:-python3}
wheels=$(compgen -G ".whl/*.whl"; compgen -G ".whl2/*.whl"; compgen -G ".whl3/*.whl")
if [ -n "$wheels" ]; then
    # shellcheck disable=SC2086
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/fgvcbench-site $wheels || { echo "installing the carried wheels failed"; exit 1; }
fi
# the project itself, editable, without touching the machine's torch (no network: build with
# the setuptools that is there)
$PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 \
    || $PY -m pip install -q --no-deps -e . >/dev/null || { echo "pip install -e . failed"; exit 1; }
fgvcbench() { $PY -m fgvcbench.cli "$@"; }   # whether or not pip's scripts folder is on PATH
{
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    $PY -c "import platform, torch, timm; print('python', platform.python_version(), '· torch', torch.__version__, '· timm', timm.__version__)"
    date -u +%FT%TZ
    echo "git $(git rev-parse --short HEAD 2>/dev/null)"
} | tee "$OUT/machine.txt"

suite_of() {
    case $1 in
        recipe) echo recipe_ablation ;;
        timm_bar) echo recipe_vs_timm_bar ;;
        finernet) echo finernet_cub_first50 ;;
        metric) echo metric_learning_cub_first50 ;;
        fine_labels) echo fine_labels_cub_first50 ;;
        simtrans) echo simtrans_cub_first50 ;;
        *) return 1 ;;
    esac
}

status=0
for step in "$@"; do
    case $step in
        check)
            $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tail -n 25 | tee "$OUT/check.txt" \
                || status=1
            ;;
        speed)
            $PY -m pytest -q -p no:cacheprovider benchmarks --benchmark-only \
                --benchmark-columns=mean,stddev,rounds --benchmark-json "$OUT/augment_speed.json" 2>&1 | tail -n 25 \
                || status=1
            ;;
        bench)
            for backbone in $BENCH_BACKBONES; do
                for mode in $BENCH_COMPILE; do
                    compiled=""; [ "$mode" = compiled ] && compiled="--compile"
                    # shellcheck disable=SC2086
                    timeout -s INT 240 $PY -m fgvcbench.cli bench throughput --backbone "$backbone" $BENCH_ARGS $compiled \
                        --dataset cub --root "$BENCH_DATA" --workers "$(nproc)" || status=1
                done
            done
            cp results/bench/throughput.csv "$OUT/" 2>/dev/null || status=1
            ;;
        knn)
            fgvcbench bench knn || status=1                                   # CUB-200, ResNet-50 features
            fgvcbench bench knn --n 8144 --classes 196 || status=1            # Stanford Cars
            cp results/bench/knn.csv "$OUT/" 2>/dev/null || status=1
            ;;
        *)
            name=$(suite_of "$step") || { echo "unknown step $step (see tools/device.sh)"; exit 2; }
            left=$(( BUDGET - ($(date +%s) - START) ))
            if [ "$left" -lt 30 ]; then
                echo "$name: no time left in this call (BUDGET=$BUDGET)"; status=1; continue
            fi
            # SIGINT at the budget: the CLI stops like Ctrl-C, keeping every finished record
            # shellcheck disable=SC2086
            timeout -s INT "$left" $PY -m fgvcbench.cli run "suites/$name.yaml" --data-root .data --no-progress $RUN_ARGS \
                > "$OUT/$name.log" 2>&1
            echo "$name: exit $? after $(( $(date +%s) - START )) s"
            tail -n 45 "$OUT/$name.log"
            # records, tables, charts and artifacts; cached stages (model weights) stay behind
            tar czf "$OUT/$name.tgz" --exclude="$name/stages" --exclude="$name/claims" -C results "$name" \
                || status=1
            ;;
    esac
done
exit $status
