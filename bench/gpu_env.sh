# Sourced by the bench/gpu_*.sh scripts: run from the repository root, offline, unbuffered, with the
# default model converted once into a scratch cache. Sets py, cache, model and t (a timestamped echo).
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
cache=$(mktemp -d)
t0=$(date +%s); t() { echo "[$(( $(date +%s) - t0 ))s] $*"; }
model=$("$py" -c "import pathlib; from rlhf_app.models import resolve; print(resolve('smollm2', pathlib.Path('$cache'))[1])") \
  || exit 1
