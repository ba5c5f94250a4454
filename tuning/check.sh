#!/bin/sh
# Read-only check of a Reel recorder host: prints one line per check, "ok" or "change" with
# what to change, and exits 0 when nothing needs changing, 1 when something does, 2 on bad
# arguments. It never writes anything.
#
#   tuning/check.sh [--config /etc/reel/reel.toml] [--calls N]
#
# --config: read media.rcvbuf, media.rtp_ports, media.cpus, media.threads, media.tproxy_port
#           and data_dir from that file
#           (plain key = value lines; the embedded defaults otherwise).
# --calls:  the concurrent calls to plan for (default 1000): sizes the descriptor limit.
#
# REEL_BIN: the reel binary whose `check-config` gives the exact nftables rules of TPROXY mode
#           (default: reel on PATH; set it empty to check only each media thread's port).
# REEL_CHECK_ROOT (tests only) prefixes every /proc and /sys path, so a test can point the
# script at a fake tree.
set -u

ROOT="${REEL_CHECK_ROOT:-}"
CONFIG=""
CALLS=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --config) [ $# -ge 2 ] || { echo "check.sh: --config needs a file" >&2; exit 2; }
              CONFIG="$2"; shift 2 ;;
    --calls)  [ $# -ge 2 ] || { echo "check.sh: --calls needs a number" >&2; exit 2; }
              CALLS="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$CALLS" in ''|*[!0-9]*) echo "check.sh: --calls must be a number, got '$CALLS'" >&2; exit 2 ;; esac
if [ -n "$CONFIG" ] && [ ! -r "$CONFIG" ]; then
  echo "check.sh: cannot read --config $CONFIG" >&2; exit 2
fi

CHANGES=0
ok()     { printf 'ok      %-22s %s\n' "$1" "$2"; }
change() { printf 'change  %-22s %s\n' "$1" "$2"; CHANGES=$((CHANGES + 1)); }
info()   { printf 'info    %-22s %s\n' "$1" "$2"; }

# A value from the config file: the first `key = value` line under [section] (or at top
# level for an empty section), quotes and comments stripped. Good enough for the keys read
# here; `reel check-config` is the real parser.
conf() {
  [ -n "$CONFIG" ] || return 0
  awk -v want_sec="$1" -v key="$2" '
    /^[ \t]*\[/ { gsub(/[][ \t]/, ""); sec = $0; next }
    sec == want_sec {
      line = $0; sub(/#.*/, "", line)
      n = index(line, "=")
      if (n == 0) next
      k = substr(line, 1, n - 1); gsub(/[ \t]/, "", k)
      if (k != key) next
      v = substr(line, n + 1); gsub(/^[ \t"]+|[ \t"]+$/, "", v)
      print v; exit
    }' "$CONFIG"
}

readf() { [ -r "$ROOT$1" ] && tr -d '\n' < "$ROOT$1"; }

RCVBUF="$(conf media rcvbuf)"; RCVBUF="${RCVBUF:-4194304}"
RTP_PORTS="$(conf media rtp_ports)"; RTP_PORTS="${RTP_PORTS:-16384-32767}"
CPUS="$(conf media cpus | tr -d '[] ')"
DATA_DIR="$(conf '' data_dir)"; DATA_DIR="${DATA_DIR:-./reel-data}"
RTP_LO="${RTP_PORTS%-*}"; RTP_HI="${RTP_PORTS#*-}"
THREADS="$(conf media threads)"; THREADS="${THREADS:-1}"
TPROXY_PORT="$(conf media tproxy_port)"; TPROXY_PORT="${TPROXY_PORT:-0}"

# --- io_uring -------------------------------------------------------------------------------
v="$(readf /proc/sys/kernel/io_uring_disabled)"
case "$v" in
  ""|0) ok io_uring "kernel.io_uring_disabled = ${v:-absent (older kernel: allowed)}" ;;
  1)    change io_uring "kernel.io_uring_disabled = 1: only group kernel.io_uring_group may use it; add the reel user to it or set 0 (tuning/99-reel.conf), else Reel falls back to epoll at a higher CPU cost per packet" ;;
  *)    change io_uring "kernel.io_uring_disabled = $v: io_uring is off; set 0 (tuning/99-reel.conf), else Reel falls back to epoll at a higher CPU cost per packet" ;;
esac
seccomp="$(awk '/^Seccomp:/ {print $2}' "$ROOT/proc/self/status" 2>/dev/null)"
if [ "${seccomp:-0}" = 2 ]; then
  info seccomp "this shell runs under a seccomp filter (containers often block io_uring_setup); Reel's first log line says which backend it chose and why"
fi

# --- memory lock (provided buffer rings) ---------------------------------------------------
memlock="$(ulimit -l 2>/dev/null)"
case "$memlock" in
  unlimited) ok memlock "ulimit -l unlimited" ;;
  ''|*[!0-9]*) info memlock "ulimit -l unknown ($memlock)" ;;
  *) if [ "$memlock" -ge 65536 ]; then ok memlock "ulimit -l ${memlock} KiB"
     else change memlock "ulimit -l ${memlock} KiB: set LimitMEMLOCK=infinity in the unit (tuning/reel.service); older kernels charge io_uring rings to it"; fi ;;
esac

# --- descriptors: 2 sockets (RTP+RTCP) per stream, 2 streams per call, plus slack ------------
need_fd=$((CALLS * 4 + 1024))
nofile="$(ulimit -n 2>/dev/null)"
case "$nofile" in
  unlimited) ok nofile "ulimit -n unlimited" ;;
  ''|*[!0-9]*) info nofile "ulimit -n unknown ($nofile)" ;;
  *) if [ "$nofile" -ge "$need_fd" ]; then ok nofile "ulimit -n $nofile (>= $need_fd for $CALLS calls)"
     else change nofile "ulimit -n $nofile < $need_fd needed for $CALLS calls: LimitNOFILE=1048576 in the unit (Reel also raises its soft limit to the hard one)"; fi ;;
esac

# --- socket buffers --------------------------------------------------------------------------
rmem_max="$(readf /proc/sys/net/core/rmem_max)"
if [ -z "$rmem_max" ]; then
  info rmem_max "cannot read net.core.rmem_max"
elif [ "$rmem_max" -ge "$RCVBUF" ]; then
  ok rmem_max "net.core.rmem_max = $rmem_max (>= media.rcvbuf $RCVBUF)"
else
  want=33554432; [ "$RCVBUF" -gt "$want" ] && want="$RCVBUF"
  change rmem_max "net.core.rmem_max = $rmem_max < media.rcvbuf $RCVBUF: the kernel silently caps each RTP socket's buffer; set net.core.rmem_max = $want (tuning/99-reel.conf)"
fi
backlog="$(readf /proc/sys/net/core/netdev_max_backlog)"
if [ -z "$backlog" ]; then
  info netdev_backlog "cannot read net.core.netdev_max_backlog"
elif [ "$backlog" -ge 100000 ]; then
  ok netdev_backlog "net.core.netdev_max_backlog = $backlog"
else
  change netdev_backlog "net.core.netdev_max_backlog = $backlog: bursts from thousands of streams overflow it; set 250000 (tuning/99-reel.conf)"
fi

# --- RTP ports vs the ephemeral range ------------------------------------------------------
range="$(readf /proc/sys/net/ipv4/ip_local_port_range)"
eph_lo="$(echo "$range" | awk '{print $1}')"; eph_hi="$(echo "$range" | awk '{print $2}')"
reserved="$(readf /proc/sys/net/ipv4/ip_local_reserved_ports)"
if [ -n "$eph_lo" ] && [ -n "$eph_hi" ]; then
  if [ "$RTP_HI" -lt "$eph_lo" ] || [ "$RTP_LO" -gt "$eph_hi" ]; then
    ok rtp_ports "media.rtp_ports $RTP_PORTS outside the ephemeral range $eph_lo-$eph_hi"
  elif echo ",$reserved," | grep -q ",$RTP_PORTS,"; then
    ok rtp_ports "media.rtp_ports $RTP_PORTS reserved (net.ipv4.ip_local_reserved_ports)"
  else
    change rtp_ports "media.rtp_ports $RTP_PORTS overlaps the ephemeral range $eph_lo-$eph_hi: set net.ipv4.ip_local_reserved_ports = $RTP_PORTS, or move one of the ranges"
  fi
fi

# --- TPROXY mode: one nftables rule per media thread ---------------------------------------
if [ "$TPROXY_PORT" != 0 ]; then
  if ! command -v nft >/dev/null 2>&1; then
    change tproxy_rules "media.tproxy_port = $TPROXY_PORT but nft (nftables) is not installed: install it and the rules Reel prints at start; without them RTP goes to each stream's own socket (reel_media_tproxy_bypass_total)"
  elif listing="$(nft list chain inet reel prerouting 2>&1)"; then
    # The exact rules, from the recorder's own split of the port range, when a reel binary
    # can say them; else only that each media thread's port has a rule.
    REEL_BIN="${REEL_BIN-$(command -v reel 2>/dev/null)}"
    expected=""
    if [ -n "$CONFIG" ] && [ -n "$REEL_BIN" ]; then
      expected="$("$REEL_BIN" check-config --config "$CONFIG" 2>/dev/null | sed -n 's/^# nft add rule inet reel prerouting //p')"
    fi
    rules="$(echo "$listing" | sed 's/^[[:space:]]*//')"
    missing=""
    if [ -n "$expected" ]; then
      while IFS= read -r rule; do
        echo "$rules" | grep -qxF "$rule" || missing="$missing; nft add rule inet reel prerouting $rule"
      done <<EOF_RULES
$expected
EOF_RULES
      if [ -z "$missing" ]; then
        ok tproxy_rules "the $THREADS TPROXY rule(s) reel check-config gives are installed (from :$TPROXY_PORT)"
      else
        change tproxy_rules "chain inet reel prerouting lacks (or has other ranges than) what reel check-config gives:${missing#;} (tuning/README.md)"
      fi
    else
      i=0
      while [ "$i" -lt "$THREADS" ]; do
        port=$((TPROXY_PORT + i))
        echo "$rules" | grep -q "udp dport .*tproxy ip to :$port\$" || missing="$missing :$port"
        i=$((i + 1))
      done
      if [ -z "$missing" ]; then
        ok tproxy_rules "a TPROXY rule for each of the $THREADS media thread(s) (from :$TPROXY_PORT; port ranges not compared: REEL_BIN names no reel binary that reads this config)"
      else
        change tproxy_rules "no 'tproxy ip to' rule for$missing in chain inet reel prerouting: install the rules Reel prints at start (tuning/README.md)"
      fi
    fi
  else
    case "$listing" in
      *"No such file"*) change tproxy_rules "media.tproxy_port = $TPROXY_PORT but there is no chain inet reel prerouting: create it and install the rules Reel prints at start (tuning/README.md)" ;;
      *) info tproxy_rules "cannot list the nftables rules ($(echo "$listing" | head -1)); run as root to check them" ;;
    esac
  fi
fi

# --- CPUs --------------------------------------------------------------------------------------
ncpu="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)"
isolated="$(readf /sys/devices/system/cpu/isolated)"
info cpus "$ncpu online; isolated: ${isolated:-none}"
if [ -n "$CPUS" ]; then
  bad=""
  for c in $(echo "$CPUS" | tr ',' ' '); do
    [ "$c" -lt "$ncpu" ] 2>/dev/null || bad="$bad $c"
  done
  if [ -n "$bad" ]; then
    change media_cpus "media.cpus lists CPU(s)$bad that this host does not have ($ncpu online)"
  else
    ok media_cpus "media.cpus = [$CPUS]"
  fi
elif [ "$ncpu" -ge 4 ]; then
  info media_cpus "media.cpus not set: media threads float; on a dedicated host pin them away from the NIC's IRQ CPUs (tuning/README.md)"
fi
gov="$(readf /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor)"
case "$gov" in
  "") ;;
  performance) ok cpu_governor "scaling_governor = performance" ;;
  *) change cpu_governor "scaling_governor = $gov: 'performance' avoids the wake-up latency of frequency scaling" ;;
esac
if pgrep -x irqbalance >/dev/null 2>&1; then
  info irqbalance "irqbalance is running: it may move NIC IRQs onto media CPUs; pin them (tuning/README.md)"
fi

# --- disk ----------------------------------------------------------------------------------------
probe_dir="$DATA_DIR"
while [ ! -d "$probe_dir" ] && [ "$probe_dir" != "/" ] && [ "$probe_dir" != "." ]; do
  probe_dir="$(dirname "$probe_dir")"
done
avail_kb="$(df -Pk "$probe_dir" 2>/dev/null | awk 'NR == 2 {print $4}')"
if [ -n "$avail_kb" ]; then
  # G.711 stereo: 16 KB/s per call; plan an hour of the planned calls.
  need_kb=$((CALLS * 16 * 3600))
  if [ "$avail_kb" -ge "$need_kb" ]; then
    ok disk "$((avail_kb / 1048576)) GiB free under $probe_dir (>= one hour of $CALLS G.711 calls)"
  else
    change disk "$((avail_kb / 1048576)) GiB free under $probe_dir: less than one hour of $CALLS G.711 calls ($((need_kb / 1048576)) GiB); Reel answers 503 when space runs low"
  fi
fi

if [ "$CHANGES" -eq 0 ]; then
  echo "nothing to change"
  exit 0
fi
echo "$CHANGES setting(s) to change"
exit 1
