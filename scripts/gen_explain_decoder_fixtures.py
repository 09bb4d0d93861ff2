"""Captum reference attributions for `lmcompare explain` on decoders (crates/pipeline/tests).

Run (the venv of scripts/gen_explain_fixtures.py):
    ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_explain_decoder_fixtures.py

Writes tests/fixtures/models/explain_decoder_reference.json: for the tiny Llama, Qwen2 and
Gemma 3 decoders and two texts each, Captum 0.9's IntegratedGradients on the prompt's input
embeddings, where the prompt is what `compare` sends a generative classifier: the default
template "{text}\\nAnswer:", each label's verbaliser " negative" / " positive" split from it
as lm-evaluation-harness does (trailing spaces of the context move to the continuation,
the pair is encoded whole), the tokenizer's leading special tokens first.

The target function is compare's: each label's summed continuation log-likelihood,
softmaxed over the labels; the target is the predicted label's probability (and, as a
second case, its log-probability, and the other label's log-probability). The baseline keeps the leading special tokens and the
template's tokens and puts the pad token's embedding at every token of the text; the
continuations keep their own embeddings. Gauss-Legendre with 50 and 5 steps and the
Riemann trapezoid with 20; token scores are sums over the hidden dimension; convergence
deltas as Captum returns them. Deterministic (eval mode, float32, eager attention).
"""
import json
import os

import torch
from captum.attr import IntegratedGradients
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
TEXTS = [
    "A gripping, beautifully shot thriller.",
    "Dull and lifeless, the film drags on and on.",
]
MODEL_NAMES = ["tiny-llama", "tiny-qwen2", "tiny-gemma3"]
TEMPLATE = "{text}\nAnswer:"
LABELS = ["negative", "positive"]
VERBALIZERS = [" negative", " positive"]


def encode_pair(tok, prefix, context, continuation):
    trimmed = context.rstrip(" ")
    cont_text = context[len(trimmed):] + continuation
    ctx = prefix + tok.encode(trimmed, add_special_tokens=False).ids
    whole = prefix + tok.encode(trimmed + cont_text, add_special_tokens=False).ids
    if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
        return ctx, whole[len(ctx):]
    return ctx, tok.encode(cont_text, add_special_tokens=False).ids


def main():
    torch.manual_seed(0)
    out = {"captum": "0.9.0", "torch": torch.__version__, "template": TEMPLATE,
           "labels": LABELS, "verbalizers": VERBALIZERS, "texts": TEXTS, "models": {}}
    for name in MODEL_NAMES:
        path = os.path.join(MODELS, name)
        tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager",
                                                     dtype=torch.float32)
        model.eval()
        pad = model.config.pad_token_id
        embed = model.get_input_embeddings()
        prefix = tok.encode("", add_special_tokens=True).ids
        cases = []
        for text in TEXTS:
            context = TEMPLATE.replace("{text}", text)
            pairs = [encode_pair(tok, prefix, context, v) for v in VERBALIZERS]
            ctx = pairs[0][0]
            assert all(p[0] == ctx for p in pairs)
            conts = [p[1] for p in pairs]
            trimmed = context.rstrip(" ")
            enc = tok.encode(trimmed, add_special_tokens=False)
            start = context.rfind(text)
            # A context token is the text's when its first non-space character is in it.
            is_text = [False] * len(prefix)
            for (s, e) in enc.offsets:
                first = next((s + i for i, c in enumerate(trimmed[s:e]) if not c.isspace()), None)
                is_text.append(first is not None and start <= first < start + len(text))
            base = [pad if t else i for i, t in zip(ctx, is_text)]
            ids = torch.tensor([ctx])
            with torch.no_grad():
                x = embed(ids)
                xb = embed(torch.tensor([base]))
                cont_emb = [embed(torch.tensor([c[:-1]])) for c in conts]

            def loglik(e):
                lls = []
                for c, ce in zip(conts, cont_emb):
                    full = torch.cat([e, ce.expand(e.shape[0], -1, -1)], 1)
                    lp = torch.log_softmax(model(inputs_embeds=full).logits, -1)
                    n = e.shape[1]
                    lls.append(sum(lp[:, n - 1 + t, tok_id] for t, tok_id in enumerate(c)))
                return torch.stack(lls, -1)

            def probs(e):
                return torch.softmax(loglik(e), -1)

            def logprobs(e):
                return torch.log_softmax(loglik(e), -1)

            with torch.no_grad():
                p = probs(x)[0]
                lls = loglik(x)[0]
            target = int(p.argmax())
            case = {"text": text, "context_ids": ctx, "continuations": conts,
                    "text_tokens": is_text, "baseline_ids": base, "target": target,
                    "loglikelihoods": lls.double().tolist(),
                    "probabilities": p.double().tolist()}
            # The other label's log-probability too: tiny random models are sure of their
            # prediction, so the predicted label's probability barely moves.
            other = 1 - target
            for key, fwd, n, method, t in [
                ("ig_gausslegendre_50", probs, 50, "gausslegendre", target),
                ("ig_gausslegendre_50_log", logprobs, 50, "gausslegendre", target),
                ("ig_gausslegendre_50_log_other", logprobs, 50, "gausslegendre", other),
                ("ig_riemann_trapezoid_20", probs, 20, "riemann_trapezoid", target),
                ("ig_gausslegendre_5", probs, 5, "gausslegendre", target),
            ]:
                ig = IntegratedGradients(fwd)
                attr, delta = ig.attribute(x, baselines=xb, target=t, n_steps=n,
                                           method=method, internal_batch_size=16,
                                           return_convergence_delta=True)
                with torch.no_grad():
                    fb = float(fwd(xb)[0, t])
                case[key] = {"target": t, "tokens": attr.detach().sum(-1)[0].double().tolist(),
                             "delta": float(delta[0]), "f_baseline": fb}
            cases.append(case)
        out["models"][name] = cases
    dest = os.path.join(MODELS, "explain_decoder_reference.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", dest)


if __name__ == "__main__":
    main()
