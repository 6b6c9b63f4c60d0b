"""Start the live RLHF demo: the web page, the API and the background trainer.

    python app.py                                  # http://127.0.0.1:7860, offline default model
    python app.py --help                           # every setting, with its RLHF_* variable
    python app.py --model ./my-chat-model --port 7861 --trainer false

Hugging Face Spaces runs this file as is; there (SPACE_ID is set) the server listens on 0.0.0.0
unless --host / RLHF_HOST says otherwise.
"""

from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    from rlhf_app.config import load_settings

    env = dict(os.environ)
    if env.get("SPACE_ID"):
        env.setdefault("RLHF_HOST", "0.0.0.0")
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, env=env)
    except ValueError as e:  # a cross-field check in Settings.__post_init__
        print(f"Bad settings: {e}", file=sys.stderr)
        return 2

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # gradio's own start-up checks, one line each
    from rlhf_app.models import ModelLoadError
    from rlhf_app.runtime import Runtime, quiet_offline_env

    quiet_offline_env()  # before gradio is imported: no analytics thread, no telemetry
    try:
        runtime = Runtime.build(settings)
    except ModelLoadError as e:
        print(f"\nThe app cannot start: {e}", file=sys.stderr)
        return 1
    # Always: with --trainer false the thread runs no rounds by itself, but still serves the version
    # that another process (python -m rlhf_app.train) or an admin made live, and runs requested rounds.
    runtime.trainer.start()

    from rlhf_app.ui import CSS, THEME, build_ui

    build_ui(runtime).launch(server_name=settings.host, server_port=settings.port, theme=THEME, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
