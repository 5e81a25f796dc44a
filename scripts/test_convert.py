#!/usr/bin/env python3
"""
test_convert.py: scripts/convert_mamba_ssm.py against torch's own output (standard library only).

  - dev/fixtures/interop/torch_mixed.bin, written by torch.save on the GPU machine (dev/make_interop_fixtures.py):
    F32, BF16, F16, I64, a 0-d tensor, a transposed view, a view with a storage offset, two names of one storage;
    every converted value must equal the value torch printed into torch_mixed.json
  - dev/fixtures/interop/mssm_l1: a mamba_ssm-layout state dict; names, shapes, the tied lm_head
  - crafted pickles that would run code (os.system through REDUCE, builtins.eval, the INST opcode), a legacy non-zip
    file, a missing storage and a storage of the wrong size: each refused with its message, and nothing executed

    python3 scripts/test_convert.py        prints per-check results and "N passed, N failed"
"""
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FIX = os.path.join(ROOT, "dev", "fixtures", "interop")
sys.path.insert(0, HERE)
import convert_mamba_ssm as C  # noqa: E402

PASSED, FAILED = 0, 0


def check(ok, what):
    global PASSED, FAILED
    print(("  ok   " if ok else "  FAIL ") + what)
    if ok:
        PASSED += 1
    else:
        FAILED += 1


def read_safetensors(path):
    """a minimal independent reader: name -> (dtype, shape, list of values)"""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[8 + n + b:8 + n + end]
        dt = e["dtype"]
        if dt == "F32":
            vals = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        elif dt == "F16":
            vals = list(struct.unpack(f"<{len(raw) // 2}e", raw))
        elif dt == "BF16":
            vals = [struct.unpack("<f", b"\0\0" + raw[i:i + 2])[0] for i in range(0, len(raw), 2)]
        elif dt == "I64":
            vals = list(struct.unpack(f"<{len(raw) // 8}q", raw))
        else:
            vals = raw
        out[name] = (dt, e["shape"], vals)
    return out


def run_convert(args):
    p = subprocess.run([sys.executable, os.path.join(HERE, "convert_mamba_ssm.py"), *args], capture_output=True,
                       text=True)
    return p.returncode, p.stdout + p.stderr


def test_mixed(tmp):
    rc, log = run_convert([os.path.join(FIX, "torch_mixed.bin"), "--out", tmp])
    check(rc == 0, f"convert torch_mixed.bin ({log.strip()})")
    if rc != 0:
        return
    got = read_safetensors(os.path.join(tmp, "model.safetensors"))
    with open(os.path.join(FIX, "torch_mixed.json")) as f:
        expect = json.load(f)
    dtypes = {"float32": "F32", "bfloat16": "BF16", "float16": "F16", "int64": "I64"}
    check(sorted(got) == sorted(expect), f"same tensor names ({len(got)})")
    for name, e in expect.items():
        if name not in got:
            continue
        dt, shape, vals = got[name]
        ok = dt == dtypes[e["dtype"]] and shape == e["shape"] and vals == e["values"]
        check(ok, f"{name}: {dt} {shape} equals torch's values exactly")


def test_mamba_ssm(tmp):
    rc, log = run_convert([os.path.join(FIX, "mssm_l1"), "--out", tmp])
    check(rc == 0 and os.path.exists(os.path.join(tmp, "config.json")), "convert mssm_l1 (config.json copied)")
    if rc != 0:
        return
    got = read_safetensors(os.path.join(tmp, "model.safetensors"))
    emb = got.get("backbone.embedding.weight")
    head = got.get("lm_head.weight")
    check(emb is not None and emb[1] == [112, 32], "backbone.embedding.weight is (112, 32): the padded rows kept")
    check(head is not None and emb is not None and head[2] == emb[2], "lm_head.weight (same storage) equals it")
    check(got.get("backbone.layers.0.mixer.conv1d.weight", (0, []))[1] == [96, 1, 4], "conv1d.weight (E + 2GN = 96, 1, K = 4)")


def make_zip(path, pkl, storages=None, prefix="archive"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for k, v in (storages or {}).items():
            z.writestr(f"{prefix}/data/{k}", v)


def refused(path, needle, what, marker=None):
    try:
        C.load_state_dict(path)
        ok, msg = False, "(loaded!)"
    except C.ConvertError as e:
        msg = str(e)
        ok = needle in msg
    if marker is not None:
        ok = ok and not os.path.exists(marker)
    check(ok, f"{what} -> {msg[:150]}")


def test_malicious(tmp):
    marker = os.path.join(tmp, "PWNED")
    # 1. os.system through GLOBAL + REDUCE (what `pickle.loads` would execute)
    evil = b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(f"touch {marker}")) + f"touch {marker}".encode() \
        + b"\x85q\x01Rq\x02."
    p = os.path.join(tmp, "evil_system.bin")
    make_zip(p, evil)
    refused(p, "os.system", "GLOBAL os.system + REDUCE", marker)
    # the same bytes really are an attack: plain pickle would run it (checked on the pickle alone, on a harmless
    # command, so the test shows the refusal is not vacuous)
    class Probe(pickle.Unpickler):
        def find_class(self, module, name):
            return ("called", module, name)
    try:
        Probe(io.BytesIO(evil)).load()
        probe_ok = False
    except TypeError:
        probe_ok = True  # REDUCE tried to call what GLOBAL named: plain pickle.loads would have run os.system
    check(probe_ok, "the crafted pickle does reach a call of os.system under an unrestricted unpickler")
    # 2. builtins.eval
    code = "__import__('os').system('touch " + marker + "')"
    evil2 = pickle.dumps(0, protocol=2)[:2] + b"cbuiltins\neval\nX" + struct.pack("<I", len(code)) + code.encode() \
        + b"\x85R."
    p = os.path.join(tmp, "evil_eval.bin")
    make_zip(p, evil2)
    refused(p, "builtins.eval", "GLOBAL builtins.eval", marker)
    # 3. the INST opcode (instantiates a named class without REDUCE)
    evil3 = b"(ios\nsystem\nS'true'\n."
    p = os.path.join(tmp, "evil_inst.bin")
    make_zip(p, evil3)
    refused(p, "opcode INST", "INST opcode", marker)
    # 4. a legacy (pre-1.6) torch file: a bare pickle
    p = os.path.join(tmp, "legacy.bin")
    with open(p, "wb") as f:
        f.write(pickle.dumps({"a": 1}, protocol=2))
    refused(p, "legacy", "legacy non-zip torch file")
    # 5. a state dict whose storage is missing / has the wrong size
    good = (b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01X\x01\x00\x00\x00wq\x02ctorch._utils\n_rebuild_tensor_v2"
            b"\nq\x03((X\x07\x00\x00\x00storageq\x04ctorch\nFloatStorage\nq\x05X\x01\x00\x00\x000q\x06X\x03\x00\x00"
            b"\x00cpuq\x07K\x04tq\x08QK\x00K\x04\x85K\x01\x85\x89ccollections\nOrderedDict\n)Rtq\tRq\ns.")
    p = os.path.join(tmp, "ok.bin")
    make_zip(p, good, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    try:
        sd = C.load_state_dict(p)
        ok = list(sd) == ["w"] and struct.unpack("<4f", sd["w"].data) == (1, 2, 3, 4) and sd["w"].shape == (4,)
    except C.ConvertError as e:
        ok = False
        print("       ", e)
    check(ok, "a hand-written minimal state dict (the control for the two below) loads")
    p = os.path.join(tmp, "missing.bin")
    make_zip(p, good, {})
    refused(p, "is missing from the zip", "storage missing from the zip")
    p = os.path.join(tmp, "short.bin")
    make_zip(p, good, {"0": struct.pack("<3f", 1, 2, 3)})
    refused(p, "holds 12 bytes, the pickle says 4 elements", "storage of the wrong size")
    # 6. stride 0: a 16-byte storage read as a 2^30-element tensor
    s0 = good.replace(b"K\x04\x85K\x01\x85", b"J\x00\x00\x00\x40\x85K\x00\x85")
    assert s0 != good
    p = os.path.join(tmp, "stride0.bin")
    make_zip(p, s0, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    refused(p, "stride 0", "a stride-0 tensor of 2^30 elements over 4 stored floats")
    ov = good.replace(b"K\x04\x85K\x01\x85", b"K\x02K\x03\x86K\x01K\x01\x86")
    p = os.path.join(tmp, "overlap.bin")
    make_zip(p, ov, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    refused(p, "overlapping strides", "a (2, 3) tensor with strides (1, 1) over 4 stored floats")
    # 7. BUILD on the shared allowed objects: refused, and they are unchanged for the next file
    for glob_, qual in ((b"ctorch\nFloatStorage\n", "torch.FloatStorage"),
                        (b"ctorch._utils\n_rebuild_tensor_v2\n", "torch._utils._rebuild_tensor_v2")):
        evil = b"\x80\x02" + glob_ + b"}X\x08\x00\x00\x00itemsizeK\x01sb."
        p = os.path.join(tmp, "build.bin")
        make_zip(p, evil)
        refused(p, "BUILD", f"BUILD on {qual}")
    st = C.ALLOWED_GLOBALS[("torch", "FloatStorage")]
    check(st.itemsize == 4 and not hasattr(C.ALLOWED_GLOBALS[("torch._utils", "_rebuild_tensor_v2")], "__dict__"),
          "the allowed objects are unchanged after the BUILD attempts (FloatStorage itemsize 4, no __dict__)")
    make_zip(os.path.join(tmp, "ok2.bin"), good, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    try:
        ok = struct.unpack("<4f", C.load_state_dict(os.path.join(tmp, "ok2.bin"))["w"].data) == (1, 2, 3, 4)
    except C.ConvertError:
        ok = False
    check(ok, "the control still loads after them")
    # 8. damaged zips, as dev/fuzz/fuzz_unpickler.py found them: each a ConvertError, never another exception
    #    or a read of the size a member claims
    p = os.path.join(tmp, "bigclaim.bin")
    make_zip(p, good, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    raw = bytearray(open(p, "rb").read())
    cd = raw.find(b"PK\x01\x02", raw.find(b"archive/byteorder") + 1)  # the byteorder record's central directory entry
    while cd >= 0 and raw[cd + 46:cd + 46 + 17] != b"archive/byteorder":
        cd = raw.find(b"PK\x01\x02", cd + 1)
    raw[cd + 20:cd + 24] = struct.pack("<I", 2516582406)  # its stored size: 2.5 GB in a file of ~500 bytes
    open(p, "wb").write(raw)
    refused(p, "claims 2516582406 stored bytes", "a zip member claiming 2.5 GB in a tiny file")
    p = os.path.join(tmp, "badorder.bin")
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("archive/data.pkl", good)
        z.writestr("archive/byteorder", b"l\xca\xff")
        z.writestr("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))
    refused(p, "byteorder", "a byte-order record that is not UTF-8")
    p = os.path.join(tmp, "crc.bin")
    make_zip(p, good, {"0": struct.pack("<4f", 1, 2, 3, 4)})
    raw = bytearray(open(p, "rb").read())
    at = raw.find(b"storage")  # inside data.pkl's stored bytes: its CRC no longer matches
    raw[at] ^= 0x20
    open(p, "wb").write(raw)
    refused(p, "damaged zip", "a member whose CRC does not match")


def main():
    with tempfile.TemporaryDirectory() as d:
        for name, fn in (("mixed", test_mixed), ("mamba_ssm", test_mamba_ssm), ("malicious", test_malicious)):
            sub = os.path.join(d, name)
            os.makedirs(sub)
            print(name)
            fn(sub)
    print(f"{PASSED} passed, {FAILED} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
