# Shared by scripts/quickstart and scripts/test: make .venv with Kiln installed, idempotently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"
            return
        fi
    done
    echo "Kiln needs Python 3.11 or newer; install it (e.g. apt-get install python3.11) and rerun." >&2
    exit 1
}

# ensure_venv [EXTRA]: create .venv and install Kiln (with the EXTRA, e.g. "test") into it.
ensure_venv() {
    local extra="${1:-}" spec="$ROOT"
    [ -n "$extra" ] && spec="$ROOT[$extra]"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "-----> Creating $VENV"
        "$(pick_python)" -m venv "$VENV"
    fi
    local stamp="$VENV/.kiln-installed-${extra:-base}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ] ||
        [ "$ROOT/runtimes/pyproject.toml" -nt "$stamp" ]; then
        echo "-----> Installing Kiln${extra:+ with [$extra]} into $VENV"
        "$VENV/bin/python" -m pip install -q --upgrade pip uv
        # kiln-runtime (runtimes/) is the in-dyno distribution the platform's buildpacks come from.
        # Compiled now, not by every process that imports them: a replica's worker process
        # imports Ray and Serve at each cold start (about 0.9 s less with bytecode to read).
        if ! "$VENV/bin/uv" pip install -q --compile-bytecode --python "$VENV/bin/python" \
            -e "$ROOT/runtimes" -e "$spec"; then
            echo "       uv could not install; trying pip"
            "$VENV/bin/python" -m pip install -q -e "$ROOT/runtimes" -e "$spec"
        fi
        if [ "$extra" = test ]; then
            echo "-----> Installing the model runtimes' stack (torch, transformers) with pip"
            "$VENV/bin/python" -m pip install -q -e "$ROOT[ml]" 2> >(grep -v "^WARNING: Location" >&2)
        fi
        touch "$stamp"
    fi
    # Kiln's own modules (an editable install: they are the checkout's), brought up to date.
    "$VENV/bin/python" -m compileall -q "$ROOT/platform/kiln" "$ROOT/runtimes/kiln_runtime" >/dev/null
}

# --- container engines (for image builds) ---------------------------------------------------------

ENGINE_DIR="${KILN_ENGINE_DIR:-/tmp/kiln-engines}"
DOCKER_SOCK="$ENGINE_DIR/docker.sock"
PODMAN_SOCK="$ENGINE_DIR/podman.sock"

_answers() { curl -sf --max-time 2 --unix-socket "$1" http://engine/_ping >/dev/null 2>&1; }

_apt_install() {
    # Installs Debian packages when missing, as root; prints why not otherwise.
    local missing=()
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "       missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
        return 1
    fi
    echo "-----> apt-get install ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
}

_wait_for() {
    for _ in $(seq 1 100); do _answers "$1" && return 0; sleep 0.2; done
    echo "       $2 did not answer on $1; see $ENGINE_DIR/$2.log" >&2
    return 1
}

# ensure_engines: dockerd and podman's Docker-compatible API, each on its own socket under
# $ENGINE_DIR, each with the local base image. Exports KILN_TEST_ENGINES and DOCKER_HOST.
ensure_engines() {
    mkdir -p "$ENGINE_DIR"
    local engines=()
    _apt_install docker-registry:docker-registry || true  # a cluster's image registry
    if _apt_install dockerd:docker.io debootstrap:debootstrap curl:curl; then
        if ! _answers "$DOCKER_SOCK"; then
            echo "-----> Starting dockerd on $DOCKER_SOCK"
            dockerd --data-root "$ENGINE_DIR/docker-data" --exec-root "$ENGINE_DIR/docker-exec" \
                --pidfile "$ENGINE_DIR/docker.pid" -H "unix://$DOCKER_SOCK" \
                >"$ENGINE_DIR/dockerd.log" 2>&1 &
            _wait_for "$DOCKER_SOCK" dockerd
        fi
        _answers "$DOCKER_SOCK" && engines+=("unix://$DOCKER_SOCK")
    fi
    if _apt_install podman:podman runc:runc; then
        # As root in a container that cannot raise rlimits, with v1-hybrid cgroups, podman needs
        # default ulimits it may keep, and runc.
        export CONTAINERS_CONF="$ENGINE_DIR/containers.conf"
        printf '[containers]\ndefault_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n[engine]\nruntime = "runc"\n' >"$CONTAINERS_CONF"
        # The tests' image registries listen on loopback over HTTP (dockerd allows that there).
        export CONTAINERS_REGISTRIES_CONF="$ENGINE_DIR/registries.conf"
        printf '[[registry]]\nlocation = "127.0.0.1"\ninsecure = true\n' >"$CONTAINERS_REGISTRIES_CONF"
        if ! _answers "$PODMAN_SOCK"; then
            echo "-----> Starting podman's Docker API on $PODMAN_SOCK"
            podman system service --time=0 "unix://$PODMAN_SOCK" >"$ENGINE_DIR/podman.log" 2>&1 &
            _wait_for "$PODMAN_SOCK" podman
        fi
        _answers "$PODMAN_SOCK" && engines+=("unix://$PODMAN_SOCK")
    fi
    if [ ${#engines[@]} -eq 0 ]; then
        echo "       no container engine: image builds will be skipped (slugs still build)" >&2
        return 0
    fi
    export KILN_TEST_ENGINES="${engines[*]}"
    export DOCKER_HOST="${engines[0]}"
    _ensure_base_images
}

_ensure_base_images() {
    local base="kiln/base:bookworm" first="${engines[0]}"
    if ! DOCKER_HOST="$first" "$VENV/bin/python" -c "
import sys; from kiln.engine import connect_engine
sys.exit(0 if connect_engine(None).has_image('$base') else 1)"; then
        echo "-----> Bootstrapping $base on $first (debootstrap; about a minute)"
        DOCKER_HOST="$first" "$VENV/bin/kiln" images:bootstrap | grep -E '^-----> ' || return 1
    fi
    for other in "${engines[@]:1}"; do
        if ! DOCKER_HOST="$other" "$VENV/bin/python" -c "
import sys; from kiln.engine import connect_engine
sys.exit(0 if connect_engine(None).has_image('$base') else 1)"; then
            echo "-----> Copying $base to $other"
            docker -H "$first" save "$base" | podman --url "$other" load >/dev/null
        fi
    done
}

# ensure_browser: Debian's Chromium, for the dashboard's tests in a real browser (Playwright
# drives it; it never downloads a browser of its own). Exports KILN_TEST_CHROMIUM when there.
ensure_browser() {
    _apt_install chromium:chromium || true
    if command -v chromium >/dev/null; then
        KILN_TEST_CHROMIUM="$(command -v chromium)"
        export KILN_TEST_CHROMIUM
    fi
}
