"""Tiny random-weight decoder LMs and HF transformers reference outputs for the decoder tests.

Run:
    python3 -m venv ~/.cache/lmcompare/venv-torch
    ~/.cache/lmcompare/venv-torch/bin/pip install torch==2.15.0 transformers==5.24.0 \
        tokenizers==0.23.3 safetensors==0.8.0
    ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_decoder_fixtures.py

Writes tests/fixtures/models/tiny-{llama,qwen2,qwen3,gemma,gemma2,gemma3,gpt2}/ (config.json,
generation_config.json, model.safetensors in float32, tokenizer.json, tokenizer_config.json)
and tests/fixtures/models/decoder_reference.json. No decoder small enough to commit ships in any
reachable registry, so these exercise the exact architectures (tensor names, GQA, q/k/v biases,
q/k norms, explicit head_dim, Gemma's (1 + w) norms and scaled embeddings, logit soft-capping,
sliding-window layers, per-layer-type rotary bases, GPT-2's Conv1D layout) with random weights.

Every model shares one byte-level BPE (vocabulary 320: <|bos|>=0, <|eos|>=1, <|pad|>=2, the 256
bytes, 61 merges) trained here by `tokenizers` on REVIEWS (deterministic). The tokenizers of
the six rotary models prepend <|bos|> (a TemplateProcessing post-processor, as Llama's and
Gemma's do); tiny-gpt2's adds nothing, as GPT-2's does not. Reference input ids are always
`Tokenizer.encode(text, add_special_tokens=True)` of the folder's own tokenizer.json.

Weights: after construction EVERY parameter is redrawn from a seeded N(0, 0.2) (norm weights
1 + 0.3 N(0, 1) for plain RMSNorm/LayerNorm, 0.3 N(0, 1) for Gemma-family norms, which compute
x * (1 + w)); transformers' defaults (norm weights 1 or 0, biases 0, std 0.02) would leave a
norm weight or bias that is never loaded, or a wrong softcap, invisible. The script asserts
that the logits are not degenerate, that the sliding window, the soft-caps, Gemma 3's local
rotary base and query_pre_attn_scalar each change the reference outputs, that generate() agrees
with a cache-free argmax loop, and that every saved folder reloads with AutoModelForCausalLM
and AutoTokenizer and reproduces the stored log-softmax to 1e-6.

decoder_reference.json: versions, vocab_size, special_tokens, sliding_window, and per model
(folder name): "architecture" (config.architectures[0]); "cases": CASE_TEXTS as {"text",
"input_ids", "log_softmax" (per position, all 320 float32 values of
log_softmax(model(input_ids).logits))}; "greedy": {"prompt", "prompt_ids", "generated_ids" (8
new ids of generate(do_sample=False) with EOS disabled), "min_margin" (smallest top-1/top-2
log-prob gap)}; "continuations": {"prompt", "prompt_ids", "continuations": [{"text", "ids",
"token_logprobs", "logprob" (their sum)}]} for continuations of 1, 2 and 4 tokens, scored in
one pass over prompt + continuation.

Deterministic: per-model seeds, one CPU thread; running it twice gives identical files.
Computed on CPU in float32, eager attention, eval mode.
"""
import copy
import json
import math
import os
import zlib

import safetensors
import tokenizers
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, Gemma2Config, Gemma2ForCausalLM,
                          Gemma3ForCausalLM, Gemma3TextConfig, GemmaConfig, GemmaForCausalLM,
                          GenerationConfig, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
REFERENCE = os.path.join(OUT, "decoder_reference.json")
SEED = 20261201
VOCAB = 320
SPECIALS = ["<|bos|>", "<|eos|>", "<|pad|>"]
BOS, EOS, PAD = 0, 1, 2
MAX_POSITIONS = 128  # rotary models; GPT-2 has n_positions 64
SLIDING_WINDOW = 4

# The BPE training text: short movie-review-like sentences.
REVIEWS = [
    "The film is a triumph of style over substance, and I loved every minute of it.",
    "A gripping thriller with a twist you never see coming.",
    "Dull, lifeless and far too long for its own good.",
    "An uneven but often funny comedy about growing up.",
    "The acting is superb and the music is beautiful.",
    "I hated the ending, but the first hour is great fun.",
    "A charming story with a strong cast and a clever script.",
    "The plot makes no sense and the characters are boring.",
    "One of the best movies of the year: funny, moving and smart.",
    "Overlong, yet strangely compelling; a mess that somehow works.",
    "The director knows how to build tension in every scene.",
    "Too many scenes drag on, and the jokes fall flat.",
    "A beautiful, quiet drama that stays with you for days.",
    "It is not bad at all, just a little too slow.",
    "The special effects are great, but the story is thin.",
    "A brilliant performance from the lead actor carries the film.",
    "I would not watch it again, even for free.",
    "The dialogue is sharp and the pacing is perfect.",
    "A tedious, predictable romance with no chemistry.",
    "Funny, warm and surprisingly honest about family life.",
    "The horror is effective, the scares are real.",
    "A good movie, not a great one, but worth seeing.",
    "The second half is much better than the first.",
    "Terrible writing, terrible acting, terrible everything.",
    "A fresh and original take on an old story.",
    "The cast is excellent, the script is not.",
    "I laughed, I cried, I loved it.",
    "A rotten film with nothing to say.",
    "Positive: the music. Negative: everything else.",
    "The best thriller I have seen in years.",
    "It looks great, sounds great and feels great.",
    "A slow start, but the ending is worth the wait.",
]

# Reference cases (text; the ids come from the folder's tokenizer). Case 0 is long (well past
# the 4-token sliding window), case 1 is short (<|bos|> + 2 tokens), case 2 has multi-byte
# UTF-8 (byte-level pieces that are not whole characters).
CASE_TEXTS = [
    "The film is great, and the cast",
    "Great",
    "Café 😍",
]
# Greedy prompts: the first 3 and 5 words of each review. Random models soon repeat one token,
# so the reference keeps the prompt whose 8 greedy tokens are most varied (the first such),
# among those whose argmax wins by at least GREEDY_MARGIN nats at every step (an implementation
# that differs in the last float bits still reproduces the tokens) and that generate no
# special token (a runtime that stops at <|eos|> still returns 8 tokens).
GREEDY_PROMPTS = [" ".join(r.split()[:k]) for r in REVIEWS for k in (3, 5)]
GREEDY_MARGIN = 0.02
# The scorer's case: one prompt, three continuations of 1, 2 and 4 tokens.
CONT_PROMPT = "Review: a gripping thriller.\nSentiment:"
CONT_TEXTS = [(" great", 1), (" is great", 2), (" the film", 4)]


def train_bpe():
    """The shared byte-level BPE, without post-processor (no special tokens added)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(REVIEWS, trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    for i, s in enumerate(SPECIALS):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    return tok


def with_bos(tok):
    """A copy of `tok` whose encode(..., add_special_tokens=True) prepends <|bos|>."""
    t = Tokenizer.from_str(tok.to_str())
    t.post_processor = processors.TemplateProcessing(
        single="<|bos|> $A", pair="<|bos|> $A <|bos|> $B", special_tokens=[("<|bos|>", BOS)])
    return t


def randomise(model, seed):
    """Redraw every parameter (tied ones once) from a generator seeded with `seed`."""
    gen = torch.Generator().manual_seed(seed)
    norms = {}
    for mname, module in model.named_modules():
        cls = type(module).__name__
        if cls.endswith("RMSNorm") or isinstance(module, torch.nn.LayerNorm):
            norms[f"{mname}.weight"] = "gemma" if cls.startswith("Gemma") else "plain"
    assert norms, "no norm modules found"
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            kind = norms.get(name)
            if kind == "plain":
                p.copy_(1.0 + 0.3 * noise)
            elif kind == "gemma":
                p.copy_(0.3 * noise)
            else:
                p.copy_(0.2 * noise)
    return model.eval()


def common(**kw):
    return dict(vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                attn_implementation="eager", **kw)


def specs():
    """(name, model class, config) of every tiny model."""
    rope = dict(max_position_embeddings=MAX_POSITIONS, attention_dropout=0.0)
    return [
        ("tiny-llama", LlamaForCausalLM, LlamaConfig(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=8, hidden_act="silu", rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=False, attention_bias=False, mlp_bias=False, **rope))),
        ("tiny-qwen2", Qwen2ForCausalLM, Qwen2Config(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, hidden_act="silu", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            tie_word_embeddings=True, use_sliding_window=False, **rope))),
        ("tiny-qwen3", Qwen3ForCausalLM, Qwen3Config(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, hidden_act="silu", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            tie_word_embeddings=True, attention_bias=False, use_sliding_window=False, **rope))),
        ("tiny-gemma", GemmaForCausalLM, GemmaConfig(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=1, head_dim=16, hidden_activation="gelu_pytorch_tanh",
            hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            tie_word_embeddings=True, attention_bias=False, **rope))),
        ("tiny-gemma2", Gemma2ForCausalLM, Gemma2Config(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, hidden_activation="gelu_pytorch_tanh",
            hidden_act="gelu_pytorch_tanh", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            query_pre_attn_scalar=24, sliding_window=SLIDING_WINDOW,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            attn_logit_softcapping=2.0, final_logit_softcapping=3.0,
            tie_word_embeddings=True, attention_bias=False, **rope))),
        ("tiny-gemma3", Gemma3ForCausalLM, Gemma3TextConfig(**common(
            hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, hidden_activation="gelu_pytorch_tanh",
            rms_norm_eps=1e-6,
            rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                             "full_attention": {"rope_type": "default", "rope_theta": 1000000.0}},
            query_pre_attn_scalar=20, sliding_window=SLIDING_WINDOW,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            final_logit_softcapping=None, attn_logit_softcapping=None,
            tie_word_embeddings=True, attention_bias=False, **rope))),
        ("tiny-gpt2", GPT2LMHeadModel, GPT2Config(**common(
            n_positions=64, n_embd=32, n_layer=2, n_head=4, n_inner=None,
            activation_function="gelu_new", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            layer_norm_epsilon=1e-5, tie_word_embeddings=True))),
    ]


@torch.no_grad()
def log_softmax(model, ids):
    logits = model(torch.tensor([ids])).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def variant(model, **changes):
    """The same weights under a changed config (for the sensitivity checks)."""
    cfg = copy.deepcopy(model.config)
    for k, v in changes.items():
        setattr(cfg, k, v)
    m = type(model)(cfg)
    m.load_state_dict(model.state_dict())
    return m.eval()


def check_sensitivity(name, model, ids):
    """Each feature the model is meant to exercise changes its outputs on `ids`."""
    base = log_softmax(model, ids)
    cfg = model.config
    checks = {}
    if getattr(cfg, "sliding_window", None) and "sliding_attention" in (cfg.layer_types or []):
        checks["sliding_window"] = dict(sliding_window=MAX_POSITIONS)
    if getattr(cfg, "attn_logit_softcapping", None):
        checks["attn_logit_softcapping"] = dict(attn_logit_softcapping=None)
    if getattr(cfg, "final_logit_softcapping", None):
        checks["final_logit_softcapping"] = dict(final_logit_softcapping=None)
    if name in ("tiny-gemma2", "tiny-gemma3"):
        checks["query_pre_attn_scalar"] = dict(query_pre_attn_scalar=cfg.head_dim)
    if name == "tiny-gemma3":
        rp = copy.deepcopy(cfg.rope_parameters)
        rp["sliding_attention"]["rope_theta"] = rp["full_attention"]["rope_theta"]
        checks["rope_local_base"] = dict(rope_parameters=rp)
    out = {}
    for what, changes in checks.items():
        diff = (log_softmax(variant(model, **changes), ids) - base).abs().max().item()
        assert diff > 1e-2, f"{name}: {what} barely matters ({diff:.2e})"
        out[what] = diff
    return out


@torch.no_grad()
def greedy(model, tok, prompt):
    """generate() with 8 new tokens, EOS ignored, checked against a cache-free argmax loop;
    also the smallest top-1/top-2 log-prob gap along the way."""
    ids = tok.encode(prompt).ids
    saved_eos = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = None
    gc = GenerationConfig(max_new_tokens=8, min_new_tokens=0, do_sample=False, eos_token_id=None,
                          pad_token_id=PAD, bos_token_id=BOS)
    x = torch.tensor([ids])
    out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=gc)
    model.generation_config.eos_token_id = saved_eos
    new = out[0, len(ids):].tolist()
    assert len(new) == 8, new
    seq, margin = list(ids), math.inf
    for _ in range(8):
        lp = log_softmax(model, seq)[-1]
        top = torch.topk(lp, 2).values
        margin = min(margin, (top[0] - top[1]).item())
        seq.append(int(lp.argmax()))
    assert seq[len(ids):] == new, (seq[len(ids):], new)
    return {"prompt": prompt, "prompt_ids": ids, "generated_ids": new}, margin


def continuations(model, tok):
    prompt = tok.encode(CONT_PROMPT).ids
    rec = {"prompt": CONT_PROMPT, "prompt_ids": prompt, "continuations": []}
    for text, n in CONT_TEXTS:
        cont = tok.encode(text, add_special_tokens=False).ids
        assert len(cont) == n, (text, cont)
        lp = log_softmax(model, prompt + cont)
        toks = [lp[len(prompt) - 1 + j, c].item() for j, c in enumerate(cont)]
        rec["continuations"].append({"text": tok.decode(cont), "ids": cont,
                                     "token_logprobs": toks, "logprob": math.fsum(toks)})
    return rec


def save(model, tok, name):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True)
    tok.save(os.path.join(d, "tokenizer.json"))
    max_len = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": SPECIALS[BOS],
           "eos_token": SPECIALS[EOS], "pad_token": SPECIALS[PAD], "model_max_length": max_len,
           "clean_up_tokenization_spaces": False}
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    return d


def verify_reload(d, rec):
    """The saved folder alone reproduces the reference."""
    m = AutoModelForCausalLM.from_pretrained(d, attn_implementation="eager",
                                             dtype=torch.float32).eval()
    assert type(m).__name__ == rec["architecture"], type(m).__name__
    t = AutoTokenizer.from_pretrained(d)
    worst = 0.0
    for case in rec["cases"]:
        assert t(case["text"])["input_ids"] == case["input_ids"], (d, case["text"])
        got = log_softmax(m, case["input_ids"])
        worst = max(worst, (got - torch.tensor(case["log_softmax"])).abs().max().item())
    assert worst <= 1e-6, f"{d}: reloaded model differs by {worst:.2e}"
    with safetensors.safe_open(os.path.join(d, "model.safetensors"), "pt") as f:
        for k in f.keys():
            assert f.get_slice(k).get_dtype() == "F32", k
    return worst


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    bpe = train_bpe()
    bos_tok = with_bos(bpe)
    plain_tok = Tokenizer.from_str(bpe.to_str())
    plain_tok.post_processor = processors.ByteLevel(trim_offsets=False)
    refs = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "tokenizers_version": tokenizers.__version__, "vocab_size": VOCAB,
            "special_tokens": {s: i for i, s in enumerate(SPECIALS)},
            "sliding_window": SLIDING_WINDOW, "models": {}}
    summary = []
    for name, cls, cfg in specs():
        torch.manual_seed(SEED)
        model = randomise(cls(cfg), SEED + zlib.crc32(name.encode()))
        tok = plain_tok if name == "tiny-gpt2" else bos_tok
        d = save(model, tok, name)
        rec = {"architecture": model.config.architectures[0], "cases": []}
        for text in CASE_TEXTS:
            ids = tok.encode(text).ids
            lp = log_softmax(model, ids)
            spread = (lp.max(-1).values - lp.min(-1).values).min().item()
            assert spread > 3.0, f"{name}: degenerate log-softmax ({spread:.2f} nats)"
            rec["cases"].append({"text": text, "input_ids": ids, "log_softmax": lp.tolist()})
        lens = [len(c["input_ids"]) for c in rec["cases"]]
        assert lens[0] >= 12 and lens[1] == (2 if name == "tiny-gpt2" else 3), (name, lens)
        best = None
        for prompt in GREEDY_PROMPTS:
            g, margin = greedy(model, tok, prompt)
            distinct = len(set(g["generated_ids"]))
            if (margin >= GREEDY_MARGIN and min(g["generated_ids"]) >= len(SPECIALS)
                    and (best is None or distinct > best[0])):
                best = (distinct, g, margin)
        if best is None:
            raise SystemExit(f"{name}: no greedy prompt with a {GREEDY_MARGIN} margin")
        distinct, g, margin = best
        g["min_margin"] = margin
        rec["greedy"] = g
        rec["continuations"] = continuations(model, tok)
        sens = check_sensitivity(name, model, rec["cases"][0]["input_ids"])
        refs["models"][name] = rec
        worst = verify_reload(d, rec)
        all_lp = torch.cat([torch.tensor(c["log_softmax"]) for c in rec["cases"]])
        size = os.path.getsize(os.path.join(d, "model.safetensors"))
        assert size < 300_000, (name, size)
        summary.append(f"{name:12s} {rec['architecture']:20s} params {model.num_parameters():6d} "
                       f"safetensors {size / 1024:6.1f} KiB  log_softmax [{all_lp.min():.2f}, "
                       f"{all_lp.max():.2f}]  case lens {lens}  greedy {distinct} distinct, "
                       f"margin {margin:.3f}  "
                       f"reload diff {worst:.1e}  sensitivity "
                       + ", ".join(f"{k} {v:.2f}" for k, v in sens.items()))
    with open(REFERENCE, "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False)
    print("\n".join(summary))
    print(f"wrote {REFERENCE} ({os.path.getsize(REFERENCE) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
