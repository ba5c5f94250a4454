#!/bin/sh
# Recording cost against the machine's receive limit (DESIGN.md section 7): builds the release
# server, runs bench/record.rs at 1,000 calls x 10 s (sinks a, b and c, then reel serve, with
# its SIP setup latency), then the SIP setup rate at the limit (--setup-limit), then
# the scaling table at 100, 500, 1,000 and 2,000 calls. As root, the 1,000-call step also runs
# TPROXY mode against its own floor (variants t and reel-tproxy, in a private network
# namespace). Every step has its own timeout and the bench stops its reel child itself.
set -eu
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-10}"
cargo build --release --bin reel
VARIANTS=a,b,c,reel
if [ "$(id -u)" = 0 ] && command -v nft >/dev/null 2>&1; then
  VARIANTS=a,b,c,t,reel,reel-tproxy
fi
timeout 900 cargo bench --bench record -- --calls 1000 --seconds "$SECONDS_PER_RUN" --variants "$VARIANTS"
timeout 400 cargo bench --bench record -- --setup-limit
timeout 2400 cargo bench --bench record -- --sizes 100,500,1000,2000 --seconds "$SECONDS_PER_RUN"
