"""
Where documents come from, for data/prepare.py. Standard library only.

A corpus is a list of sources; a source is one file plus a rule for cutting it into documents and a split
("auto": decided per document by val_split.is_val, or "train" / "val": a file the dataset publishes as
that split). iter_documents() yields (key, text) pairs in a fixed order; the key names the document
(relative path, plus "#n" for the n-th document of a file) and decides the auto split.

Document rules:
  file        the whole file is one document (.txt, .md, .py)
  blank-line  paragraphs separated by one or more blank lines (tinyshakespeare: one file, many speeches)
  eot         documents separated by a line holding only <|endoftext|> (TinyStories' .txt files)
  jsonl       one JSON object per line, the document is its "text" field
"""

import json
import os
import re
import sys
import sysconfig

TEXT_EXTENSIONS = (".txt", ".md", ".jsonl")


class Source:
    def __init__(self, path, key, rule, split="auto"):
        self.path = path    # file on disk
        self.key = key      # stable name: relative path with '/' separators
        self.rule = rule    # file | blank-line | eot | jsonl
        self.split = split  # auto | train | val

    def size(self):
        return os.path.getsize(self.path)


def _skip_dir(name):
    # site-packages: third-party code, differs between machines. *data: test fixtures (lib2to3's Python 2
    # files, tokenizer and encoding tests) that are not ordinary source.
    return name in ("site-packages", "dist-packages", "__pycache__") or name.endswith("data")


def stdlib_sources():
    """the .py files of the standard library of the python3 running this script, sorted by relative path"""
    root = sysconfig.get_paths()["stdlib"]
    sources = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not _skip_dir(d)]
        for fn in filenames:
            if fn.endswith(".py"):
                path = os.path.join(dirpath, fn)
                key = os.path.relpath(path, root).replace(os.sep, "/")
                sources.append(Source(path, "stdlib/" + key, "file"))
    sources.sort(key=lambda s: s.key)
    if not sources:
        sys.exit(f"error: found no .py files under the standard library path {root}")
    return sources


def input_sources(path, rule="auto"):
    """a file, or a folder searched recursively for .txt/.md/.jsonl files (sorted by relative path)"""
    if os.path.isfile(path):
        files = [(path, os.path.basename(path))]
    elif os.path.isdir(path):
        files = []
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fn in filenames:
                if fn.endswith(TEXT_EXTENSIONS):
                    full = os.path.join(dirpath, fn)
                    files.append((full, os.path.relpath(full, path).replace(os.sep, "/")))
        files.sort(key=lambda f: f[1])
        if not files:
            sys.exit(f"error: folder {path} holds no .txt, .md or .jsonl files")
    else:
        sys.exit(f"error: --input {path}: no such file or folder")
    sources = []
    for full, key in files:
        r = rule
        if r == "auto":
            r = "jsonl" if full.endswith(".jsonl") else ("blank-line" if len(files) == 1 else "file")
        sources.append(Source(full, key, r))
    return sources


def _read_text(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


_BLANK_LINES = re.compile(r"\n[ \t]*\n\s*")
_EOT_LINE = re.compile(r"^\s*<\|endoftext\|>\s*$", re.MULTILINE)


def iter_documents(sources, skipped):
    """yields (source, key, text); appends (path, reason) to skipped for files that are not UTF-8"""
    for src in sources:
        if src.rule == "jsonl":
            with open(src.path, "r", encoding="utf-8", errors="replace") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError as e:
                        sys.exit(f"error: {src.path}:{lineno}: not valid JSON ({e}); expected one object per line")
                    text = obj.get("text") if isinstance(obj, dict) else None
                    if not isinstance(text, str):
                        sys.exit(f"error: {src.path}:{lineno}: no string field \"text\"")
                    yield src, f"{src.key}#{lineno}", text
            continue
        text = _read_text(src.path)
        if text is None:
            skipped.append((src.path, "not UTF-8"))
            continue
        if src.rule == "file":
            if text:
                yield src, src.key, text
        else:
            pieces = _BLANK_LINES.split(text) if src.rule == "blank-line" else _EOT_LINE.split(text)
            n = 0
            for piece in pieces:
                piece = piece.strip("\n") if src.rule == "eot" else piece
                if piece.strip():
                    yield src, f"{src.key}#{n}", piece
                    n += 1
