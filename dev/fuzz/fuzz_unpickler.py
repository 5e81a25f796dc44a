"""
Fuzzes the torch-checkpoint reader of scripts/convert_mamba_ssm.py (its restricted unpickler and tensor rebuild):
a mutation fuzzer with the standard library alone (no atheris on this machine's registries).

    python3 dev/fuzz/fuzz_unpickler.py --seconds 600          # ten minutes
    python3 dev/fuzz/fuzz_unpickler.py --cases 3000 --seed 1  # the short deterministic run of make test

Seeds: dev/fixtures/interop/torch_mixed.bin (torch.save's own zip) and small state dicts written here in torch's
layout. Each case mutates one seed: the pickle inside the zip (bit flips, byte runs replaced, inserted or deleted,
integers after BININT/LONG opcodes pushed to extremes, pieces spliced from another seed), a storage (truncated,
extended) or, rarely, the zip file's own bytes. The case is loaded in this process under a 1 GiB address-space
limit and a 5-second alarm, and its tensors written as safetensors. Allowed outcomes: a state dict, or ConvertError
(the converter's message). Anything else (another exception, a time-out, a MemoryError) is a finding: the input
is saved under dev/fuzz/out/unpickler/ and the run exits 1. Prints the number of cases run.
"""
import argparse
import io
import os
import pickle
import random
import resource
import signal
import struct
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import convert_mamba_ssm as cv  # noqa: E402


class TimedOut(Exception):
    pass


class FloatStorage:
    """stands for torch.FloatStorage in the seeds made here: pickled as a global, renamed to torch's"""


def zip_members(path):
    with zipfile.ZipFile(path) as z:
        return [(n, z.read(n)) for n in z.namelist()]


def write_zip(path, members):
    with zipfile.ZipFile(path, "w") as z:
        for n, d in members:
            z.writestr(n, d)


def made_seed(prefix, tensors):
    """a torch-layout zip of a state dict {name: (storage key, shape, stride, offset, float32 values)}"""
    class PersistentStorage:
        def __init__(self, key, n):
            self.key, self.n = key, n

    class Rebuild:
        def __init__(self, st, offset, shape, stride):
            self.args = (st, offset, shape, stride)

        def __reduce__(self):
            return (cv.rebuild_tensor_v2, self.args)

    class P(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, PersistentStorage):
                return ("storage", FloatStorage, obj.key, "cpu", obj.n)
            return None

    state, storages = {}, {}
    for name, (key, shape, stride, offset, values) in tensors.items():
        storages[key] = struct.pack(f"<{len(values)}f", *values)
        state[name] = Rebuild(PersistentStorage(key, len(values)), offset, shape, stride)
    buf = io.BytesIO()
    P(buf, protocol=2).dump(state)
    pkl = buf.getvalue()
    # the pickler named this module's classes: point them at torch's, as torch.save writes them
    pkl = pkl.replace(b"convert_mamba_ssm\nrebuild_tensor_v2", b"torch._utils\n_rebuild_tensor_v2")
    pkl = pkl.replace(FloatStorage.__module__.encode() + b"\nFloatStorage", b"torch\nFloatStorage")
    members = [(f"{prefix}/data.pkl", pkl), (f"{prefix}/byteorder", b"little")]
    members += [(f"{prefix}/data/{k}", v) for k, v in storages.items()]
    return members


def seeds():
    out = []
    fixture = os.path.join(ROOT, "dev", "fixtures", "interop", "torch_mixed.bin")
    if os.path.exists(fixture):
        out.append(zip_members(fixture))
    return out


BININT_OPS = {ord("J"): 4, ord("K"): 1, ord("M"): 2}  # BININT, BININT1, BININT2: operand bytes


def mutate(rng, members, others):
    members = list(members)
    k = rng.randrange(len(members))
    name, data = members[k]
    is_pkl = name.endswith("data.pkl")
    if not is_pkl and rng.random() < 0.7:  # mostly the pickle: it drives everything else
        k = next((i for i, (n, _) in enumerate(members) if n.endswith("data.pkl")), k)
        name, data = members[k]
        is_pkl = True
    d = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 8))):
        op = rng.randrange(7)
        if op == 0 and d:  # bit flip
            i = rng.randrange(len(d))
            d[i] ^= 1 << rng.randrange(8)
        elif op == 1 and d:  # a byte set to an interesting value
            d[rng.randrange(len(d))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)))
        elif op == 2 and d:  # delete a run
            i = rng.randrange(len(d))
            del d[i:i + rng.randrange(1, 9)]
        elif op == 3:  # insert random bytes
            i = rng.randrange(len(d) + 1)
            d[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4 and is_pkl:  # an integer operand to an extreme
            spots = [i for i in range(len(d) - 4) if d[i] in BININT_OPS]
            if spots:
                i = rng.choice(spots)
                width = BININT_OPS[d[i]]
                val = rng.choice((0, 1, 2, 255, 65535, 2**31 - 1, 2**32 - 1, rng.randrange(2**32)))
                d[i + 1:i + 1 + width] = (val % (1 << (8 * width))).to_bytes(width, "little")
        elif op == 5 and others:  # splice a piece of another seed's member
            src = rng.choice(rng.choice(others))[1]
            if src:
                a = rng.randrange(len(src))
                piece = src[a:a + rng.randrange(1, 64)]
                i = rng.randrange(len(d) + 1)
                d[i:i + len(piece)] = piece
        elif op == 6 and not is_pkl:  # a storage truncated or extended
            d = d[:rng.randrange(len(d) + 1)] if rng.random() < 0.5 else d + bytes(rng.randrange(1, 64))
    members[k] = (name, bytes(d))
    if rng.random() < 0.05:  # the member list itself
        if rng.random() < 0.5 and len(members) > 1:
            del members[rng.randrange(len(members))]
        else:
            members.append((members[0][0].split("/")[0] + "/data/" + str(rng.randrange(1000)), bytes(16)))
    return members


def run_case(path, out_dir):
    def on_alarm(signum, frame):
        raise TimedOut()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(5)
    try:
        sd = cv.load_state_dict(path)
        cv.write_safetensors(os.path.join(out_dir, "case.safetensors"), sd)
        return "ok"
    except cv.ConvertError:
        return "refused"
    finally:
        signal.alarm(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--cases", type=int, default=0, help="stop after this many cases (0: run --seconds)")
    ap.add_argument("--seed", type=int, default=None, help="fixed seed: a reproducible run")
    args = ap.parse_args()
    rng = random.Random(args.seed if args.seed is not None else time.time_ns())
    limit = 1 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    pool = seeds()
    pool.append(made_seed("archive", {
        "a.weight": ("0", (2, 3), (3, 1), 0, [float(i) for i in range(6)]),
        "a.t": ("0", (3, 2), (1, 3), 0, [float(i) for i in range(6)]),  # a transposed view of the same storage
        "b": ("1", (4,), (1,), 0, [1.0, 2.0, 3.0, 4.0]),
    }))
    pool.append(made_seed("model", {"x": ("0", (1, 1, 2), (2, 2, 1), 1, [0.0, 1.0, 2.0])}))
    crash_dir = os.path.join(ROOT, "dev", "fuzz", "out", "unpickler")
    counts = {"ok": 0, "refused": 0}
    t_end = time.time() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "case.bin")
        for s in pool:  # the seeds themselves must load
            write_zip(path, s)
            if run_case(path, tmp) != "ok":
                print(f"fuzz unpickler: a seed does not load: {[n for n, _ in s]}")
                print("0 passed, 1 failed")
                return 1
        n = 0
        while (n < args.cases) if args.cases else (time.time() < t_end):
            base = rng.choice(pool)
            case = mutate(rng, base, pool)
            if rng.random() < 0.03:  # the zip's own bytes
                write_zip(path, case)
                raw = bytearray(open(path, "rb").read())
                for _ in range(rng.randrange(1, 4)):
                    raw[rng.randrange(len(raw))] = rng.randrange(256)
                open(path, "wb").write(raw)
            else:
                write_zip(path, case)
            n += 1
            try:
                counts[run_case(path, tmp)] += 1
            except Exception as e:  # noqa: BLE001: every other outcome is a finding
                os.makedirs(crash_dir, exist_ok=True)
                saved = os.path.join(crash_dir, f"crash-{n}.bin")
                os.replace(path, saved)
                print(f"fuzz unpickler: FAILED after {n} cases: {type(e).__name__}: {e} (input: {saved})")
                print("0 passed, 1 failed")
                return 1
    print(f"fuzz unpickler: ok, {n} cases ({counts['ok']} loaded, {counts['refused']} refused)")
    print("1 passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
