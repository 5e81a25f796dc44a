"""
Tests of the MQAR generator (data/mqar.py). Standard library only; ~10 s on 2 cores.

    python3 data/test_mqar.py        # PASS/FAIL/SKIP per test, then "N passed, N failed, N skipped"

What is checked, on examples decoded back from the shards by the project's own readers (data/masks.py):
keys only from 1 .. V/2-1 and values only from V/2 .. V-1, distinct within an example; every counted target is the
answer to the query just before it (the value bound to that key in the pairs at the start), every key is asked exactly
once, at an even offset after the pairs; the mask is 1 exactly at the answers; the gaps follow the power law (and a
uniform law when a = 1, which the power-law check would reject); rows cut the way llmc/dataloader.h cuts them are
whole examples and a row's last target never counts; the same seed gives the same bytes with 1 or 2 workers, another
seed other bytes; the test split shares no example with train; bad shapes are refused. With ./train_mamba2 built, it
trains 3 steps on an MQAR shard with -M 1 (the trainer reads the shard and its mask).
"""

import collections
import io
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import masks  # noqa: E402
import mqar  # noqa: E402
from test_data import CountingResult  # noqa: E402  (the PASS/FAIL printing of the data suite)

V = 8192


def read_examples(path, seq_len):
    """(tokens, mask) of a shard cut into examples of seq_len, checking the trailing filler token"""
    tokens = masks.read_shard_tokens(path)
    mask = masks.read_mask(path)
    assert len(tokens) % seq_len == 1, f"{path}: {len(tokens)} tokens is not N*T + 1"
    assert mask[-1] == 0, f"{path}: the trailing token's mask byte is {mask[-1]}"
    n = len(tokens) // seq_len
    return [(tokens[i * seq_len:(i + 1) * seq_len], mask[i * seq_len:(i + 1) * seq_len]) for i in range(n)]


def decode(tokens, mask, kv):
    """the problems of one example as a list of strings (empty: a well-formed example with kv pairs)"""
    bad = []
    keys = [tokens[2 * i] for i in range(kv)]
    values = [tokens[2 * i + 1] for i in range(kv)]
    if any(not 1 <= k < V // 2 for k in keys):
        bad.append(f"a key outside 1..{V // 2 - 1}: {[k for k in keys if not 1 <= k < V // 2]}")
    if any(not V // 2 <= v < V for v in values):
        bad.append(f"a value outside {V // 2}..{V - 1}")
    if len(set(keys)) != kv or len(set(values)) != kv:
        bad.append("a repeated key or value in the pairs")
    if any(mask[:2 * kv + 1]):
        bad.append("a counted target inside the pairs (or at the first query slot's key)")
    bound = dict(zip(keys, values))
    asked = []
    for t in (i for i, m in enumerate(mask) if m):
        q = t - 1
        if (q - 2 * kv) % 2:
            bad.append(f"the query before target {t} is at an odd offset {q - 2 * kv} after the pairs")
        k = tokens[q]
        if k not in bound:
            bad.append(f"target {t}: the token before it ({k}) is not one of the keys")
        elif tokens[t] != bound[k]:
            bad.append(f"target {t}: answer {tokens[t]}, but key {k} is bound to {bound[k]}")
        asked.append(k)
    if sorted(asked) != sorted(keys):
        bad.append(f"{len(asked)} queries; asked keys != the pairs' keys")
    return bad


class TestExamples(unittest.TestCase):
    def test_ranges_answers_and_masks(self):
        """every example of every pair count: ranges, answers, one query per key, mask only at answers"""
        for T in (64, 256):
            for kv in mqar.default_kv_pairs(T):
                w = mqar.gap_weights((T - 2 * kv) // 2, mqar.DEFAULT_POWER_A)
                rng = mqar.random.Random(kv)
                problems, n = [], 200
                for _ in range(n):
                    tokens, mask, answers = mqar.make_example(rng, T, V, kv, w)
                    self.assertEqual(len(tokens), T)
                    self.assertEqual([i for i, m in enumerate(mask) if m], [a[0] for a in answers])
                    problems += decode(tokens, mask, kv)
                print(f"      T={T} K={kv}: {n} examples, {len(problems)} problems")
                self.assertEqual(problems, [], f"T={T} K={kv}: {problems[:3]}")

    def test_decoder_can_fail(self):
        """the checks above reject a wrong answer, a key from the upper half and a misplaced mask"""
        rng = mqar.random.Random(3)
        tokens, mask, answers = mqar.make_example(rng, 64, V, 4, mqar.gap_weights(28, 0.01))
        t = answers[0][0]
        wrong = mqar.array.array("H", tokens)
        wrong[t] = (wrong[t] + 1 - V // 2) % (V // 2) + V // 2
        self.assertTrue(any("answer" in b for b in decode(wrong, mask, 4)))
        upper = mqar.array.array("H", tokens)
        upper[0] = V - 1
        self.assertTrue(decode(upper, mask, 4))
        shifted = bytearray(mask)
        shifted[t], shifted[t + 1] = 0, 1
        self.assertTrue(decode(tokens, shifted, 4))

    def test_gap_power_law(self):
        """one query at T=64 (31 slots): the gap histogram matches (g+1)^(a-1), a=0.01; a=1 gives a flat one"""
        T, n = 64, 20000
        space = (T - 2) // 2
        for a in (0.01, 1.0):
            w = mqar.gap_weights(space, a)
            p = [x / sum(w) for x in w]
            rng = mqar.random.Random(11)
            counts = collections.Counter()
            for _ in range(n):
                _, _, answers = mqar.make_example(rng, T, V, 1, w)
                counts[(answers[0][0] - 1 - 2) // 2] += 1
            freq = [counts[g] / n for g in range(space)]
            tv = 0.5 * sum(abs(f - q) for f, q in zip(freq, p))
            tv_uniform = 0.5 * sum(abs(f - 1 / space) for f in freq)
            sigma0 = (p[0] * (1 - p[0]) / n) ** 0.5
            print(f"      a={a}: P(gap 0) {freq[0]:.4f} (law {p[0]:.4f}, {abs(freq[0] - p[0]) / sigma0:.1f} sigma), "
                  f"TV to the law {tv:.4f}, TV to uniform {tv_uniform:.4f}")
            self.assertLess(abs(freq[0] - p[0]), 5 * sigma0)
            self.assertLess(tv, 0.03)
            if a < 1:
                self.assertGreater(tv_uniform, 0.2, "the power law must not look uniform")

    def test_without_replacement_order(self):
        """with K = T/4 every even slot is a query: gaps are a permutation, the first drawn the likeliest small"""
        T, kv = 64, 16
        rng = mqar.random.Random(5)
        w = mqar.gap_weights((T - 2 * kv) // 2, 0.01)
        first = 0
        for _ in range(2000):
            gaps = mqar.sample_gaps(rng, w, kv)
            self.assertEqual(sorted(gaps), list(range(16)))
            first += gaps[0] == 0
        print(f"      K=T/4: gap 0 drawn first in {first / 2000:.3f} of examples (law {w[0] / sum(w):.3f})")
        self.assertLess(abs(first / 2000 - w[0] / sum(w)), 0.04)

    def test_refusals(self):
        for T, kv in ((64, 17), (63, 4), (64, 0)):
            with self.assertRaises(ValueError):
                mqar.check_params(T, V, kv)
        with self.assertRaises(ValueError):
            mqar.check_params(64, 16, 8)  # only 7 keys in the lower half


class TestShards(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.T = 128
        cls.kw = dict(train_per_count=300, val_per_count=20, test_per_count=100, seed=7, quiet=True)
        cls.dir1 = os.path.join(cls.tmp.name, "a")
        cls.meta = mqar.build(cls.dir1, cls.T, workers=1, **cls.kw)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def shard(self, name, d=None):
        return os.path.join(d or self.dir1, name)

    def test_splits_read_back(self):
        """train/val/test shards and masks read back by data/masks.py: counts, answers, masks"""
        kvs = mqar.default_kv_pairs(self.T)
        self.assertEqual(kvs, [4, 8, 16, 32])
        train = read_examples(self.shard("mqar_train_000000.bin"), self.T)
        self.assertEqual(len(train), 300 * len(kvs))
        per_kv = collections.Counter(sum(m) for _, m in train)
        self.assertEqual(dict(per_kv), {k: 300 for k in kvs})
        # shuffled together: the first 100 examples hold several pair counts
        self.assertGreater(len({sum(m) for _, m in train[:100]}), 2)
        bad = [b for t, m in train for b in decode(t, m, sum(m))]
        for kv in kvs:
            test = read_examples(self.shard(f"mqar_test_kv{kv}_000000.bin"), self.T)
            self.assertEqual(len(test), 100)
            bad += [b for t, m in test for b in decode(t, m, kv)]
            self.assertTrue(all(sum(m) == kv for _, m in test))
        print(f"      {len(train)} train + {100 * len(kvs)} test examples decoded, {len(bad)} problems")
        self.assertEqual(bad, [])
        with open(self.shard("meta.json")) as f:
            meta = json.load(f)
        self.assertEqual(meta["shards"]["mqar_train_000000.bin"]["tokens"], 300 * len(kvs) * self.T + 1)
        self.assertEqual(meta["shards"]["mqar_test_kv32_000000.bin"]["answers"], 3200)

    def test_rows_are_whole_examples(self):
        """llmc/dataloader.h's cut (batches of B*T+1 at multiples of B*T, rows of T): a row is one example"""
        tokens = masks.read_shard_tokens(self.shard("mqar_val_000000.bin"))
        mask = masks.read_mask(self.shard("mqar_val_000000.bin"))
        T, B = self.T, 4
        n_examples = (len(tokens) - 1) // T
        n_batches = (len(tokens) - 1) // (B * T)
        self.assertEqual(n_batches * B, n_examples, "every example falls in a batch")
        counted = 0
        for b in range(n_batches):
            off = b * B * T
            for r in range(B):
                row = off + r * T
                targets_mask = mask[row + 1:row + T + 1]  # the mask byte of target t is that of token t+1
                self.assertEqual(targets_mask[-1], 0, "the row's last target (the next example's first token)")
                ex = tokens[row:row + T]
                self.assertEqual(decode(ex, mask[row:row + T], sum(mask[row:row + T])), [])
                counted += sum(targets_mask)
        self.assertEqual(counted, sum(mask))
        print(f"      {n_batches} batches of {B} x {T}: {counted} counted targets, all inside their own row")

    def test_deterministic_and_held_out(self):
        """same seed: same bytes with 2 workers; another seed: other bytes; no test example in train"""
        dir2 = os.path.join(self.tmp.name, "b")
        mqar.build(dir2, self.T, workers=2, **self.kw)
        names = sorted(f for f in os.listdir(self.dir1) if f.startswith("mqar_"))
        self.assertEqual(names, sorted(f for f in os.listdir(dir2) if f.startswith("mqar_")))
        for fn in names:
            with open(self.shard(fn), "rb") as a, open(self.shard(fn, dir2), "rb") as b:
                self.assertEqual(a.read(), b.read(), fn)
        dir3 = os.path.join(self.tmp.name, "c")
        mqar.build(dir3, self.T, workers=1, **dict(self.kw, seed=8))
        with open(self.shard("mqar_train_000000.bin"), "rb") as a, \
                open(self.shard("mqar_train_000000.bin", dir3), "rb") as b:
            self.assertNotEqual(a.read(), b.read())
        train = {bytes(t) for t, _ in read_examples(self.shard("mqar_train_000000.bin"), self.T)}
        shared = 0
        for kv in mqar.default_kv_pairs(self.T):
            shared += sum(bytes(t) in train for t, _ in
                          read_examples(self.shard(f"mqar_test_kv{kv}_000000.bin"), self.T))
        print(f"      {len(names)} files equal with 1 and 2 workers; seed 8 differs; {shared} test examples in train")
        self.assertEqual(shared, 0)

    def test_trainer_reads_it(self):
        """./train_mamba2 -M 1 trains 3 steps on the shards (vocab 8192, rows of T): loss over the answers only"""
        trainer = os.path.join(ROOT, "train_mamba2")
        if not os.access(trainer, os.X_OK):
            self.skipTest("./train_mamba2 not built (make train_mamba2)")
        d = self.dir1
        with tempfile.TemporaryDirectory() as out:
            cmd = [trainer, "-i", self.shard("mqar_train_000000.bin"), "-j", self.shard("mqar_val_000000.bin"),
                   "-e", "d_model=16,n_layer=1,d_state=8,headdim=8,chunk=16,vocab=8192", "-b", "2", "-t",
                   str(self.T), "-x", "3", "-v", "3", "-m", "2", "-s", "0", "-M", "1", "-o", out]
            r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
            log = open(os.path.join(out, "main.log")).read() if os.path.exists(os.path.join(out, "main.log")) else ""
        self.assertEqual(r.returncode, 0, (r.stdout + r.stderr)[-800:])
        val = [float(x.split("tel:")[1]) for x in log.split() if x.startswith("tel:")]
        print(f"      trainer exit 0, val loss over answers {val}, (ln 8192 = 9.01)")
        self.assertTrue(val and 8.0 < val[-1] < 10.0, log)
        del d


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    runner = unittest.TextTestRunner(stream=io.StringIO(), resultclass=CountingResult, verbosity=0)
    result = runner.run(suite)
    for test, tb in result.failures + result.errors:
        print(f"\n--- {test.id()}\n{tb}")
    failed = len(result.failures) + len(result.errors)
    print(f"{len(result.passed)} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
