#!/bin/bash
# The GPU trainer stopped and resumed (GPU machine, ~20 s): an uninterrupted run against runs stopped by SIGTERM
# and by SIGKILL partway and resumed with -y 1 (main.log and the final checkpoint must be bitwise the same), then a
# checkpoint with one flipped byte, which -y 1 must refuse. Logs under $OUT (or ./sig_out).
#   bash dev/run_signal_tests.sh [./train_mamba2cu]
OUT=${OUT:-sig_out}
mkdir -p "$OUT"
T=${1:-./train_mamba2cu}
W=$(mktemp -d)
python3 -c "
import numpy as np; h=np.zeros(256,np.int32); h[0]=20240520; h[1]=1; n=2_000_000; h[2]=n
t=np.random.default_rng(0).integers(0,257,n).astype(np.uint16); f=open('$W/tr.bin','wb'); f.write(h.tobytes()); f.write(t.tobytes())"
A="-e d_model=256,n_layer=4,d_state=64,headdim=64,vocab=257 -b 8 -t 512 -x 3000 -v 100 -m 2 -s 0 -n 100 -l 1e-3 -i $W/tr.bin -j none -k none"
$T $A -o $W/full > $OUT/full.txt 2>&1; echo "uninterrupted: rc $?, $(grep -c trl $W/full/main.log) train lines"
for sig in TERM KILL; do
    $T $A -o $W/p$sig > $OUT/p_$sig.txt 2>&1 & pid=$!
    sleep 2.5; kill -$sig $pid; wait $pid; rc=$?
    echo "SIG$sig after 2.5 s: rc $rc; $(grep -E 'stopped by|saved checkpoint' $OUT/p_$sig.txt | tail -1)"
    $T $A -o $W/p$sig -y 1 > $OUT/r_$sig.txt 2>&1; echo "  resume: rc $? ($(grep -E '^resume' $OUT/r_$sig.txt | head -1))"
    cmp $W/full/main.log $W/p$sig/main.log && echo "  main.log equal to the uninterrupted run's"
    cmp $W/full/ckpt_00003000.bin $W/p$sig/ckpt_00003000.bin && echo "  final checkpoint bitwise equal"
done
printf '\001' | dd of=$W/full/ckpt_00003000.bin bs=1 seek=5000 conv=notrunc 2>/dev/null
$T $A -o $W/full -y 1 > $OUT/corrupt.txt 2>&1; echo "one flipped byte, -y 1: rc $?; $(grep -E '^error' $OUT/corrupt.txt | cut -c1-160)"
rm -rf "$W"
