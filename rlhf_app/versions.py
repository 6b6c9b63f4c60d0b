"""Policy versions on disk: publish atomically, load any one back to serve it.

Layout under the data directory:

    policies/v3/adapter_model.safetensors   LoRA adapter (or model.safetensors for full fine-tuning)
    policies/v3/meta.json                   parent, round, seed, reward-model version, settings, metrics

A version is written to `policies/v3.tmp` and renamed into place, then recorded in SQLite in one
transaction that also makes it live. A crash before the rename leaves only a `.tmp` directory; a
crash between the rename and the SQLite commit leaves an unrecorded directory, which the next
publish of that number replaces. Either way the store never points at a half-written version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from transformers import AutoModelForCausalLM, PreTrainedModel

from .policy import merged_copy

POLICIES = "policies"


def version_dir(data_dir: Path, version: int) -> Path:
    return Path(data_dir) / POLICIES / f"v{version}"


def save_version(model: PreTrainedModel, data_dir: Path, version: int, meta: dict[str, Any]) -> str:
    """Write the trainable weights (adapter only, for LoRA) and meta.json; returns the relative path."""
    final = version_dir(data_dir, version)
    tmp = final.with_name(final.name + ".tmp")
    for stale in (tmp, final):  # leftovers of a crash: never recorded in SQLite
        if stale.exists():
            shutil.rmtree(stale)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    tmp.rename(final)
    return str(final.relative_to(data_dir))


def is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def load_for_serving(base: PreTrainedModel, data_dir: Path, row: dict) -> PreTrainedModel:
    """A standalone model for a `policy_versions` row: the base for version 0, else base + its weights."""
    if row["version"] == 0 or not row.get("path"):
        return merged_copy(base, None)
    path = Path(data_dir) / row["path"]
    if is_adapter(path):
        return merged_copy(base, str(path))
    param = next(base.parameters())
    model = AutoModelForCausalLM.from_pretrained(path, dtype=param.dtype)
    model.generation_config = base.generation_config
    return model.to(param.device).eval()
