"""A tiny random Llama with a BPE tokenizer trained here, saved as a Hugging Face model folder:
real enough for every code path of the llm runtime, small enough to build in a second.

    python -m kiln.bench.tiny_model OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
CORPUS = [
    "the quick brown fox jumps over the lazy dog",
    "kiln serves models on hardware you own",
    "ray serve scales replicas up and down to zero",
    "hello world, hello kiln, hello openai client",
] * 50


def build(
    out: Path,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int | None = None,
    positions: int = 512,
) -> Path:
    """Save the model to OUT; ``hidden`` and ``layers`` make it bigger (e.g. for a GPU);
    ``heads`` sets the attention heads (vLLM on CPU wants ``hidden / heads`` of 64 or more);
    ``positions`` is the longest sequence it takes."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    specials = [
        "<unk>",
        "<s>",
        "</s>",
        "<pad>",
        "<|user|>",
        "<|assistant|>",
        "<|system|>",
        "<|end|>",
    ]
    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=specials))
    from tokenizers import decoders

    raw.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=raw,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="<|end|>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size + 8, hidden_size=hidden, intermediate_size=hidden * 2,
        num_hidden_layers=layers, num_attention_heads=heads or max(4, hidden // 64), num_key_value_heads=2, max_position_embeddings=positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_adapter(base: Path, out: Path, seed: int = 1, rank: int = 8) -> Path:
    """A LoRA adapter for the model in ``base`` (peft's layout: adapter_config.json and
    adapter_model.safetensors), its weights random so that it changes what the model says."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        LlamaForCausalLM.from_pretrained(base),
        LoraConfig(r=rank, lora_alpha=rank * 2, target_modules=["q_proj", "v_proj"],
                   init_lora_weights=False),
    )  # fmt: skip
    model.save_pretrained(str(out))
    config = out / "adapter_config.json"  # the hub name, not this machine's folder
    config.write_text(config.read_text().replace(str(base), "kiln-test/base"))
    return out


if __name__ == "__main__":
    print(build(Path(sys.argv[1])))
