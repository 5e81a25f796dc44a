"""
Download the public corpora that data/prepare.py can tokenize. Standard library only.

    python3 data/download.py tinyshakespeare             # ~1 MB
    python3 data/download.py tinystories                 # ~2.2 GB (TinyStoriesV2-GPT4 train + valid .txt)
    python3 data/download.py fineweb-edu --files 2       # parquet files of FineWeb-Edu sample-10BT, ~2 GB each
    python3 data/download.py --url URL --out FILE        # any http(s):// or file:// URL

Files go to --dir (default data/downloads/<corpus>/). A download is written to FILE.part and renamed when
complete; an interrupted download resumes from FILE.part with an HTTP Range request; transient failures
(connection reset, timeouts, HTTP 5xx/429) are retried with exponential backoff. When the host cannot be
reached at all (no network) the corpus is skipped with a message saying what to fetch by hand and where to
put it, and the exit status stays 0 so scripted setups continue offline.

FineWeb-Edu is published only as parquet (columnar, snappy-compressed). A parquet reader is not part of the
standard library and this repository does not ship one, so prepare.py cannot read those files directly.
Convert them to jsonl on a machine with pyarrow, then tokenize the jsonl folder:
    python3 -c "import pyarrow.parquet as pq, json, sys; t = pq.read_table(sys.argv[1], columns=['text']);
                [print(json.dumps({'text': s})) for s in t.column('text').to_pylist()]" X.parquet > X.jsonl
    python3 data/prepare.py --input data/downloads/fineweb-edu/ --name fineweb_edu --tokenizer neox ...
"""

import argparse
import os
import socket
import sys
import time
import urllib.error
import urllib.request

HF = "https://huggingface.co/datasets"
CORPORA = {
    "tinyshakespeare": [
        ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
         "tinyshakespeare.txt", "auto", "blank-line"),
    ],
    "tinystories": [
        (f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-valid.txt",
         "TinyStoriesV2-GPT4-valid.txt", "val", "eot"),
        (f"{HF}/roneneldan/TinyStories/resolve/main/TinyStoriesV2-GPT4-train.txt",
         "TinyStoriesV2-GPT4-train.txt", "train", "eot"),
    ],
}
# sample-10BT is split into parquet files sample/10BT/000_00000.parquet, 001_00000.parquet, ...
FINEWEB_URL = f"{HF}/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/{{:03d}}_00000.parquet"


class OfflineError(Exception):
    """the host could not be reached at all: no network, DNS failure, connection refused"""


class DownloadError(Exception):
    """the server answered, but not with the file (404, bad range, size mismatch), or retries ran out"""


def _is_offline(err):
    reason = getattr(err, "reason", err)
    return isinstance(reason, (socket.gaierror, ConnectionRefusedError)) or (
        isinstance(reason, OSError) and getattr(reason, "errno", None) in (101, 113))  # unreachable


def _fetch_once(url, part, timeout, log):
    """one attempt: append to part from its current size; returns when the file is complete"""
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"User-Agent": "mamba2.c-data/1"})
    if have > 0 and not url.startswith("file:"):
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have > 0:
            return  # range starts at the end: the .part file already holds everything
        raise
    with resp:
        status = getattr(resp, "status", 200)
        if have > 0 and status != 206:
            log(f"server ignored the resume request (status {status}); starting over")
            have = 0
        length = resp.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        with open(part, "ab" if have > 0 else "wb") as f:
            got = have
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
        if expected is not None and got != expected:
            raise ConnectionResetError(f"connection closed after {got} of {expected} bytes")


def download(url, dest, retries=5, backoff=1.0, timeout=60.0, quiet=False):
    """fetch url to dest (via dest.part, resumable); returns dest. Raises OfflineError or DownloadError."""
    def log(msg):
        if not quiet:
            print(f"{os.path.basename(dest)}: {msg}", file=sys.stderr)

    if os.path.exists(dest):
        log("already downloaded")
        return dest
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    part = dest + ".part"
    last = None
    for attempt in range(retries + 1):
        if attempt > 0:
            delay = backoff * 2 ** (attempt - 1)
            log(f"attempt {attempt + 1}/{retries + 1} in {delay:.1f} s after: {last}")
            time.sleep(delay)
        try:
            _fetch_once(url, part, timeout, log)
            os.replace(part, dest)
            log(f"done, {os.path.getsize(dest)} bytes")
            return dest
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code} {e.reason}"
            if e.code < 500 and e.code != 429:
                raise DownloadError(f"{url}: {last}") from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, FileNotFoundError):
                raise DownloadError(f"{url}: no such file") from None
            if _is_offline(e):
                raise OfflineError(f"{url}: cannot reach the host ({e.reason})") from None
            last = str(e.reason)
        except (ConnectionError, TimeoutError, socket.timeout, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise DownloadError(f"{url}: {e}") from None
            last = str(e)
    raise DownloadError(f"{url}: gave up after {retries + 1} attempts, last error: {last} "
                        f"(the partial file {part} is kept; run again to resume)")


def corpus_files(name, files=1):
    """[(url, filename, split, doc rule)] of a corpus"""
    if name == "fineweb-edu":
        return [(FINEWEB_URL.format(i), f"{i:03d}_00000.parquet", "auto", "parquet") for i in range(files)]
    if name not in CORPORA:
        sys.exit(f"error: unknown corpus {name!r}; choose one of {', '.join(list(CORPORA) + ['fineweb-edu'])}")
    return CORPORA[name]


def download_corpus(name, cache_dir, files=1, **kw):
    """downloads every file of a corpus into cache_dir/name; returns their paths, or None when offline"""
    paths = []
    for url, fn, _, _ in corpus_files(name, files):
        dest = os.path.join(cache_dir, name, fn)
        try:
            paths.append(download(url, dest, **kw))
        except OfflineError as e:
            print(f"skipped {name}: offline? {e}.\n  To use it without this script, fetch {url}\n"
                  f"  by other means and save it as {dest}", file=sys.stderr)
            return None
    return paths


def corpus_sources(name, cache_dir):
    """for prepare.py: download a corpus (if needed) and describe its files as corpora.Source objects"""
    import corpora
    if name == "fineweb-edu":
        sys.exit("error: FineWeb-Edu is published as parquet, which prepare.py cannot read with the standard "
                 "library. Download with `python3 data/download.py fineweb-edu`, convert the parquet files to "
                 ".jsonl with pyarrow (see the docstring of data/download.py), then run prepare.py --input FOLDER.")
    if download_corpus(name, cache_dir) is None:
        sys.exit(f"error: {name} is not available offline; see the message above")
    return [corpora.Source(os.path.join(cache_dir, name, fn), f"{name}/{fn}", rule, split)
            for _, fn, split, rule in corpus_files(name)]


def main(argv=None):
    p = argparse.ArgumentParser(description="Download corpora for data/prepare.py (resumable, with retries).")
    p.add_argument("corpus", nargs="*", help="tinyshakespeare, tinystories, fineweb-edu")
    p.add_argument("--dir", default=os.path.join("data", "downloads"), help="download folder (default data/downloads)")
    p.add_argument("--files", type=int, default=1, help="fineweb-edu: how many parquet files (default 1)")
    p.add_argument("--url", help="download this URL instead of a named corpus")
    p.add_argument("--out", help="with --url: the destination file")
    p.add_argument("--retries", type=int, default=5)
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling")
    p.add_argument("--timeout", type=float, default=60.0, help="socket timeout in seconds")
    args = p.parse_args(argv)
    kw = {"retries": args.retries, "backoff": args.backoff, "timeout": args.timeout}
    if args.url:
        if not args.out:
            p.error("--url needs --out FILE")
        try:
            download(args.url, args.out, **kw)
        except OfflineError as e:
            print(f"skipped: offline? {e}", file=sys.stderr)
        except DownloadError as e:
            sys.exit(f"error: {e}")
        return
    if not args.corpus:
        p.error("name a corpus (tinyshakespeare, tinystories, fineweb-edu) or give --url and --out")
    for name in args.corpus:
        try:
            download_corpus(name, args.dir, args.files, **kw)
        except DownloadError as e:
            sys.exit(f"error: {e}")
        if name == "fineweb-edu":
            print("note: FineWeb-Edu is parquet; convert to .jsonl before prepare.py (see data/download.py)",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
