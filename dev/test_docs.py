"""
test_docs.py: the pages in doc/ name only things that exist, so they cannot drift silently from the code.

Conventions the pages follow (and this script checks), in Markdown outside fenced code blocks:
  * a function is written in backticks with empty parentheses, `ssd_head_backward()`, or listed in backticks on a
    line that starts with "Functions:" (bold allowed: **Functions:**). Each must have a definition in a .c, .h, .cu
    or .cuh file of the repository: a line that starts at column 0 with a return type and then `name(`, and does
    not end with ';' (a prototype or a call does not count), or `name(` at column 0 after a line holding only the
    type (`__global__ static void __launch_bounds__(256)`).
  * a file is written in backticks as a path with one of the extensions below, `train_mamba2.c`, `llmc/ssd.cuh`;
    it must exist relative to the repository root or to the page's folder.
  * links [text](target) and images ![alt](target) with a relative target must exist relative to the page's folder.
  * a fenced block opened with ```c FILE (language c, then a file) quotes FILE: each of its lines, with runs of
    white space collapsed, must occur in FILE (lines that are just "..." mark an elision and are skipped).
Spans in backticks that are neither (math, expressions like `exp(cum_i)`, variables like `dt_bias`) are not checked.

Usage: python3 dev/test_docs.py [PAGE.md ...]      (default: every doc/*.md)
It first checks itself on a page with a fake function, a missing file, a missing image and a wrong quote, which
must all fail. Prints every check and closes with "N passed, N failed"; exits 1 on any failure.
"""
import glob
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE_EXTS = (".c", ".h", ".cu", ".cuh")
FILE_EXTS = ("c", "h", "cu", "cuh", "py", "md", "sh", "png", "txt")

FENCE = re.compile(r"^\s*(```|~~~)(.*)$")
BACKTICK = re.compile(r"`([^`\n]+)`")
FUNC_REF = re.compile(r"^([A-Za-z_]\w*)\(\)$")
IDENT = re.compile(r"^[A-Za-z_]\w*$")
PATH_REF = re.compile(r"^[\w.\-/]+\.(?:%s)$" % "|".join(FILE_EXTS))
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FUNCTIONS_LINE = re.compile(r"^\s*(\*\*)?Functions:")
# a definition: type words (with * and qualifiers) at column 0, then the name and "("
DEFINITION = re.compile(r"^(?!#|return\b|else\b|if\b)(?:[A-Za-z_]\w*[\s*]+)+\**([A-Za-z_]\w*)\s*\(")
# or the name alone at column 0 after a line holding only the type (CUDA kernels with __launch_bounds__)
NAME_FIRST = re.compile(r"^([A-Za-z_]\w*)\s*\(")
TYPE_LINE = re.compile(r"^(?:__global__|static|inline|void|int|float|double|real)\b[\w\s*]*(?:__launch_bounds__\([^()]*\))?\s*$")


def code_files():
    out = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if not d.startswith(".") and d != "__pycache__"]
        out += [os.path.join(dirpath, f) for f in filenames if f.endswith(CODE_EXTS)]
    return sorted(out)


def definitions():
    """name -> the files (relative to the root) that define it"""
    defs = {}
    for path in code_files():
        rel = os.path.relpath(path, ROOT)
        type_line_before = False  # "__global__ static void __launch_bounds__(256)" or "static void": name follows
        with open(path, errors="replace") as f:
            for line in f:
                m = DEFINITION.match(line)
                if m and m.group(1) != "__launch_bounds__" and not line.rstrip().endswith(";"):
                    defs.setdefault(m.group(1), set()).add(rel)
                m = NAME_FIRST.match(line)
                if type_line_before and m and not line.rstrip().endswith(";"):
                    defs.setdefault(m.group(1), set()).add(rel)
                type_line_before = bool(TYPE_LINE.match(line))
    return defs


def squash(s):
    return " ".join(s.split())


def parse_page(text):
    """(functions, files, links, quotes) named by a page; each item carries its line number"""
    functions, files, links, quotes = [], [], [], []
    fence, quote_file, quote_lines, quote_start = None, None, [], 0
    for no, line in enumerate(text.splitlines(), 1):
        m = FENCE.match(line)
        if m:
            if fence is None:
                fence = m.group(1)
                info = m.group(2).split()
                quote_file = info[1] if len(info) >= 2 and info[0] == "c" else None
                quote_lines, quote_start = [], no
            elif m.group(1) == fence and not m.group(2).strip():
                if quote_file:
                    quotes.append((quote_start, quote_file, quote_lines))
                fence = None
            continue
        if fence is not None:
            if quote_file:
                quote_lines.append(line)
            continue
        in_functions_line = bool(FUNCTIONS_LINE.match(line))
        for span in BACKTICK.findall(line):
            span = span.strip()
            m = FUNC_REF.match(span)
            if m:
                functions.append((no, m.group(1)))
            elif in_functions_line and IDENT.match(span):
                functions.append((no, span))
            elif PATH_REF.match(span):
                files.append((no, span))
        for target in LINK.findall(line):
            if not re.match(r"^[a-z]+:", target) and not target.startswith("#"):
                links.append((no, target.split("#")[0]))
    return functions, files, links, quotes


class Report:
    def __init__(self, quiet=False):
        self.passed, self.failed, self.quiet = 0, 0, quiet

    def check(self, ok, what):
        if ok:
            self.passed += 1
        else:
            self.failed += 1
        if not self.quiet:
            print(f"{'ok  ' if ok else 'FAIL'} {what}")


def check_page(page, defs, rep):
    with open(page) as f:
        text = f.read()
    here = os.path.dirname(os.path.abspath(page))
    name = os.path.relpath(page, ROOT) if os.path.abspath(page).startswith(ROOT) else page
    functions, files, links, quotes = parse_page(text)
    seen = set()
    for no, fn in functions:
        if fn in seen:
            continue
        seen.add(fn)
        where = defs.get(fn)
        rep.check(where is not None, f"{name}:{no}: function {fn}() " +
                  (f"defined in {', '.join(sorted(where))}" if where else "has no definition in any .c/.h/.cu/.cuh file"))
    for no, path in files:
        if path in seen:
            continue
        seen.add(path)
        ok = os.path.exists(os.path.join(ROOT, path)) or os.path.exists(os.path.join(here, path))
        rep.check(ok, f"{name}:{no}: file {path} " + ("exists" if ok else "does not exist (from the root or the page)"))
    for no, target in links:
        kind = "image" if target.endswith(".png") else "link"
        ok = os.path.exists(os.path.join(here, target))
        rep.check(ok, f"{name}:{no}: {kind} {target} " + ("exists" if ok else "does not exist"))
    for no, qfile, lines in quotes:
        src = os.path.join(ROOT, qfile)
        if not os.path.isfile(src):
            rep.check(False, f"{name}:{no}: quote of {qfile}: no such file")
            continue
        with open(src, errors="replace") as f:
            code = [squash(l) for l in f]
        missing = [l for l in lines if squash(l) and squash(l) != "..." and
                   not any(squash(l) in c for c in code)]
        rep.check(not missing, f"{name}:{no}: quote of {qfile} ({len(lines)} lines) " +
                  ("found" if not missing else f"has lines not in the file: {missing[0].strip()!r}"))


def self_test(defs, rep):
    """the checker must fail on a page naming things that do not exist"""
    fake = ("# fake\nFunctions: `no_such_function_xyz`\nsee `also_not_defined_abc()` and `dev/no_such_file.c`\n"
            "![gone](img/no_such_picture.png)\n```c train_mamba2.c\nthis line is not in the trainer;\n```\n"
            "but `ssd_head_backward()` is real.\n")
    with tempfile.TemporaryDirectory() as tmp:
        page = os.path.join(tmp, "fake.md")
        with open(page, "w") as f:
            f.write(fake)
        inner = Report(quiet=True)
        check_page(page, defs, inner)
    rep.check(inner.failed == 5 and inner.passed == 1,
              f"self-test: a page with 5 wrong names and 1 right one gives {inner.failed} failures and "
              f"{inner.passed} pass (want 5 and 1)")


def main():
    pages = sys.argv[1:] or sorted(glob.glob(os.path.join(ROOT, "doc", "*.md")))
    rep = Report()
    defs = definitions()
    self_test(defs, rep)
    if not pages:
        rep.check(False, "no pages found in doc/: is this the repository root?")
    for page in pages:
        if not os.path.isfile(page):
            rep.check(False, f"{page}: no such page")
            continue
        check_page(page, defs, rep)
    print(f"{rep.passed} passed, {rep.failed} failed")
    sys.exit(1 if rep.failed else 0)


if __name__ == "__main__":
    main()
