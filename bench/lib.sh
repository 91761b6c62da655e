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

# start_server PLUGINS_DIR [ARGS...]: starts the release binary on a free port; sets
# SERVER_PID, HTTP_ADDR and SERVER_LOG. The caller's EXIT trap should call stop_server.
start_server() {
    local dir=$1
    shift
    SERVER_LOG=$(mktemp)
    target/release/fiddler-crab --http 127.0.0.1:0 --https off --plugins "$dir" "$@" \
        >/dev/null 2>"$SERVER_LOG" &
    SERVER_PID=$!
    for _ in $(seq 1 200); do
        grep -q 'listening on http://' "$SERVER_LOG" && break
        sleep 0.05
    done
    HTTP_ADDR=$(grep -o 'listening on http://[0-9.:]*' "$SERVER_LOG" | sed 's|.*http://||')
    [ -n "$HTTP_ADDR" ] || { cat "$SERVER_LOG" >&2; return 1; }
}

stop_server() {
    [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -f "${SERVER_LOG:-}"
    return 0
}

# rss_kib PID: resident memory of a process in KiB.
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}

# median: the median of the numbers on stdin, one per line.
median() {
    sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
