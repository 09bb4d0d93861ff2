"""Captum reference attributions for `lmcompare explain` (crates/pipeline/tests).

Run (the venv of scripts/gen_model_fixtures.py, plus Captum):
    python3 -m venv ~/.cache/lmcompare/venv-torch
    ~/.cache/lmcompare/venv-torch/bin/pip install torch==2.15.0 transformers==5.24.0 \
        tokenizers==0.23.3 safetensors==0.8.0 captum==0.9.0
    ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_explain_fixtures.py

Writes tests/fixtures/models/explain_reference.json: for the tiny BERT, RoBERTa and
DistilBERT classifiers and two texts each, Captum 0.9's
  * LayerIntegratedGradients on `embeddings.word_embeddings` (Gauss-Legendre, 50 steps; the
    log-probability target; riemann_trapezoid, 20 steps), baseline = the input ids with every
    non-special token replaced by the pad token, with convergence deltas;
  * Saliency and InputXGradient on the word embeddings;
  * FeatureAblation with one feature per whitespace word (special tokens their own features);
  * ShapleyValueSampling over the words with fixed permutations (stored), special tokens
    kept as they are.
Token scores are sums over the hidden dimension. The target is the predicted class's
softmax probability (or log-probability). Deterministic (eval mode, float32, fixed inputs).
"""
import json
import os

import numpy as np
import torch
from captum.attr import (
    FeatureAblation,
    InputXGradient,
    LayerIntegratedGradients,
    Saliency,
    ShapleyValueSampling,
)
from tokenizers import Tokenizer
from transformers import AutoModelForSequenceClassification

ROOT = os.path.join(os.path.dirname(__file__), "..")
MODELS = os.path.join(ROOT, "tests", "fixtures", "models")
TEXTS = [
    "A gripping, beautifully shot thriller.",
    "Dull and lifeless, the film drags on and on.",
]
MODEL_NAMES = ["tiny-bert-cls", "tiny-roberta-cls", "tiny-distilbert-cls"]


def word_spans(text):
    spans, start = [], None
    for i, c in enumerate(text):
        if c.isspace():
            if start is not None:
                spans.append((start, i))
                start = None
        elif start is None:
            start = i
    if start is not None:
        spans.append((start, len(text)))
    return spans


def token_words(text, offsets, special):
    """The word holding the first non-space character of each token (None for specials)."""
    words = word_spans(text)
    out = []
    for (s, e), sp in zip(offsets, special):
        if sp or e <= s:
            out.append(None)
            continue
        first = next((s + i for i, c in enumerate(text[s:e]) if not c.isspace()), None)
        out.append(next((w for w, (ws, we) in enumerate(words) if first is not None and ws <= first < we), None))
    return words, out


def scores(attr):
    return attr.detach().sum(-1)[0].double().tolist()


def main():
    torch.manual_seed(0)
    out = {"captum": "0.9.0", "torch": torch.__version__, "texts": TEXTS, "models": {}}
    for name in MODEL_NAMES:
        path = os.path.join(MODELS, name)
        tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
        model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager")
        model.eval()
        pad = model.config.pad_token_id
        emb_layer = model.base_model.embeddings.word_embeddings
        cases = []
        for text in TEXTS:
            enc = tok.encode(text)
            ids = torch.tensor([enc.ids])
            special = [bool(m) for m in enc.special_tokens_mask]
            base_ids = torch.tensor([[i if sp else pad for i, sp in zip(enc.ids, special)]])
            words, tw = token_words(text, enc.offsets, special)

            def probs_emb(e):
                return torch.softmax(model(inputs_embeds=e).logits, -1)

            def probs_ids(input_ids):
                return torch.softmax(model(input_ids=input_ids).logits, -1)

            def logprobs_ids(input_ids):
                return torch.log_softmax(model(input_ids=input_ids).logits, -1)

            with torch.no_grad():
                p = probs_ids(ids)[0]
                # The baseline as LayerIntegratedGradients sees it: its word embeddings
                # with the input's positions (RoBERTa would number pad ids differently).
                pb = probs_emb(emb_layer(base_ids))[0]
            target = int(p.argmax())
            case = {
                "text": text,
                "ids": enc.ids,
                "special": special,
                "token_words": tw,
                "words": [text[s:e] for s, e in words],
                "target": target,
                "probabilities": p.double().tolist(),
                "f_baseline": float(pb[target]),
            }
            for key, fwd, n, method in [
                ("ig_gausslegendre_50", probs_ids, 50, "gausslegendre"),
                ("ig_gausslegendre_50_log", logprobs_ids, 50, "gausslegendre"),
                ("ig_riemann_trapezoid_20", probs_ids, 20, "riemann_trapezoid"),
                ("ig_gausslegendre_5", probs_ids, 5, "gausslegendre"),
            ]:
                lig = LayerIntegratedGradients(fwd, emb_layer)
                attr, delta = lig.attribute(
                    ids,
                    baselines=base_ids,
                    target=target,
                    n_steps=n,
                    method=method,
                    internal_batch_size=16,
                    return_convergence_delta=True,
                )
                # Captum's delta evaluates F at the baseline *ids*, where RoBERTa numbers pad
                # tokens' positions differently from the input's; the gap of the path that
                # was integrated uses the baseline's embeddings at the input's positions.
                with torch.no_grad():
                    fx = fwd(ids)[0, target]
                    logits_b = model(inputs_embeds=emb_layer(base_ids)).logits
                    fb = (torch.log_softmax if fwd is logprobs_ids else torch.softmax)(logits_b, -1)[0, target]
                gap = float(attr.sum() - (fx - fb))
                case[key] = {"tokens": scores(attr), "delta": float(delta[0]), "path_gap": gap}
            with torch.no_grad():
                e = emb_layer(ids).detach()
                eb = emb_layer(base_ids).detach()
            case["saliency"] = scores(Saliency(probs_emb).attribute(e.clone().requires_grad_(), target=target))
            case["input_x_gradient"] = scores(
                InputXGradient(probs_emb).attribute(e.clone().requires_grad_(), target=target)
            )
            nw = len(words)
            feature = [w if w is not None else nw + j for j, w in enumerate(tw)]
            mask = torch.tensor(feature).view(1, -1, 1).expand_as(e).contiguous()
            fa = FeatureAblation(probs_emb).attribute(e, baselines=eb, target=target, feature_mask=mask)
            case["occlusion_words"] = [
                float(fa[0, tw.index(w), 0]) for w in range(nw)
            ]
            # Shapley over the words only: the special tokens stay in place.
            content = [j for j, w in enumerate(tw) if w is not None]

            def probs_content(ec):
                full = e.expand(ec.shape[0], -1, -1).clone()
                full[:, content] = ec
                return probs_emb(full)

            rng = np.random.RandomState(0)
            perms = [rng.permutation(nw).tolist() for _ in range(6)]
            svs = ShapleyValueSampling(probs_content)
            svs.permutation_generator = lambda num_features, num_samples, perms=perms: iter(perms)
            cmask = torch.tensor([tw[j] for j in content]).view(1, -1, 1).expand(1, len(content), e.shape[-1]).contiguous()
            sv = svs.attribute(
                e[:, content], baselines=eb[:, content], target=target, feature_mask=cmask, n_samples=len(perms)
            )
            case["shapley"] = {
                "permutations": perms,
                "words": [float(sv[0, [tw[j] for j in content].index(w), 0]) for w in range(nw)],
            }
            cases.append(case)
        out["models"][name] = cases
    dest = os.path.join(MODELS, "explain_reference.json")
    with open(dest, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", dest)


if __name__ == "__main__":
    main()
