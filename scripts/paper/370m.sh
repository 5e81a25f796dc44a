#!/bin/sh
# Mamba-2 370m with the paper's recipe (scripts/paper.py explains the numbers). --dry-run prints them; rerun resumes.
# Usage: scripts/paper/370m.sh [--gpus N] [--micro-batch B] [--dry-run] [--train GLOB --val GLOB] [--out DIR]
exec python3 "$(dirname "$0")/../paper.py" run 370m "$@"
