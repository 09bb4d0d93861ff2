"""Tiny random-weight checkpoints and HF transformers reference outputs for the encoder tests.

Run (after scripts/fetch-assets.sh, for the real MiniLM):
    python3 -m venv /tmp/tv && /tmp/tv/bin/pip install torch transformers safetensors
    /tmp/tv/bin/python scripts/gen_model_fixtures.py

Writes tests/fixtures/models/{tiny-bert-cls,tiny-roberta-cls,tiny-distilbert-cls,tiny-bert-base}/
and tests/fixtures/models/reference_outputs.json. Seeded and deterministic. No RoBERTa,
DistilBERT or classifier weights ship in any reachable registry, so these exercise the exact
architectures (weight names, position ids, heads) with random weights.
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (BertConfig, BertForSequenceClassification, BertModel, DistilBertConfig,
                          DistilBertForSequenceClassification, PreTrainedTokenizerFast,
                          RobertaConfig, RobertaForSequenceClassification)

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "models")
ASSETS = os.environ.get("LMCOMPARE_ASSETS", os.path.join(ROOT, "assets"))
MINILM = os.path.join(ASSETS, "models", "all-MiniLM-L6-v2")

TEXTS = [
    "A man is eating food.",
    "ok",
    "The film is a triumph of style over substance, and I loved every minute of it.",
    "나는 영화를 좋아한다",
    "Café crème brûlée, très bon — naïve façade",
    "I love it 😍🔥 #best",
    "unbelievably overlong, yet strangely compelling: a mess that works",
    " ".join(["This sentence keeps going and going"] * 12),
]
CORPUS = TEXTS + [
    "the quick brown fox jumps over the lazy dog",
    "a gripping thriller with a twist you never see coming",
    "dull, lifeless and far too long for its own good",
    "an uneven but often funny comedy about growing up",
    "les acteurs sont excellents et la musique est superbe",
    "이 영화는 정말 재미있다 그리고 감동적이다",
    "emoji reviews 👍👎😂 are common on social media",
] * 20
MAX_LEN = 64


def wordpiece_tokenizer():
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    tok.train_from_iterator(CORPUS, trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=MAX_LEN)


def bpe_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")),
                                                      ("<s>", tok.token_to_id("<s>")))
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>", cls_token="<s>",
                                   sep_token="</s>", mask_token="<mask>", model_max_length=MAX_LEN)


def run(model, tokenizer, max_length, with_logits, full_hidden_for=None):
    batch = tokenizer(TEXTS, padding="longest", truncation=True, max_length=max_length,
                      return_tensors="pt")
    with torch.no_grad():
        if with_logits:
            out = model(**batch, output_hidden_states=True)
            hidden, logits = out.hidden_states[-1], out.logits
        else:
            hidden, logits = model(**batch).last_hidden_state, None
    mask = batch["attention_mask"]
    rec = {"input_ids": [], "last_hidden_state": [], "mean_pooled": []}
    for i in range(len(TEXTS)):
        n = int(mask[i].sum())
        rec["input_ids"].append(batch["input_ids"][i, :n].tolist())
        h = hidden[i, :n]
        if full_hidden_for is None or i < full_hidden_for:
            rec["last_hidden_state"].append(h.tolist())
        rec["mean_pooled"].append(h.mean(0).tolist())
    if logits is not None:
        rec["logits"] = logits.tolist()
    return rec


def save(model, tokenizer, name):
    d = os.path.join(OUT, name)
    model.save_pretrained(d, safe_serialization=True)
    tokenizer.save_pretrained(d)
    return d


def write_torch_bin_copy():
    """tiny-bert-cls again, as a PyTorch pickle checkpoint (pytorch_model.bin), for the
    loader that reads those without executing them; its outputs must equal tiny-bert-cls's."""
    src = os.path.join(OUT, "tiny-bert-cls")
    dst = os.path.join(OUT, "tiny-bert-cls-bin")
    model = BertForSequenceClassification.from_pretrained(src)
    model.config.save_pretrained(dst)
    # transformers 5 only writes safetensors; torch.save of the state dict is what older
    # transformers wrote as pytorch_model.bin.
    torch.save(model.state_dict(), os.path.join(dst, "pytorch_model.bin"))
    PreTrainedTokenizerFast.from_pretrained(src).save_pretrained(dst)
    # The same folder whose checkpoint asks the unpickler to call os.system: it must be
    # refused, never run.
    import pickle
    import shutil
    import zipfile

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/lmcompare-pwned",))

    bad = os.path.join(OUT, "malicious-bin")
    shutil.copytree(dst, bad, dirs_exist_ok=True)
    with zipfile.ZipFile(os.path.join(bad, "pytorch_model.bin"), "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": Exploit()}, protocol=2))


def main():
    torch.manual_seed(20261128)
    os.makedirs(OUT, exist_ok=True)
    refs = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "texts": TEXTS, "max_length": MAX_LEN, "models": {}}
    wp = wordpiece_tokenizer()
    bpe = bpe_tokenizer()
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)

    bert_cfg = BertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, num_labels=3,
                          id2label={0: "negative", 1: "neutral", 2: "positive"},
                          label2id={"negative": 0, "neutral": 1, "positive": 2}, **common)
    m = BertForSequenceClassification(bert_cfg).eval()
    save(m, wp, "tiny-bert-cls")
    refs["models"]["tiny-bert-cls"] = run(m, wp, MAX_LEN, True)

    m = BertModel(BertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, **common)).eval()
    save(m, wp, "tiny-bert-base")
    refs["models"]["tiny-bert-base"] = run(m, wp, MAX_LEN, False)

    rob_cfg = RobertaConfig(vocab_size=bpe.vocab_size, max_position_embeddings=MAX_LEN + 2,
                            pad_token_id=bpe.pad_token_id, bos_token_id=bpe.bos_token_id,
                            eos_token_id=bpe.eos_token_id, type_vocab_size=1, num_labels=2,
                            id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1},
                            **common)
    m = RobertaForSequenceClassification(rob_cfg).eval()
    save(m, bpe, "tiny-roberta-cls")
    refs["models"]["tiny-roberta-cls"] = run(m, bpe, MAX_LEN, True)

    dcfg = DistilBertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, dim=32,
                            n_layers=2, n_heads=4, hidden_dim=37, activation="gelu", dropout=0.0,
                            attention_dropout=0.0, num_labels=2,
                            id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    m = DistilBertForSequenceClassification(dcfg).eval()
    save(m, wp, "tiny-distilbert-cls")
    refs["models"]["tiny-distilbert-cls"] = run(m, wp, MAX_LEN, True)

    if os.path.isdir(MINILM):
        tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(MINILM, "tokenizer.json"),
                                      unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                      sep_token="[SEP]", mask_token="[MASK]")
        tok._tokenizer.no_padding()
        tok._tokenizer.no_truncation()
        m = BertModel.from_pretrained(MINILM).eval()
        rec = run(m, tok, 128, False, full_hidden_for=2)
        emb = torch.nn.functional.normalize(torch.tensor(rec["mean_pooled"]), p=2, dim=1)
        rec["mean_pooled_normalized"] = emb.tolist()
        assert rec["input_ids"][0] == [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]
        assert all(abs(a - b) < 1e-4 for a, b in zip(emb[0][:4].tolist(), [0.03324, 0.00441, -0.00628, 0.04838]))
        refs["models"]["all-MiniLM-L6-v2"] = rec
    else:
        print(f"warning: {MINILM} missing; run scripts/fetch-assets.sh first", file=sys.stderr)

    write_torch_bin_copy()

    with open(os.path.join(OUT, "reference_outputs.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False)
    print("wrote", OUT)


if __name__ == "__main__":
    if sys.argv[1:] == ["--bin-only"]:
        write_torch_bin_copy()
    else:
        main()
