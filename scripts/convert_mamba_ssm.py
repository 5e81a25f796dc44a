#!/usr/bin/env python3
"""
convert_mamba_ssm.py: a torch checkpoint (pytorch_model.bin, as mamba_ssm's released Mamba-2 models ship it) to
model.safetensors, WITHOUT torch (Python standard library only), so that llmc/hf_io.h can import it.

    python3 scripts/convert_mamba_ssm.py state-spaces/mamba2-130m               writes .../model.safetensors
    python3 scripts/convert_mamba_ssm.py path/pytorch_model.bin --out DIR       writes DIR/model.safetensors
                                                                                (and copies config.json beside it)

A torch .bin (torch >= 1.6) is a zip: <name>/data.pkl is a pickle of the state dict, <name>/data/<key> hold the
raw bytes of each storage, <name>/byteorder says "little". A pickle is a program: loading one with pickle.load
can run any code it names (os.system, eval, ...). So this script never lets the pickle name anything but what a
state dict needs:
  - opcodes: only the data-building ones (dicts, lists, tuples, numbers, strings, memo, MARK, GLOBAL/STACK_GLOBAL,
    REDUCE, BUILD, BINPERSID); INST, OBJ, NEWOBJ, EXT*, PERSID (text) and the rest are refused before anything runs;
  - globals: collections.OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter and the torch.*Storage
    classes, each replaced by a stand-in defined here (no torch object is ever built); any other name is refused;
  - persistent ids: only ('storage', <storage class>, key, location, numel), mapped to the zip's data/<key>.
Tensors become contiguous copies (views and transposes are gathered through their strides); two names that share a
storage (a tied lm_head) are written as two tensors. dtypes are kept (F32, F16, BF16, F64, I64, ...).
"""
import argparse
import collections
import io
import json
import os
import pickle
import pickletools
import shutil
import struct
import sys
import zipfile


class ConvertError(Exception):
    pass


# storage class name -> (safetensors dtype, bytes per element)
STORAGES = {
    "FloatStorage": ("F32", 4), "DoubleStorage": ("F64", 8), "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2), "LongStorage": ("I64", 8), "IntStorage": ("I32", 4), "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1), "ByteStorage": ("U8", 1), "BoolStorage": ("BOOL", 1), "UntypedStorage": ("U8", 1),
}

ALLOWED_OPCODES = {
    "PROTO", "FRAME", "STOP", "MARK", "POP", "POP_MARK", "DUP",
    "EMPTY_DICT", "EMPTY_LIST", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "DICT", "LIST",
    "SETITEM", "SETITEMS", "APPEND", "APPENDS",
    "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET", "MEMOIZE",
    "INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT",
    "NONE", "NEWTRUE", "NEWFALSE",
    "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "BINBYTES",
    "SHORT_BINBYTES",
    "GLOBAL", "STACK_GLOBAL", "REDUCE", "BUILD", "BINPERSID",
}


class StorageType:
    """torch.XStorage as the pickle names it: immutable, so a BUILD in one file cannot change it for the next"""
    __slots__ = ("name", "dtype", "itemsize")

    def __init__(self, name):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", STORAGES[name][0])
        object.__setattr__(self, "itemsize", STORAGES[name][1])

    def __setattr__(self, key, value):
        raise ConvertError(f"the pickle tries to set {key} on torch.{self.name}: refusing to load")

    def __setstate__(self, state):
        raise ConvertError(f"the pickle applies BUILD to torch.{self.name}: not part of a torch state dict")


class FrozenCallable:
    """an allowed global function, wrapped so that BUILD cannot set attributes on the shared object"""
    __slots__ = ("fn", "qualname")

    def __init__(self, fn, qualname):
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "qualname", qualname)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def __setattr__(self, key, value):
        raise ConvertError(f"the pickle tries to set {key} on {self.qualname}: refusing to load")

    def __setstate__(self, state):
        raise ConvertError(f"the pickle applies BUILD to {self.qualname}: not part of a torch state dict")


MAX_TENSOR_ELEMENTS = 1 << 36  # 256 G elements: far above any model this project trains
MAX_PICKLE_BYTES = 1 << 30  # the largest data.pkl read: a state dict's pickle holds metadata only


class Storage:
    def __init__(self, data, dtype, itemsize, key):
        self.data, self.dtype, self.itemsize, self.key = data, dtype, itemsize, key


class Tensor:
    """a dense tensor: dtype, shape and its contiguous little-endian bytes"""

    def __init__(self, dtype, shape, data):
        self.dtype, self.shape, self.data = dtype, tuple(shape), data


def contiguous_strides(shape):
    strides, acc = [], 1
    for n in reversed(shape):
        strides.append(acc)
        acc *= n
    return tuple(reversed(strides))


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """stand-in for torch._utils._rebuild_tensor_v2: gathers the view's elements into contiguous bytes"""
    if not isinstance(storage, Storage):
        raise ConvertError("_rebuild_tensor_v2 called without a storage (not a torch state dict?)")
    for v in (offset, *size, *stride):
        if not isinstance(v, int) or v < 0:
            raise ConvertError(f"tensor with a bad offset/size/stride {offset} {size} {stride}")
    size, stride = tuple(size), tuple(stride)
    if len(size) != len(stride) or len(size) > 8:
        raise ConvertError(f"tensor with {len(size)} sizes and {len(stride)} strides: corrupt checkpoint")
    numel = 1
    for n in size:
        numel *= n
    it = storage.itemsize
    nstore = len(storage.data) // it
    if numel == 0:
        return Tensor(storage.dtype, size, b"")
    if any(s == 0 and n > 1 for n, s in zip(size, stride)):
        raise ConvertError(f"a tensor of shape {list(size)} has stride 0 ({list(stride)}): a broadcast view (a tiny "
                           "storage read as a huge tensor) is not part of a saved state dict: refusing")
    if numel > nstore or numel > MAX_TENSOR_ELEMENTS:
        raise ConvertError(f"a tensor of shape {list(size)} has {numel} elements, its storage {storage.key} holds "
                           f"{nstore}: overlapping strides or a corrupt checkpoint: refusing")
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= nstore:
        raise ConvertError(f"a tensor of shape {list(size)} reaches element {last} of storage {storage.key}, which "
                           f"holds {nstore}: the checkpoint is corrupt")
    if stride == contiguous_strides(size) or numel == 1:
        return Tensor(storage.dtype, size, bytes(storage.data[offset * it:(offset + numel) * it]))
    # a view (transpose, slice): walk its index space in row-major order
    out = bytearray(numel * it)
    idx = [0] * len(size)
    src = storage.data
    for k in range(numel):
        pos = offset + sum(i * s for i, s in zip(idx, stride))
        out[k * it:(k + 1) * it] = src[pos * it:(pos + 1) * it]
        for d in range(len(size) - 1, -1, -1):
            idx[d] += 1
            if idx[d] < size[d]:
                break
            idx[d] = 0
    return Tensor(storage.dtype, size, bytes(out))


def rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    """stand-in for torch._utils._rebuild_parameter: an nn.Parameter is its tensor"""
    if not isinstance(data, Tensor):
        raise ConvertError("_rebuild_parameter called without a tensor")
    return data


class OrderedDictWithAttrs(collections.OrderedDict):
    """OrderedDict that accepts BUILD's state (torch stores the state dict's _metadata as an attribute)"""

    def __setstate__(self, state):
        pass  # _metadata (module versions) is not needed


ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): FrozenCallable(OrderedDictWithAttrs, "collections.OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"): FrozenCallable(rebuild_tensor_v2, "torch._utils._rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"): FrozenCallable(rebuild_parameter, "torch._utils._rebuild_parameter"),
}
for _name in STORAGES:
    ALLOWED_GLOBALS[("torch", _name)] = StorageType(_name)


def check_opcodes(pkl, where):
    """every opcode must be one a state dict needs; runs nothing"""
    try:
        for op, arg, pos in pickletools.genops(pkl):
            if op.name not in ALLOWED_OPCODES:
                raise ConvertError(f"{where}: pickle opcode {op.name} at byte {pos} is not allowed (a torch state dict "
                                   "does not need it; a pickle that uses it may run code): refusing to load")
    except ConvertError:
        raise
    except Exception as e:  # truncated or garbled pickle
        raise ConvertError(f"{where}: not a valid pickle ({e})") from None


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data, zf, prefix, where):
        super().__init__(io.BytesIO(data))
        self.zf, self.prefix, self.where = zf, prefix, where
        self.storages = {}

    def find_class(self, module, name):
        obj = ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise ConvertError(f"{self.where}: the pickle names {module}.{name}, which is not part of a torch state "
                               "dict (a pickle can run code through such names): refusing to load")
        return obj

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage" or not isinstance(pid[1], StorageType)
                or not isinstance(pid[2], str) or not isinstance(pid[4], int)):
            raise ConvertError(f"{self.where}: unexpected persistent id {pid!r} (expected ('storage', torch.XStorage, "
                               "key, location, numel))")
        st, key, numel = pid[1], pid[2], pid[4]
        if key in self.storages:
            return self.storages[key]
        if "/" in key or ".." in key:
            raise ConvertError(f"{self.where}: storage key {key!r} is not a plain name")
        member = f"{self.prefix}/data/{key}"
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise ConvertError(f"{self.where}: storage {member} is missing from the zip (truncated file?)") from None
        # the size is checked before anything is read or decompressed (a zip member can claim any size)
        if numel < 0 or numel > MAX_TENSOR_ELEMENTS or info.file_size != numel * st.itemsize:
            raise ConvertError(f"{self.where}: storage {member} holds {info.file_size} bytes, the pickle says {numel} "
                               f"elements of {st.itemsize} bytes: corrupt file")
        data = self.zf.read(member)
        # numel counts elements of the typed storage (bytes for UntypedStorage)
        if len(data) != numel * st.itemsize:
            raise ConvertError(f"{self.where}: storage {member} holds {len(data)} bytes, the pickle says {numel} "
                               f"elements of {st.itemsize} bytes: corrupt file")
        s = Storage(data, st.dtype, st.itemsize, key)
        self.storages[key] = s
        return s


def read_zip_state(path):
    """the object that <name>/data.pkl of the zip at path holds, its storages read from the zip"""
    with zipfile.ZipFile(path) as zf:
        pkls = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1:
            raise ConvertError(f"{path}: expected one <name>/data.pkl in the zip, found {pkls}")
        # sizes the zip claims are checked before anything is read: a tiny file must not make us read or allocate
        # gigabytes (a member's stored size past the file's end, or a pickle or record larger than any state dict's)
        total = os.path.getsize(path)
        for info in zf.infolist():
            if info.compress_size > total or (info.compress_type == zipfile.ZIP_STORED and
                                              info.file_size != info.compress_size):
                raise ConvertError(f"{path}: zip member {info.filename} claims {info.compress_size} stored bytes "
                                   f"({info.file_size} uncompressed) in a file of {total} bytes: a damaged zip")
        prefix = pkls[0].split("/")[0]
        if zf.getinfo(pkls[0]).file_size > MAX_PICKLE_BYTES:
            raise ConvertError(f"{path}: {pkls[0]} is {zf.getinfo(pkls[0]).file_size} bytes; a state dict's pickle "
                               f"(names, shapes, storage keys) is far smaller than {MAX_PICKLE_BYTES}: refusing")
        try:
            if zf.getinfo(f"{prefix}/byteorder").file_size > 64:
                raise ConvertError(f"{path}: {prefix}/byteorder is not a byte-order record (over 64 bytes)")
            order = zf.read(f"{prefix}/byteorder").decode(errors="replace").strip()
        except KeyError:
            order = "little"  # torch writes the record since 2.1; older files are little-endian
        if order != "little":
            raise ConvertError(f"{path}: byteorder {order!r}; only little-endian checkpoints are supported")
        data = zf.read(pkls[0])
        where = f"{path}:{pkls[0]}"
        check_opcodes(data, where)
        try:
            obj = RestrictedUnpickler(data, zf, prefix, where).load()
        except ConvertError:
            raise
        except Exception as e:
            raise ConvertError(f"{where}: could not be read as a state dict ({type(e).__name__}: {e})") from None
    return obj


def load_state_dict(path):
    """name -> Tensor from a torch zip checkpoint, without torch"""
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as f:
            head = f.read(2)
        kind = "a legacy (pre-1.6, non-zip) torch file" if head[:1] == b"\x80" else "not a torch zip checkpoint"
        raise ConvertError(f"{path}: {kind}; re-save it with torch.save (torch >= 1.6) or convert it where torch is "
                           "installed")
    try:
        obj = read_zip_state(path)
    except (ConvertError, MemoryError):
        raise  # a MemoryError here would be a size check missing above: let the fuzzer (dev/fuzz) see it
    except Exception as e:  # what the zip module raises on a damaged file: BadZipFile, CRC, undecodable names, ...
        raise ConvertError(f"{path}: a damaged zip ({type(e).__name__}: {e})") from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # training checkpoints often nest the state dict
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: the pickle holds a {type(obj).__name__}, not a state dict")
    out = collections.OrderedDict()
    for k, v in obj.items():
        if not isinstance(k, str):
            raise ConvertError(f"{path}: state dict key {k!r} is not a string")
        if isinstance(v, Tensor):
            out[k] = v
        else:
            print(f"note: {path}: skipping {k!r} ({type(v).__name__}, not a tensor)", file=sys.stderr)
    return out


def write_safetensors(path, tensors, metadata=None):
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, t in tensors.items():
        header[name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(t.data)]}
        offset += len(t.data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for t in tensors.values():
            f.write(t.data)
    os.replace(tmp, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description="torch pytorch_model.bin -> model.safetensors, without torch")
    ap.add_argument("src", help="a folder holding pytorch_model.bin (and config.json), or a .bin file")
    ap.add_argument("--out", default=None, help="output folder (default: the source folder)")
    args = ap.parse_args(argv)
    if os.path.isdir(args.src):
        src_dir, bin_path = args.src, os.path.join(args.src, "pytorch_model.bin")
    else:
        src_dir, bin_path = os.path.dirname(args.src) or ".", args.src
    if not os.path.exists(bin_path):
        sys.exit(f"error: {bin_path} does not exist")
    out_dir = args.out or src_dir
    os.makedirs(out_dir, exist_ok=True)
    try:
        tensors = load_state_dict(bin_path)
    except ConvertError as e:
        sys.exit(f"error: {e}")
    out = os.path.join(out_dir, "model.safetensors")
    write_safetensors(out, tensors, {"format": "pt", "converted_by": "scripts/convert_mamba_ssm.py"})
    cfg = os.path.join(src_dir, "config.json")
    if os.path.exists(cfg) and os.path.abspath(out_dir) != os.path.abspath(src_dir):
        shutil.copyfile(cfg, os.path.join(out_dir, "config.json"))
    total = sum(len(t.data) for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {total} bytes of data")


if __name__ == "__main__":
    main()
