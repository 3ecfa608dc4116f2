#!/bin/sh
# bench.sh: run cryo's benchmarks and print their numbers as a table.
#
# The heavy container benchmarks (runtime: checkpoint/restore of 64 MiB,
# 512 MiB, 1 GiB and a 50-process tree, the --leave-running stall, runc+CRIU
# when criu >= 4.0; then the Workload ones: a 64-thread process, a static Go
# program with a 1 GiB heap and goroutines, an echo server holding 1,000 TCP
# connections, each restore verified by the workload itself, the same with
# runc+CRIU) run BENCHTIME times (default 3x); the cheap ones
# (create/start/delete vs runc, baselines) LIGHTTIME times (default 20x);
# the shim's `ctr run --rm` latency and RSS next to containerd's runc shim
# once (each iteration is a median of 20 runs).
# Raw `go test -bench` output goes to $OUT (default bench.out) too.
# The machine's load is printed with the baselines (memcpy, sha256): read
# the other numbers against them.
set -eu
GO=${GO:-go}
BENCHTIME=${BENCHTIME:-3x}
LIGHTTIME=${LIGHTTIME:-20x}
OUT=${OUT:-bench.out}
: >"$OUT"
run() {
	$GO test -count=1 -p 1 -run '^$' -timeout 60m "$@" 2>&1 | tee -a "$OUT" | grep -E '^(Benchmark|ok|FAIL|---|panic)|skipped' || true
}
echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
run -bench 'Baseline|LifecycleTrue' -benchtime "$LIGHTTIME" ./runtime/ ./oci/
run -bench '^Benchmark(Checkpoint|CheckpointPreCopy|Restore|RestoreVerifyFull|Stall|RuncCRIU)$' -benchtime "$BENCHTIME" ./runtime/
run -bench '^BenchmarkWorkload(Checkpoint|Restore|Stall|RuncCRIU)$' -benchtime "$BENCHTIME" ./runtime/
run -bench . -benchtime "$BENCHTIME" ./engine/ ./oci/
run -bench 'CreateStartDelete' -benchtime "$LIGHTTIME" ./cmd/cryo/
# ctr run --rm: median of 20 runs per iteration, cryo's shim next to runc's, and shim RSS; ctr c
# checkpoint and ctr c restore --live of 512 MiB (and an incremental one) through both shims.
run -bench 'CtrRunRm|CtrCheckpointRestore' -benchtime 1x ./integration/
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT"
echo
# The table: one row per benchmark, its metrics as columns (name=value).
awk '
/^Benchmark/ && $2 ~ /^[0-9]+$/ {
	name = $1; sub(/-[0-9]+$/, "", name); sub(/^Benchmark/, "", name)
	row = sprintf("%-34s", name)
	for (i = 3; i + 1 <= NF; i += 2) {
		v = $i; u = $(i + 1)
		if (u == "ns/op") { v = sprintf("%.1f", v / 1e6); u = "ms/op" }
		row = row sprintf("  %s %s", v, u)
	}
	print row
}' "$OUT"
