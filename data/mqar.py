"""
Multi-query associative recall (MQAR) data for the Mamba-2 paper's Figure 8 (arXiv 2405.21060, section 9.1 and
Appendix D.1), in the trainers' shard format with masked targets (doc/packing.md). Standard library only.

    python3 data/mqar.py --seq-len 256 --outdir data/mqar/T256                  # train, val and test splits
    python3 data/mqar.py --seq-len 1024 --train-per-count 32000 --workers 16    # bigger, faster
    python3 data/mqar.py --show 1 --seq-len 64                                  # print one example, write nothing

The task (the "harder" variant of Zoology's generator, Arora et al. 2024, used by the Mamba-2 paper): an example of
T tokens starts with K key-value pairs  k1 v1 k2 v2 ... kK vK, keys drawn without repetition from the lower half of
the vocabulary (1 .. V/2-1), values without repetition from the upper half (V/2 .. V-1). Then every key is asked once:
it appears again in the rest of the example, at an even offset 2g from the end of the pairs, where the gaps g of the
K queries are drawn without replacement from 0 .. S-1 (S = (T - 2K) / 2) with probability proportional to
(g+1)^(a-1), a = 0.01: a power law, so most queries come soon after the pairs and a few far away. The token after a
query is its answer (the value bound to that key), and it is the only kind of target that counts in the loss and the
accuracy: the mask file marks exactly the answer positions. Every other position holds a random token of the whole
vocabulary (Zoology's random_non_queries: the model cannot learn where queries are from the filler).

One difference from Zoology, forced by the trainers reading one token stream: there the input after a query is
filler and the answer is only a label; here the answer is the next token of the stream, so the model sees it after
predicting it (teacher forcing, as in any language-model data). No later query asks the same key, so this gives it
nothing to copy.

Layout: an example is exactly T tokens and starts at a multiple of T in its shard, so with -t T every training row is
one whole example (llmc/dataloader.h cuts rows of T at multiples of T): no row ever holds a half example, and no
state crosses from one example into the next (each row starts from a zero state). The mask byte of an example's first
token is 0, so the prediction of the next example's first token (the last position of a row) never counts. Each
shard ends with one extra filler token (mask 0): a shard of N examples then holds N / B whole batches of B rows for
the loader (it reads B*T + 1 tokens per batch).

Splits (every pair count K in --kv-pairs, default T/32, T/16, T/8, T/4: the curriculum of the paper's setup):
    mqar_train_000000.bin   --train-per-count examples of every K, shuffled together (one training mixture)
    mqar_val_000000.bin     --val-per-count of every K (the trainer's -j: loss on the answers while training)
    mqar_test_kvK_000000.bin  --test-per-count examples with K pairs, one shard per K (held out: their own seeds),
                            so 'mqar_test_kv*_*.bin' is the whole test set and one file is one slice
    meta.json               every parameter, the token counts, the generator version
each with its .mask. The same --seed and parameters give the same bytes on every machine and with any --workers
(examples are drawn in blocks of BLOCK examples, each block from its own seeded generator).
"""

import argparse
import array
import hashlib
import json
import math
import multiprocessing
import os
import random
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import masks  # noqa: E402  (read_shard_tokens / write_mask: the project's shard and mask formats)

GENERATOR_VERSION = 1
SHARD_MAGIC = 20240520
BLOCK = 1000            # examples per seeded block (the unit of parallel work and of determinism)
DEFAULT_VOCAB = 8192
DEFAULT_POWER_A = 0.01  # Zoology's power_a: P(gap g) ~ (g+1)^(a-1)


def default_kv_pairs(seq_len):
    """the curriculum's pair counts at length T: T/32, T/16, T/8, T/4 (at least 1)"""
    return sorted({max(1, seq_len // d) for d in (32, 16, 8, 4)})


def check_params(seq_len, vocab, kv):
    """refuses shapes the task cannot be built in, saying which limit is broken"""
    if seq_len < 4 or seq_len % 2:
        raise ValueError(f"seq_len {seq_len}: must be even and >= 4 (queries sit at even offsets)")
    if vocab < 4 or vocab > 65536:
        raise ValueError(f"vocab {vocab}: must be in 4..65536 (uint16 shards)")
    if kv < 1 or 4 * kv > seq_len:
        raise ValueError(f"{kv} key-value pairs at length {seq_len}: need 1 <= pairs <= T/4 = {seq_len // 4} "
                         f"(2K tokens of pairs and K queries at even offsets in the rest)")
    if kv > vocab // 2 - 1:
        raise ValueError(f"{kv} key-value pairs: the lower half of vocab {vocab} holds only {vocab // 2 - 1} keys")


def block_seed(seed, split, seq_len, kv, block):
    """a generator seed for one block of examples, from everything that names it (stable across machines)"""
    name = f"mqar/v{GENERATOR_VERSION}/{seed}/{split}/T{seq_len}/K{kv}/b{block}".encode()
    return int.from_bytes(hashlib.sha256(name).digest()[:8], "little")


def gap_weights(space, power_a):
    """P(gap = g) for g = 0 .. space-1, up to a constant: (g+1)^(a-1)"""
    return [(g + 1) ** (power_a - 1.0) for g in range(space)]


def sample_gaps(rng, weights, k):
    """
    k distinct gaps drawn one after another, each with probability proportional to its weight among those not yet
    drawn (numpy's choice(replace=False, p=...), which Zoology uses). Efraimidis-Spirakis: give gap g the key
    log(u) / w_g, u uniform in (0, 1]; the k largest keys are such a draw, in the order drawn.
    """
    keyed = [(math.log(1.0 - rng.random()) / w, g) for g, w in enumerate(weights)]
    keyed.sort(reverse=True)
    return [g for _, g in keyed[:k]]


def random_tokens(rng, n, vocab):
    """n tokens uniform in 0 .. vocab-1 (16 random bits each, redrawn above the largest multiple of vocab)"""
    raw = bytearray(rng.randbytes(2 * n))
    if vocab & (vocab - 1) == 0 and vocab >= 256:  # a power of two: keep the low bits, bytewise in C
        raw[1::2] = raw[1::2].translate(bytes(b & ((vocab - 1) >> 8) for b in range(256)))
        out = array.array("H", raw)
        if sys.byteorder != "little":
            out.byteswap()
        return out
    limit = 65536 - 65536 % vocab
    out = array.array("H", raw)
    if sys.byteorder != "little":
        out.byteswap()
    for i in range(n):
        x = out[i]
        while x >= limit:
            x = rng.getrandbits(16)
        out[i] = x % vocab
    return out


def make_example(rng, seq_len, vocab, kv, weights):
    """
    one example: (tokens, mask, answers). tokens: array('H') of seq_len; mask: bytearray, 1 exactly at the answers;
    answers: [(position of the answer, key, value)] in stream order.
    """
    half = vocab // 2
    keys = rng.sample(range(1, half), kv)
    values = rng.sample(range(half, vocab), kv)
    tokens = random_tokens(rng, seq_len, vocab)
    mask = bytearray(seq_len)
    for i in range(kv):
        tokens[2 * i] = keys[i]
        tokens[2 * i + 1] = values[i]
    ctx = 2 * kv
    gaps = sample_gaps(rng, weights, kv)
    answers = []
    for i, g in enumerate(gaps):  # key i is asked at gap g
        q = ctx + 2 * g
        tokens[q] = keys[i]
        tokens[q + 1] = values[i]
        mask[q + 1] = 1
        answers.append((q + 1, keys[i], values[i]))
    answers.sort()
    return tokens, mask, answers


def make_block(job):
    """(seed, split, seq_len, vocab, kv, power_a, block, count) -> (tokens bytes, mask bytes) of count examples"""
    seed, split, seq_len, vocab, kv, power_a, block, count = job
    rng = random.Random(block_seed(seed, split, seq_len, kv, block))
    weights = gap_weights((seq_len - 2 * kv) // 2, power_a)
    toks, msk = [], []
    for _ in range(count):
        t, m, _ = make_example(rng, seq_len, vocab, kv, weights)
        toks.append(t.tobytes() if sys.byteorder == "little" else _swapped(t))
        msk.append(bytes(m))
    return toks, msk


def _swapped(a):
    b = array.array("H", a)
    b.byteswap()
    return b.tobytes()


def make_examples(seed, split, seq_len, vocab, kv, power_a, count, pool=None):
    """count examples with kv pairs: ([T tokens as bytes], [T mask bytes]), the same for any pool"""
    jobs = [(seed, split, seq_len, vocab, kv, power_a, b, min(BLOCK, count - b * BLOCK))
            for b in range((count + BLOCK - 1) // BLOCK)]
    results = pool.map(make_block, jobs) if pool else [make_block(j) for j in jobs]
    toks = [t for r in results for t in r[0]]
    msk = [m for r in results for m in r[1]]
    return toks, msk


def write_shard(path, example_tokens, example_masks):
    """examples back to back, then one filler token 0 (mask 0); writes path and path + '.mask'"""
    tail = struct.pack("<H", 0)
    n = sum(len(t) for t in example_tokens) // 2 + 1
    header = [0] * 256
    header[0], header[1], header[2] = SHARD_MAGIC, 1, n
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", *header))
        for t in example_tokens:
            f.write(t)
        f.write(tail)
    masks.write_mask(path, b"".join(example_masks) + b"\x00")
    return n


def shuffled(items_a, items_b, seed):
    """the same seeded permutation applied to two lists"""
    order = list(range(len(items_a)))
    random.Random(seed).shuffle(order)
    return [items_a[i] for i in order], [items_b[i] for i in order]


def build(outdir, seq_len, vocab=DEFAULT_VOCAB, kv_pairs=None, train_per_count=20000, val_per_count=200,
          test_per_count=1000, seed=1, power_a=DEFAULT_POWER_A, workers=1, quiet=False):
    """writes the three splits and meta.json into outdir; returns the meta dict"""
    kv_pairs = kv_pairs or default_kv_pairs(seq_len)
    for kv in kv_pairs:
        check_params(seq_len, vocab, kv)
    os.makedirs(outdir, exist_ok=True)
    for fn in os.listdir(outdir):  # an earlier build's other slices would join the test glob
        if fn.startswith("mqar_") and (fn.endswith(".bin") or fn.endswith(".bin.mask")):
            os.remove(os.path.join(outdir, fn))
    meta = dict(generator="data/mqar.py", version=GENERATOR_VERSION, seq_len=seq_len, vocab=vocab,
                kv_pairs=kv_pairs, power_a=power_a, seed=seed, train_per_count=train_per_count,
                val_per_count=val_per_count, test_per_count=test_per_count, shards={})
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        for split, per in (("train", train_per_count), ("val", val_per_count)):
            toks, msk = [], []
            for kv in kv_pairs:
                t, m = make_examples(seed, split, seq_len, vocab, kv, power_a, per, pool)
                toks += t
                msk += m
            toks, msk = shuffled(toks, msk, block_seed(seed, split + "/order", seq_len, 0, 0))
            path = os.path.join(outdir, f"mqar_{split}_000000.bin")
            n = write_shard(path, toks, msk)
            meta["shards"][os.path.basename(path)] = dict(examples=len(toks), tokens=n, answers=sum(
                per * kv for kv in kv_pairs))
            if not quiet:
                print(f"{path}: {len(toks)} examples ({per} per pair count {kv_pairs}), {n} tokens", flush=True)
        for kv in kv_pairs:
            t, m = make_examples(seed, "test", seq_len, vocab, kv, power_a, test_per_count, pool)
            path = os.path.join(outdir, f"mqar_test_kv{kv}_000000.bin")
            n = write_shard(path, t, m)
            meta["shards"][os.path.basename(path)] = dict(examples=len(t), tokens=n, answers=test_per_count * kv)
            if not quiet:
                print(f"{path}: {len(t)} examples with {kv} pairs, {n} tokens", flush=True)
    finally:
        if pool:
            pool.close()
            pool.join()
    with open(os.path.join(outdir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def show_example(seq_len, vocab, kv, seed, power_a):
    rng = random.Random(block_seed(seed, "show", seq_len, kv, 0))
    tokens, mask, answers = make_example(rng, seq_len, vocab, kv, gap_weights((seq_len - 2 * kv) // 2, power_a))
    print(f"T={seq_len}, vocab {vocab}, {kv} pairs; [x] = a counted target (the answer to the query before it)")
    print(" ".join(f"[{t}]" if m else str(t) for t, m in zip(tokens, mask)))
    for pos, k, v in answers:
        print(f"  query key {k} at {pos - 1} -> answer {v} at {pos}")


def main(argv=None):
    p = argparse.ArgumentParser(description="MQAR shards with masked targets (doc/paper.md, Figure 8)")
    p.add_argument("--seq-len", type=int, required=True, help="T: every example is T tokens (256, 512, 1024)")
    p.add_argument("--outdir", help="default data/mqar/T<seq-len>")
    p.add_argument("--vocab", type=int, default=DEFAULT_VOCAB)
    p.add_argument("--kv-pairs", help="comma-separated pair counts (default T/32,T/16,T/8,T/4)")
    p.add_argument("--train-per-count", type=int, default=20000, help="train examples per pair count")
    p.add_argument("--val-per-count", type=int, default=200, help="val examples per pair count")
    p.add_argument("--test-per-count", type=int, default=1000, help="test examples per pair count")
    p.add_argument("--power-a", type=float, default=DEFAULT_POWER_A, help="gap law: P(g) ~ (g+1)^(a-1)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--show", type=int, metavar="K", help="print one example with K pairs and exit")
    args = p.parse_args(argv)
    try:
        if args.show:
            check_params(args.seq_len, args.vocab, args.show)
            show_example(args.seq_len, args.vocab, args.show, args.seed, args.power_a)
            return
        kv = [int(x) for x in args.kv_pairs.split(",")] if args.kv_pairs else None
        for name in ("train_per_count", "val_per_count", "test_per_count"):
            if getattr(args, name) < 1:
                p.error(f"--{name.replace('_', '-')} must be >= 1")
        if not 0 < args.power_a <= 1:
            p.error("--power-a must be in (0, 1] (1 = uniform gaps)")
        build(args.outdir or os.path.join("data", "mqar", f"T{args.seq_len}"), args.seq_len, args.vocab, kv,
              args.train_per_count, args.val_per_count, args.test_per_count, args.seed, args.power_a,
              max(1, args.workers))
    except ValueError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
