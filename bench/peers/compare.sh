#!/usr/bin/env bash
# Times our CPU backend (`mnist-gpu bench`) and the peers (NumPy tutorial, PyTorch) on the
# same network and the same shape of synthetic data, one after another, and prints one table
# with our CPU's samples/s divided by each peer's, per batch size.
#
#   bench/peers/compare.sh [--batch-sizes 64,1024,full] [--samples 60000] [BENCH OPTIONS]
#
# BENCH OPTIONS go to `mnist-gpu bench` (default: --backend cpu), e.g.
# `--backend both --plot docs/bench.svg --json`. A peer whose Python package is missing is
# skipped with a message. PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."

batch_sizes=64,256,1024,8192,full
samples=60000
bench=()
while (($#)); do
    case "$1" in
        --batch-sizes) batch_sizes=${2:?--batch-sizes needs a value}; shift 2 ;;
        --samples) samples=${2:?--samples needs a value}; shift 2 ;;
        *) bench+=("$1"); shift ;;
    esac
done
case " ${bench[*]-} " in
    *" --backend "*) ;;
    *) bench+=(--backend cpu) ;;
esac

python=${PYTHON:-python3}
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
compare=()
# script:the Python packages it needs
for peer in numpy_tutorial:numpy pytorch_cpu:numpy,torch; do
    script=${peer%%:*}
    packages=${peer#*:}
    if ! command -v "$python" >/dev/null; then
        echo "skipping $script.py: no $python (install Python 3 to compare with the peers)" >&2
        continue
    fi
    missing=$("$python" -c "
import importlib.util, sys
print(' '.join(p for p in sys.argv[1].split(',') if importlib.util.find_spec(p) is None))
" "$packages")
    if [[ -n $missing ]]; then
        echo "skipping $script.py: Python package(s) missing: $missing (pip install $missing)" >&2
        continue
    fi
    echo "running $script.py ..." >&2
    "$python" "bench/peers/$script.py" --batch-sizes "$batch_sizes" --samples "$samples" --json \
        >"$results/$script.json"
    compare+=(--compare "$results/$script.json")
done

echo "running mnist-gpu bench ..." >&2
XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp} cargo run --release --quiet -- bench \
    --batch-sizes "$batch_sizes" --samples "$samples" "${compare[@]}" "${bench[@]}"
