#!/usr/bin/env bash
# Regenerates scripts/hot-code.order, the list of functions the release binary runs
# when it starts and serves calls, which the linker places side by side
# (scripts/build.rs passes it to the linker; BENCHMARKS.md, issue 17, third session).
#
#   bash scripts/hot-code.sh [postgres://…/an-empty-database]
#   bash scripts/hot-code.sh --check [postgres://…]   # is the list up to date?
#   bash scripts/hot-code.sh --idle                   # mend the start of the list
#
# It builds the release binary, then runs it under callgrind: `voxrelay serve`
# twice on one folder (a first start, then a restart), `voxrelay bench`
# (ConversationRelay on SQLite), `voxrelay bench media`, and, given the URL of an
# empty PostgreSQL database, `voxrelay bench` on it. It writes every function that
# ran, in the order they first ran. Needs valgrind, nm and curl.
#
# Rerun it after a toolchain or Cargo.lock update: the names carry hashes that
# change with those. A stale list costs memory, never correctness: the linker
# skips names it does not find, and the build warns when the rustc differs.
# Code changes make it stale too: functions that are new, or renamed, land
# scattered. `--check` remakes the list in a temporary file and only says how many
# of the functions that ran are missing from the committed one; it fails when more
# than HOT_CODE_MAX_MISSING (default 20) are.
#
# `--idle` runs only the two starts (each then rests a few seconds, as a server
# waiting for its first call does) and moves every function they ran to the
# front of the list, in the order they ran: those it lacks (new code, or names
# renumbered by LTO: `write_str.5769`) and those it held further down, among
# the code of calls. The rest keeps its order. Idle memory is the code a server
# at rest has touched, 64 KiB or more of the file per place touched outside
# the block of start-up code; a code change that renames a few of those
# functions costs hundreds of KiB (BENCHMARKS.md, issue 17, twelfth and
# thirteenth sessions). Build again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

check=
idle=
if [ "${1:-}" = "--check" ]; then
    check=1
    shift
elif [ "${1:-}" = "--idle" ]; then
    idle=1
    shift
fi
pg_url=${1:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cargo build --release --bin voxrelay
bin=$PWD/target/release/voxrelay

cat >"$work/server" <<EOF
#!/bin/sh
exec valgrind --tool=callgrind --demangle=no --callgrind-out-file=$work/profile.%p "$bin" "\$@"
EOF
chmod +x "$work/server"

# The server alone with the offline agent and no settings, twice on one folder: a
# first start (a new database, a new API token) and a restart, each answering
# /health and /status, then resting, then SIGTERM.
port=${HOT_CODE_PORT:-28471}
serve() {
    (cd "$work/serve" && exec env -i PATH="$PATH" HOST=127.0.0.1 PORT="$port" \
        "$work/server" serve) &
    local pid=$!
    for _ in $(seq 1 150); do
        curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        sleep 0.2
    done
    # No API_TOKEN, as `cargo run --release` starts: the server makes one and
    # keeps it in data/api-token (that code runs at every start, so it is listed).
    curl -fsS -H "Authorization: Bearer $(cat "$work/serve/data/api-token")" \
        "http://127.0.0.1:$port/status" >/dev/null
    # A while at rest, as a server waits for its first call: the replica's first
    # round and the log writer run then, and their code is idle memory too.
    sleep "${HOT_CODE_REST_SECS:-3}"
    kill -TERM "$pid"
    wait "$pid" || true
}
mkdir "$work/serve"
echo "hot-code: serve, then serve again on its data" >&2
serve
serve

if [ -n "$idle" ]; then
    nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$work/defined"
    for profile in $(ls -tr "$work"/profile.*); do
        sed -nE 's/^c?fn=\([0-9]+\) (.*)$/\1/p' "$profile"
    done | sed -E "s/'[0-9]+\$//" |
        awk 'FILENAME == ARGV[1] { defined[$0] = 1; next }
             ($0 in defined) && !seen[$0]++' "$work/defined" - >"$work/idle"
    new=$(grep -v '^#' scripts/hot-code.order | sort -u | comm -13 - <(sort -u "$work/idle") | wc -l)
    {
        grep '^#' scripts/hot-code.order
        cat "$work/idle"
        awk 'FILENAME == ARGV[1] { first[$0] = 1; next } !/^#/ && !($0 in first)' \
            "$work/idle" scripts/hot-code.order
    } >"$work/order"
    cat "$work/order" >scripts/hot-code.order
    echo "hot-code: the $(wc -l <"$work/idle") functions the starts ran moved to the front ($new of them new to the list)" >&2
    exit 0
fi

run() {
    echo "hot-code: $*" >&2
    (cd "$work" && "$bin" bench "$@" --server "$work/server" >/dev/null)
}
run --calls 4 --turns 2 --saturate-secs 1
run media --calls 4 --seconds 3
if [ -n "$pg_url" ]; then
    run --calls 4 --turns 2 --saturate-secs 1 --database-url "$pg_url"
fi

# The functions that ran, in the order callgrind first met them, profiles in the
# order they were written (the starts first), keeping those the binary defines.
for profile in $(ls -tr "$work"/profile.*); do
    sed -nE 's/^c?fn=\([0-9]+\) (.*)$/\1/p' "$profile"
done | sed -E "s/'[0-9]+\$//" >"$work/ran"
nm --defined-only "$bin" | awk '$2 ~ /^[tTwW]$/ {print $3}' >"$work/defined"
out=scripts/hot-code.order
[ -n "$check" ] && out=$work/order
{
    echo "# The functions voxrelay runs to start and to serve calls, in the order they"
    echo "# first ran, for the linker to place side by side (lld's --symbol-ordering-file,"
    echo "# passed by scripts/build.rs). Generated by scripts/hot-code.sh; the names carry"
    echo "# hashes of the toolchain and of Cargo.lock's versions, so rerun it after"
    echo "# changing either."
    echo "# rustc: $(rustc --version)"
    awk 'FILENAME == ARGV[1] { defined[$0] = 1; next } ($0 in defined) && !seen[$0]++' \
        "$work/defined" "$work/ran"
} >"$out"
if [ -z "$check" ]; then
    echo "hot-code: $(grep -vc '^#' "$out") functions in $out" >&2
    exit 0
fi
grep -v '^#' scripts/hot-code.order | sort -u >"$work/listed"
missing=$(grep -v '^#' "$out" | sort -u | comm -23 - "$work/listed" | wc -l)
echo "hot-code: $missing of $(grep -vc '^#' "$out") functions that ran are not in scripts/hot-code.order" >&2
if [ "$missing" -gt "${HOT_CODE_MAX_MISSING:-20}" ]; then
    echo "hot-code: the list is stale; run bash scripts/hot-code.sh to remake it" >&2
    exit 1
fi
