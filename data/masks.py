"""
Masked targets for token shards (doc/packing.md): writes the companion file X.bin.mask of a shard X.bin.

Mask file: 256 int32 little-endian header (magic 20240607, version 1, the shard's token count, zeros), then one
byte per token of the shard: 1 = predicting this token counts in the loss, 0 = no loss. The shard itself is not
touched, so llm.c's loader (and every mamba2.c program without -M 1) reads it as before.

    python3 data/masks.py 'data/x/x_*.bin' --no-loss 0          # predicting token 0 (say, padding) does not count
    python3 data/masks.py 'data/x/x_*.bin'                      # all ones: every target counts (what -M 0 does)

Then train with -M 1 (and eval with -M 1). From Python, write_mask(shard_path, mask) takes any sequence of 0/1,
one per token, e.g. built from the documents' structure (the prompt part of instruction data: 0).
"""
import argparse
import array
import glob
import struct
import sys

SHARD_MAGIC = 20240520
MASK_MAGIC = 20240607
HEADER_INTS = 256


def read_shard_tokens(path):
    """the token ids of a shard (data/prepare.py's format, version 1 = uint16, 2 = uint32)"""
    with open(path, "rb") as f:
        header = struct.unpack("<256i", f.read(HEADER_INTS * 4))
        if header[0] != SHARD_MAGIC:
            raise ValueError(f"{path}: bad magic {header[0]}, expected {SHARD_MAGIC} (not a token shard)")
        if header[1] not in (1, 2):
            raise ValueError(f"{path}: unknown version {header[1]}")
        tokens = array.array("H" if header[1] == 1 else "I")
        tokens.frombytes(f.read())
    if sys.byteorder != "little":
        tokens.byteswap()
    if len(tokens) != header[2]:
        raise ValueError(f"{path}: header says {header[2]} tokens, the file holds {len(tokens)}")
    return tokens


def write_mask(shard_path, mask):
    """writes shard_path + '.mask'; mask: one 0/1 per token of the shard"""
    n = len(read_shard_tokens(shard_path))
    data = bytes(mask)
    if len(data) != n:
        raise ValueError(f"{shard_path}: {n} tokens, but the mask has {len(data)} entries")
    if any(b > 1 for b in data):
        raise ValueError(f"{shard_path}: a mask entry is not 0 or 1")
    header = [0] * HEADER_INTS
    header[0], header[1], header[2] = MASK_MAGIC, 1, n
    with open(shard_path + ".mask", "wb") as f:
        f.write(struct.pack("<256i", *header))
        f.write(data)
    return shard_path + ".mask"


def read_mask(shard_path):
    """the mask bytes of shard_path's .mask file, checked against the shard"""
    n = len(read_shard_tokens(shard_path))
    with open(shard_path + ".mask", "rb") as f:
        header = struct.unpack("<256i", f.read(HEADER_INTS * 4))
        data = f.read()
    if header[0] != MASK_MAGIC or header[1] != 1 or header[2] != n or len(data) != n:
        raise ValueError(f"{shard_path}.mask: not a version-1 mask of this shard's {n} tokens")
    return data


def main(argv=None):
    p = argparse.ArgumentParser(description="write X.bin.mask beside token shards (doc/packing.md)")
    p.add_argument("shards", help="a shard or a glob of shards (quote it)")
    p.add_argument("--no-loss", default="", help="comma-separated token ids whose prediction does not count")
    args = p.parse_args(argv)
    paths = sorted(glob.glob(args.shards))
    if not paths:
        sys.exit(f"no shard matches {args.shards}")
    no_loss = {int(x) for x in args.no_loss.split(",") if x.strip()}
    for path in paths:
        tokens = read_shard_tokens(path)
        out = write_mask(path, bytes(0 if t in no_loss else 1 for t in tokens))
        masked = sum(1 for t in tokens if t in no_loss)
        print(f"{out}: {len(tokens)} tokens, {masked} not counted")


if __name__ == "__main__":
    main()
