#!/bin/sh
# make train: a small Mamba-2 on the default corpus (the Python standard library's sources, byte-level tokens),
# printing loss and samples. On the GPU trainer when a GPU and nvcc are present, else on the CPU trainer.
# -w 1: running it again starts the run over in log_default (the trainers refuse a used -o otherwise)
set -e
cd "$(dirname "$0")/.."
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && make train_mamba2cu; then
    echo "GPU found: training the 'small' model (d_model 128, 6 layers) with ./train_mamba2cu"
    exec ./train_mamba2cu -e small -b 16 -t 512 -x 1000 -l 3e-3 -u 50 -v 100 -m 20 -s 250 -g 256 -o log_default -w 1
fi
echo "no GPU: training the 'tiny' model (d_model 64, 4 layers) with the CPU trainer ./train_mamba2"
exec ./train_mamba2 -e tiny -b 8 -t 128 -x 500 -l 3e-3 -u 20 -v 100 -m 10 -s 250 -g 200 -o log_default -w 1
