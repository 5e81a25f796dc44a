"""
Writes llmc/unicode_tables.h: the code-point classes the C BPE encoder (llmc/bpe.h) needs, generated from this
Python's unicodedata so that C and data/text_tokenizers.py classify every character alike.

    python3 data/make_unicode_tables.py            (re)writes llmc/unicode_tables.h
    python3 data/make_unicode_tables.py --check    exits 1 if the committed header differs from what it would write

Tables (sorted, non-overlapping inclusive [lo, hi] ranges):
  UNI_LETTER   general category L*   (\\p{L} of the GPT-2 pre-tokenizer)
  UNI_NUMBER   general category N*   (\\p{N})
  UNI_NFC_UNSAFE  characters that NFC normalization may change or combine with a neighbour: those with a nonzero
               canonical combining class, those NFC maps to something else on their own, the second characters of
               canonical pairs (they may compose with the character before them), and the Hangul V and T jamo.
               A text with none of them is its own NFC form, so the C encoder can skip normalizing it.
  UNI_CCC      canonical combining classes: [lo, hi] ranges of one nonzero class (value in .cls)
  UNI_DECOMP   full canonical decompositions (NFD of one character, Hangul syllables excepted: they are computed),
               as (code point, offset, length) into UNI_DECOMP_DATA
  UNI_COMP     the primary composites: (first, second) -> composite, sorted by (first, second), what NFC's
               composition step looks up (Hangul again computed)
The whitespace class is the fixed list of the Unicode White_Space property (text_tokenizers.WHITE_SPACE).
"""
import os
import sys
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import text_tokenizers as T  # noqa: E402

OUT = os.path.join(HERE, "..", "llmc", "unicode_tables.h")


def ranges_of(pred):
    out, start = [], None
    for cp in range(0x110000):
        inside = pred(cp)
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, 0x10FFFF))
    return out


def nfc_unsafe_set():
    unsafe = set()
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        ch = chr(cp)
        if unicodedata.combining(ch) != 0 or unicodedata.normalize("NFC", ch) != ch:
            unsafe.add(cp)
        d = unicodedata.decomposition(ch)
        if d and not d.startswith("<"):
            parts = d.split()
            if len(parts) == 2:
                unsafe.add(int(parts[1], 16))
    unsafe.update(range(0x1161, 0x1176))  # Hangul V jamo: L + V -> LV
    unsafe.update(range(0x11A8, 0x11C3))  # Hangul T jamo: LV + T -> LVT
    return unsafe


def nfc_data():
    ccc = []
    for cp in range(0x110000):
        c = unicodedata.combining(chr(cp)) if not 0xD800 <= cp <= 0xDFFF else 0
        if c:
            if ccc and ccc[-1][1] == cp - 1 and ccc[-1][2] == c:
                ccc[-1][1] = cp
            else:
                ccc.append([cp, cp, c])
    decomp, data, comp = [], [], []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF or 0xAC00 <= cp <= 0xD7A3:
            continue
        ch = chr(cp)
        d = unicodedata.normalize("NFD", ch)
        if d != ch:
            decomp.append((cp, len(data), len(d)))
            data.extend(ord(x) for x in d)
        raw = unicodedata.decomposition(ch)
        if raw and not raw.startswith("<"):
            parts = [int(x, 16) for x in raw.split()]
            if len(parts) == 2 and unicodedata.normalize("NFC", ch) == ch:
                comp.append((parts[0], parts[1], cp))
    comp.sort()
    lines = [f"static const UniCcc UNI_CCC[{len(ccc)}] = {{"]
    for i in range(0, len(ccc), 6):
        lines.append("    " + ", ".join(f"{{0x{a:X},0x{b:X},{c}}}" for a, b, c in ccc[i:i + 6]) + ",")
    lines.append(f"}};\n#define UNI_CCC_COUNT {len(ccc)}\n")
    lines.append(f"static const uint32_t UNI_DECOMP_DATA[{len(data)}] = {{")
    for i in range(0, len(data), 12):
        lines.append("    " + ",".join(f"0x{x:X}" for x in data[i:i + 12]) + ",")
    lines.append("};")
    lines.append(f"static const UniDecomp UNI_DECOMP[{len(decomp)}] = {{")
    for i in range(0, len(decomp), 6):
        lines.append("    " + ", ".join(f"{{0x{a:X},{b},{c}}}" for a, b, c in decomp[i:i + 6]) + ",")
    lines.append(f"}};\n#define UNI_DECOMP_COUNT {len(decomp)}\n")
    lines.append(f"static const UniComp UNI_COMP[{len(comp)}] = {{")
    for i in range(0, len(comp), 5):
        lines.append("    " + ", ".join(f"{{0x{a:X},0x{b:X},0x{c:X}}}" for a, b, c in comp[i:i + 5]) + ",")
    lines.append(f"}};\n#define UNI_COMP_COUNT {len(comp)}")
    return "\n".join(lines)


def table(name, ranges):
    lines = [f"static const UniRange {name}[{len(ranges)}] = {{"]
    row = []
    for lo, hi in ranges:
        row.append(f"{{0x{lo:X},0x{hi:X}}}")
        if len(row) == 6:
            lines.append("    " + ", ".join(row) + ",")
            row = []
    if row:
        lines.append("    " + ", ".join(row) + ",")
    lines.append("};")
    lines.append(f"#define {name}_COUNT {len(ranges)}")
    return "\n".join(lines)


def render():
    letters = ranges_of(lambda cp: unicodedata.category(chr(cp))[0] == "L")
    numbers = ranges_of(lambda cp: unicodedata.category(chr(cp))[0] == "N")
    unsafe = nfc_unsafe_set()
    nfc = ranges_of(lambda cp: cp in unsafe)
    ws = sorted(ord(c) for c in T.WHITE_SPACE)
    head = f"""/*
 * unicode_tables.h: GENERATED by data/make_unicode_tables.py from Python's unicodedata (Unicode
 * {unicodedata.unidata_version}); do not edit. A table of data, not code: regenerate it with that script (and
 * `--check` tells whether it is current). Used by llmc/bpe.h for the GPT-2 pre-tokenizer's classes (as
 * data/text_tokenizers.py builds them) and to know when a text may change under NFC.
 */
#ifndef MAMBA2_UNICODE_TABLES_H
#define MAMBA2_UNICODE_TABLES_H

#include <stdint.h>

typedef struct {{ uint32_t lo, hi; }} UniRange;
typedef struct {{ uint32_t lo, hi; uint8_t cls; }} UniCcc;
typedef struct {{ uint32_t cp; uint16_t offset; uint8_t len; }} UniDecomp;
typedef struct {{ uint32_t first, second, composite; }} UniComp;

#define UNI_UNICODE_VERSION "{unicodedata.unidata_version}"
static const uint32_t UNI_WHITE_SPACE[{len(ws)}] = {{{", ".join(f"0x{c:X}" for c in ws)}}};
#define UNI_WHITE_SPACE_COUNT {len(ws)}
"""
    return (head + "\n" + table("UNI_LETTER", letters) + "\n\n" + table("UNI_NUMBER", numbers) + "\n\n"
            + table("UNI_NFC_UNSAFE", nfc) + "\n\n" + nfc_data() + "\n\n#endif\n")


def main():
    text = render()
    if "--check" in sys.argv:
        try:
            with open(OUT, encoding="utf-8") as f:
                same = f.read() == text
        except OSError:
            same = False
        print("llmc/unicode_tables.h is " + ("current" if same else "OUT OF DATE (run python3 data/make_unicode_tables.py)"))
        sys.exit(0 if same else 1)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {OUT}: {text.count(chr(10))} lines")


if __name__ == "__main__":
    main()
