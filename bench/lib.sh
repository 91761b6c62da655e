# Shared helpers for the bench scripts (sourced, not run).

# Installs Debian packages that are missing (the bench scripts need wrk and friends).
need() {
    local missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null || missing+=("$tool")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# start_server PLUGINS_DIR [ARGS...]: starts the release binary (or $FIDDLER_BIN) on a free
# port and waits until its worker is ready; sets SERVER_PID (the supervisor), WORKER_PID,
# HTTP_ADDR and SERVER_LOG, and HTTPS_ADDR when $SERVER_CERTS names a folder with cert.pem and
# key.pem (HTTPS on a free port too; else HTTPS is off). The caller's EXIT trap should call
# stop_server.
start_server() {
    local dir=$1 https=(--https off)
    shift
    if [ -n "${SERVER_CERTS:-}" ]; then
        https=(--https 127.0.0.1:0 --cert "$SERVER_CERTS/cert.pem" --key "$SERVER_CERTS/key.pem")
    fi
    SERVER_LOG=$(mktemp)
    "${FIDDLER_BIN:-target/release/fiddler-crab}" --http 127.0.0.1:0 "${https[@]}" --plugins "$dir" "$@" \
        >/dev/null 2>"$SERVER_LOG" &
    SERVER_PID=$!
    for _ in $(seq 1 600); do
        grep -q '] ready' "$SERVER_LOG" && break
        sleep 0.05
    done
    HTTP_ADDR=$(grep -o 'listening on http://[0-9.:]*' "$SERVER_LOG" | sed 's|.*http://||')
    HTTPS_ADDR=$(grep -o 'listening on https://[0-9.:]*' "$SERVER_LOG" | sed 's|.*https://||' || true)
    WORKER_PID=$(grep -o 'worker \[[0-9]*\] ready' "$SERVER_LOG" | tail -1 | grep -o '[0-9]*')
    [ -n "$HTTP_ADDR" ] && [ -n "$WORKER_PID" ] || { cat "$SERVER_LOG" >&2; return 1; }
}

# stop_server: stops the server start_server started (SIGTERM, then waits for it). Never fails:
# it runs in EXIT traps under `set -e`, where a failing command would skip the rest.
stop_server() {
    if [ -n "${SERVER_PID:-}" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -f "${SERVER_LOG:-}"
    return 0
}

# rss_kib PID: resident memory of a process in KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# children PID: the pids of a process's direct children (a worker's executors).
children() {
    cat "/proc/$1/task/"*/children 2>/dev/null | tr ' ' '\n' | grep . || true
}

# tree_rss_kib PID: resident memory of a process and its direct children, in KiB.
tree_rss_kib() {
    local total
    total=$(rss_kib "$1")
    for child in $(children "$1"); do
        total=$((total + $(rss_kib "$child" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# cpu_ticks PID...: the CPU time (user and system, in clock ticks) these processes have used.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# per_request_us TICKS REQUESTS: CPU microseconds per request.
per_request_us() {
    awk -v t="$1" -v n="$2" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f\n", n ? t / hz * 1e6 / n : 0}'
}

# median: the median of the numbers on stdin, one per line.
median() {
    sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# start_server_in_cgroup PLUGINS_DIR [ARGS...]: start_server inside a memory cgroup of its
# own when this shell may make one (root; cgroup v1 or v2), so that the server's whole memory
# (its processes, and the memory files big bodies live in, counted once however many
# processes map them) can be read with cgroup_mark and cgroup_peak_bytes. This shell joins
# the cgroup only to start the server (which inherits it) and goes back, so clients are never
# counted. Sets SERVER_CGROUP ("" when none could be made). The caller's EXIT trap should call
# cgroup_remove after stop_server.
start_server_in_cgroup() {
    local home=""
    SERVER_CGROUP=""
    if [ -d /sys/fs/cgroup/memory ]; then
        home=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" {print $3}' /proc/self/cgroup)
        SERVER_CGROUP=/sys/fs/cgroup/memory/fiddler-bench-$$
    elif [ -f /sys/fs/cgroup/cgroup.controllers ]; then
        home=/sys/fs/cgroup$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
        SERVER_CGROUP=/sys/fs/cgroup/fiddler-bench-$$
    fi
    if [ -n "$SERVER_CGROUP" ] && mkdir "$SERVER_CGROUP" 2>/dev/null \
        && echo $BASHPID >"$SERVER_CGROUP/cgroup.procs" 2>/dev/null; then
        start_server "$@"
        echo $BASHPID >"$home/cgroup.procs"
    else
        [ -n "$SERVER_CGROUP" ] && rmdir "$SERVER_CGROUP" 2>/dev/null
        SERVER_CGROUP=""
        start_server "$@"
    fi
}

# cgroup_mark: remembers the server cgroup's usage now (CGROUP_BEFORE, bytes) and starts its
# high-water mark from here (v1 resets it; v2's memory.peak counts from the cgroup's start).
cgroup_mark() {
    if [ -f "$SERVER_CGROUP/memory.max_usage_in_bytes" ]; then
        CGROUP_BEFORE=$(cat "$SERVER_CGROUP/memory.usage_in_bytes")
        echo 0 >"$SERVER_CGROUP/memory.max_usage_in_bytes"
    else
        CGROUP_BEFORE=$(cat "$SERVER_CGROUP/memory.current")
    fi
}

# cgroup_peak_bytes: the server cgroup's high-water mark, in bytes.
cgroup_peak_bytes() {
    if [ -f "$SERVER_CGROUP/memory.max_usage_in_bytes" ]; then
        cat "$SERVER_CGROUP/memory.max_usage_in_bytes"
    else
        cat "$SERVER_CGROUP/memory.peak"
    fi
}

# cgroup_remove: removes the server's cgroup (after stop_server). Never fails.
cgroup_remove() {
    [ -n "${SERVER_CGROUP:-}" ] && rmdir "$SERVER_CGROUP" 2>/dev/null
    return 0
}
