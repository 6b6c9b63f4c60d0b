"""A tiny random chat model with a 48-word vocabulary, saved like any checkpoint.

Small enough that a test trains it in seconds, real enough to go through every code path the
default model takes: `from_pretrained`, the chat template, LoRA, the reward head.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
WORDS = (
    "user assistant system yes no the a is it good bad great awful happy sad cat dog sun rain "
    "hello world short long very ! . , ? I you we like love hate tell me about story joke red blue "
    "one two"
).split()
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|>{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def build_tiny_model(path: Path, seed: int = 0, hidden: int = 32, layers: int = 2, norm_gain: float = 1.0) -> Path:
    """Write a random LlamaForCausalLM and its tokenizer to `path`; returns `path`.

    `norm_gain` scales the final RMSNorm: at 1 the random model's logits stay within about +-0.6,
    so nothing can become likely and no learning shows; 10 gives it a real LM's room to move.
    """
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",  # like SmolLM2: pad == eos, which the app must fix itself
        unk_token="<unk>",
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<|im_end|>"],
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.fill_(norm_gain)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
