"""Tiny random-weight checkpoints and HF transformers reference outputs for the encoder tests.

Run (after scripts/fetch-assets.sh, for the real MiniLM):
    python3 -m venv ~/.cache/lmcompare/venv-torch
    ~/.cache/lmcompare/venv-torch/bin/pip install torch==2.15.0 transformers==5.24.0 \
        tokenizers==0.23.3 safetensors==0.8.0
    ~/.cache/lmcompare/venv-torch/bin/python scripts/gen_model_fixtures.py

Writes tests/fixtures/models/{tiny-bert-cls,tiny-roberta-cls,tiny-distilbert-cls,tiny-bert-base,
tiny-bert-cls-bin,malicious-bin}/ and tests/fixtures/models/reference_outputs.json.
Deterministic: seeded weights, a WordPiece vocabulary built here from fixed word lists (the
`tokenizers` WordPiece trainer breaks ties differently on every run), a byte-level BPE trained
by `tokenizers` (deterministic), fixed zip timestamps. Running it twice gives identical files.
No RoBERTa, DistilBERT or classifier weights ship in any reachable registry, so these exercise
the exact architectures (weight names, position ids, heads) with random weights.

Sizes are tied to the Rust tests: max_position_embeddings 64 (BERT, DistilBERT; 66 for
RoBERTa) is the truncation limit the CLI tests expect, and the WordPiece vocabulary must stay
smaller than the BPE one (a BERT model given the RoBERTa tokenizer must be refused).
"""
import collections
import json
import os
import string
import sys
import zipfile

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel,
                          DistilBertConfig, DistilBertForSequenceClassification,
                          PreTrainedTokenizerFast,
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
EXTRA = [
    "the quick brown fox jumps over the lazy dog",
    "a gripping thriller with a twist you never see coming",
    "dull, lifeless and far too long for its own good",
    "an uneven but often funny comedy about growing up",
    "les acteurs sont excellents et la musique est superbe",
    "이 영화는 정말 재미있다 그리고 감동적이다",
    "emoji reviews 👍👎😂 are common on social media",
]
# The byte-level BPE is trained on this (the WordPiece vocabulary uses EXTRA only).
CORPUS = TEXTS + EXTRA * 20
MAX_LEN = 64
# Weights N(0, 0.05) (transformers' default is 0.02), then randomise_extras(): without it every
# bias is 0, every LayerNorm weight 1 and the logits ~0.01, so a bias or LayerNorm weight that
# is never loaded, or a wrong head, would pass the tests' 1e-4. Larger weights than this make
# a random encoder's mean-pooled features too noisy for the CLI's linear-probe test.
INIT_RANGE = 0.05


def randomise_extras(model, heads):
    """Biases N(0, 0.1), LayerNorm weights N(1, 0.1), classification-head (and pooler)
    weights N(0, 0.3), so logits are of order 1. Deterministic (the global seed)."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.normal_(1.0, 0.1)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
        for h in heads:
            h.weight.normal_(0.0, 0.3)
    return model.eval()


# Words of the WordPiece vocabulary besides those of the extra corpus sentences: common
# English words and the words the CLI tests use, so those are whole tokens.
COMMON_WORDS = """
the a an and or but if of to in on at by for with from as is are was were be been being it
its this that these those i you he she we they me him her us them my your his our their what
which who whom when where why how all any some no not very too so than then there here just
only also more most much many few one two three first last new old good great bad best worst
better worse well really quite still even never always often again ever about into over under
after before while because though although yet up down out off do does did done have has had
can could will would should may might must make made get got go going went see seen say said
film films movie movies story plot actor actors acting cast director script scene scenes
character characters performance performances drama comedy thriller horror action romance
funny boring dull lifeless superb overlong charming tedious gripping brilliant beautiful
terrible awful excellent wonderful love loved like liked hate hated fun mess works review
reviews fresh rotten overall time minute minutes hour hours life world man woman people day
night way thing things hello word words text sentence long short ok yes
""".split()
# Common English word endings and beginnings, as continuation pieces.
SUFFIXES = """##s ##es ##ed ##d ##ing ##ly ##er ##ers ##est ##ness ##ment ##ments ##tion
##tions ##ion ##able ##ible ##ful ##less ##ous ##ive ##al ##ally ##ity ##ism ##ist ##y ##ies
##en ##ish ##ize ##ized ##ic ##ical ##ance ##ence ##ant ##ent ##ward ##wards ##like""".split()
PREFIX_WORDS = "un re over under out non pre anti".split()


def bert_words(texts):
    """The words the BERT normaliser and pre-tokeniser make of `texts` (lower-cased,
    accents stripped, so Hangul is decomposed into jamo; punctuation split off)."""
    norm = normalizers.BertNormalizer(lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    out = []
    for t in texts:
        out.extend(w for w, _ in pre.pre_tokenize_str(norm.normalize_str(t)))
    return out


def wordpiece_vocab():
    """A deterministic 448-token uncased WordPiece vocabulary: the special tokens; every
    character of the extra corpus and of ASCII, alone and as a ## continuation; the whole
    words of the extra corpus and of COMMON_WORDS; common suffixes. The reference TEXTS are
    not in it, so they exercise subword splits and [UNK] (the words with a character outside
    the vocabulary: the 😍 emoji and some Korean jamo)."""
    words = bert_words(EXTRA) + bert_words(COMMON_WORDS)
    chars = set(string.ascii_lowercase + string.digits + string.punctuation)
    chars.update(c for w in words for c in w)
    chars = sorted(chars)
    punct = set(string.punctuation)
    counts = collections.Counter(w for w in words if len(w) > 1)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += chars
    vocab += ["##" + c for c in chars if c not in punct]
    vocab += [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    vocab += PREFIX_WORDS + SUFFIXES
    seen, out = set(), []
    for v in vocab:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return {tok: i for i, tok in enumerate(out)}


def wordpiece_tokenizer(token_types=True):
    tok = Tokenizer(models.WordPiece(wordpiece_vocab(), unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.BertProcessing(("[SEP]", sep), ("[CLS]", cls))
    tok.decoder = decoders.WordPiece()
    # BERT takes segment ids; DistilBERT has no segment embeddings.
    names = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=MAX_LEN, model_input_names=names)


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
    """One padded batch of all TEXTS, as transformers runs it. Per text (unpadded):
    input_ids, last_hidden_state (all texts, or the first `full_hidden_for`), mean_pooled
    (masked mean of the last hidden state), cls_first8 / mean_pooled_first8 (the first 8
    dimensions of the first token's state and of mean_pooled); logits for a classifier;
    `padded`: the batch exactly as fed to the model (input_ids, attention_mask and
    token_type_ids where the model takes them)."""
    batch = tokenizer(TEXTS, padding="longest", truncation=True, max_length=max_length,
                      return_tensors="pt")
    if "token_type_ids" in batch and not getattr(model.config, "type_vocab_size", 0):
        del batch["token_type_ids"]  # DistilBERT has no segment embeddings
    with torch.no_grad():
        if with_logits:
            out = model(**batch, output_hidden_states=True)
            hidden, logits = out.hidden_states[-1], out.logits
        else:
            hidden, logits = model(**batch).last_hidden_state, None
    mask = batch["attention_mask"]
    rec = {"input_ids": [], "last_hidden_state": [], "mean_pooled": [], "cls_first8": [],
           "mean_pooled_first8": []}
    for i in range(len(TEXTS)):
        n = int(mask[i].sum())
        rec["input_ids"].append(batch["input_ids"][i, :n].tolist())
        h = hidden[i, :n]
        if full_hidden_for is None or i < full_hidden_for:
            rec["last_hidden_state"].append(h.tolist())
        pooled = h.mean(0)
        rec["mean_pooled"].append(pooled.tolist())
        rec["cls_first8"].append(h[0, :8].tolist())
        rec["mean_pooled_first8"].append(pooled[:8].tolist())
    if logits is not None:
        rec["logits"] = logits.tolist()
    rec["padded"] = {k: v.tolist() for k, v in batch.items()}
    return rec


def save(model, tokenizer, name):
    """The checkpoint as save_pretrained writes it, the tokenizer with padding and truncation
    off (lmcompare owns those), plus the tokenizer's plain vocabulary files (vocab.txt, or
    vocab.json + merges.txt) for the loaders that read those instead of tokenizer.json."""
    d = os.path.join(OUT, name)
    model.save_pretrained(d, safe_serialization=True)
    tokenizer._tokenizer.no_padding()
    tokenizer._tokenizer.no_truncation()
    tokenizer.save_pretrained(d)
    tokenizer._tokenizer.model.save(d)
    return d


def write_torch_bin_copy():
    """tiny-bert-cls again, as a PyTorch pickle checkpoint (pytorch_model.bin), for the
    loader that reads those without executing them; its outputs must equal tiny-bert-cls's."""
    import pickle
    import shutil

    src = os.path.join(OUT, "tiny-bert-cls")
    dst = os.path.join(OUT, "tiny-bert-cls-bin")
    model = BertForSequenceClassification.from_pretrained(src)
    model.config.save_pretrained(dst)
    # transformers 5 only writes safetensors; torch.save of the state dict is what older
    # transformers wrote as pytorch_model.bin.
    torch.save(model.state_dict(), os.path.join(dst, "pytorch_model.bin"))
    PreTrainedTokenizerFast.from_pretrained(src).save_pretrained(dst)
    for f in ("vocab.txt",):
        shutil.copy(os.path.join(src, f), os.path.join(dst, f))
    # The same folder whose checkpoint asks the unpickler to call os.system: it must be
    # refused, never run.
    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > /tmp/lmcompare-pwned",))

    bad = os.path.join(OUT, "malicious-bin")
    shutil.copytree(dst, bad, dirs_exist_ok=True)
    with zipfile.ZipFile(os.path.join(bad, "pytorch_model.bin"), "w") as z:
        info = zipfile.ZipInfo("archive/data.pkl", date_time=(1980, 1, 1, 0, 0, 0))
        z.writestr(info, pickle.dumps({"x": Exploit()}, protocol=2))


def main():
    torch.manual_seed(20261128)
    os.makedirs(OUT, exist_ok=True)
    if not os.path.isdir(MINILM):
        sys.exit(f"{MINILM} missing: run scripts/fetch-assets.sh first")
    import tokenizers
    refs = {"transformers_version": transformers.__version__, "torch_version": torch.__version__,
            "tokenizers_version": tokenizers.__version__, "texts": TEXTS, "max_length": MAX_LEN,
            "minilm_max_length": 128, "models": {}}
    wp = wordpiece_tokenizer()
    bpe = bpe_tokenizer()
    common = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                  initializer_range=INIT_RANGE, attn_implementation="eager")

    bert_cfg = BertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, num_labels=3,
                          id2label={0: "negative", 1: "neutral", 2: "positive"},
                          label2id={"negative": 0, "neutral": 1, "positive": 2}, **common)
    m = BertForSequenceClassification(bert_cfg)
    m = randomise_extras(m, [m.bert.pooler.dense, m.classifier])
    save(m, wp, "tiny-bert-cls")
    refs["models"]["tiny-bert-cls"] = run(m, wp, MAX_LEN, True)

    m = BertModel(BertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, **common))
    m = randomise_extras(m, [m.pooler.dense])
    save(m, wp, "tiny-bert-base")
    refs["models"]["tiny-bert-base"] = run(m, wp, MAX_LEN, False)

    rob_cfg = RobertaConfig(vocab_size=bpe.vocab_size, max_position_embeddings=MAX_LEN + 2,
                            pad_token_id=bpe.pad_token_id, bos_token_id=bpe.bos_token_id,
                            eos_token_id=bpe.eos_token_id, type_vocab_size=1, num_labels=2,
                            id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1},
                            **common)
    m = RobertaForSequenceClassification(rob_cfg)
    m = randomise_extras(m, [m.classifier.dense, m.classifier.out_proj])
    save(m, bpe, "tiny-roberta-cls")
    refs["models"]["tiny-roberta-cls"] = run(m, bpe, MAX_LEN, True)

    dcfg = DistilBertConfig(vocab_size=wp.vocab_size, max_position_embeddings=MAX_LEN, dim=32,
                            n_layers=2, n_heads=4, hidden_dim=37, activation="gelu", dropout=0.0,
                            attention_dropout=0.0, num_labels=2, initializer_range=INIT_RANGE,
                            attn_implementation="eager",
                            id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    m = DistilBertForSequenceClassification(dcfg)
    m = randomise_extras(m, [m.pre_classifier, m.classifier])
    wp_nt = wordpiece_tokenizer(token_types=False)
    save(m, wp_nt, "tiny-distilbert-cls")
    refs["models"]["tiny-distilbert-cls"] = run(m, wp_nt, MAX_LEN, True)

    # The real MiniLM: its tokenizer.json pads and truncates to a fixed 128, which the batch
    # call below overrides (padding to the longest, truncation at 128); sentence-transformers'
    # embedding is the masked mean of the last hidden state, L2-normalised.
    tok = AutoTokenizer.from_pretrained(MINILM)
    tok._tokenizer.no_padding()
    tok._tokenizer.no_truncation()
    m = BertModel.from_pretrained(MINILM, attn_implementation="eager").eval()
    rec = run(m, tok, 128, False, full_hidden_for=2)
    emb = torch.nn.functional.normalize(torch.tensor(rec["mean_pooled"]), p=2, dim=1)
    rec["mean_pooled_normalized"] = emb.tolist()
    assert TEXTS[0] == "A man is eating food."
    assert rec["input_ids"][0] == [101, 1037, 2158, 2003, 5983, 2833, 1012, 102], rec["input_ids"][0]
    want = [0.03324, 0.00441, -0.00628, 0.04838]
    assert all(abs(a - b) < 1e-4 for a, b in zip(emb[0][:4].tolist(), want)), emb[0][:4]
    refs["models"]["all-MiniLM-L6-v2"] = rec

    write_torch_bin_copy()

    with open(os.path.join(OUT, "reference_outputs.json"), "w", encoding="utf-8") as f:
        json.dump(refs, f, ensure_ascii=False)
    print("wrote", OUT)


if __name__ == "__main__":
    if sys.argv[1:] == ["--bin-only"]:
        write_torch_bin_copy()
    else:
        main()
