#!/bin/sh
# Builds the libFuzzer harnesses of dev/fuzz/fuzz_readers.c (clang, ASan + UBSan) and runs each for FUZZ_SECONDS
# (default 6; 8 readers, ~50 s in all) on a copy of its seed corpus in dev/fuzz/corpus/<name>/. New inputs found
# go to dev/fuzz/out/<name>/ (not committed); a crash leaves crash-* there and makes this script fail.
#   sh dev/fuzz/run_fuzz.sh                       all readers, 6 s each
#   FUZZ_SECONDS=600 sh dev/fuzz/run_fuzz.sh bpe  one reader for 10 minutes
# Needs clang with libFuzzer (Debian: apt-get install -y clang libclang-rt-14-dev).
set -e
CC=${FUZZ_CC:-clang}
SECONDS_EACH=${FUZZ_SECONDS:-6}
NAMES=${*:-"shard checkpoint safetensors json hfconfig tokenizer bpe config"}
OUT=dev/fuzz/out
mkdir -p "$OUT"
fail=0
for name in $NAMES; do
    upper=$(echo "$name" | tr a-z A-Z)
    bin="$OUT/fuzz_$name"
    if [ ! -x "$bin" ] || [ dev/fuzz/fuzz_readers.c -nt "$bin" ] || [ -n "$(find llmc -name '*.h' -newer "$bin")" ]; then
        $CC -g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. \
            -DFUZZ_"$upper" -o "$bin" dev/fuzz/fuzz_readers.c -lm
    fi
    mkdir -p "$OUT/$name"
    log="$OUT/$name.log"
    if ASAN_OPTIONS=detect_leaks=0 "$bin" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=4096 \
        -max_len=65536 -artifact_prefix="$OUT/$name/" "$OUT/$name" dev/fuzz/corpus/"$name" > "$log" 2>&1; then
        execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || true)
        [ -z "$execs" ] && execs=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -E 's/^#([0-9]+).*/\1/')
        echo "fuzz $name: ok, $execs executions in ${SECONDS_EACH} s"
    else
        echo "fuzz $name: FAILED (see $log and $OUT/$name/crash-*)"
        tail -n 30 "$log"
        fail=1
    fi
done
exit $fail
