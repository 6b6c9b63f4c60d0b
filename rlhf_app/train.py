"""Run the live trainer on its own, in the foreground, against a data directory.

    python -m rlhf_app.train --data-dir data            # train whenever ratings arrive
    python -m rlhf_app.train --data-dir data --once     # one round now, then exit

Start the app with `--trainer false` beside it: the app then only serves, and switches to each
version this process publishes (it follows the live version recorded in SQLite).
"""

from __future__ import annotations

import logging
import sys
import time

from .config import build_parser, load_settings
from .models import ModelLoadError
from .runtime import Runtime


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser("Run the live RLHF trainer without the web page.")
    parser.add_argument("--once", action="store_true", help="Run one round now and exit.")
    once = "--once" in argv
    settings = load_settings([a for a in argv if a != "--once"], parser=parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        rt = Runtime.build(settings)
    except ModelLoadError as e:
        print(e, file=sys.stderr)
        return 1
    if once:
        row = rt.trainer.run_round()
        print(f"round {row['id']}: {row['status']}" + (f" ({row['reason']})" if row["reason"] else ""))
        return 0 if row["status"] in ("published", "skipped") else 2
    rt.trainer.settings.trainer = True
    rt.trainer.start()
    try:
        while rt.trainer.running:
            time.sleep(1)
    except KeyboardInterrupt:
        rt.trainer.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
