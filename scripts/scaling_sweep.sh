#!/bin/sh
# The scaling-law sweep: 6 small Mamba-2 sizes with the paper's proportions, each on its Chinchilla token count,
# on the site-packages corpus (python3 scripts/paper.py corpus). Rerunning the same command resumes every
# unfinished size from its checkpoint and skips finished ones. scripts/paper.py holds the plan; doc/paper.md the why.
# Usage: scripts/scaling_sweep.sh [--seq-len 2048|8192] [--only s1,s2] [--dry-run] [--budget-minutes 9.5]
#                                 [--trainer ./train_mamba2cu] [--tiny] [--train GLOB --val GLOB] [--out-root DIR]
exec python3 "$(dirname "$0")/paper.py" sweep "$@"
