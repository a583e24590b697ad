# Shared by scripts/quickstart and scripts/test: make .venv with Kiln installed, idempotently.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"

pick_python() {
    for candidate in python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
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
        if ! "$VENV/bin/uv" pip install -q --python "$VENV/bin/python" -e "$ROOT/runtimes" -e "$spec"; then
            echo "       uv could not install; trying pip"
            "$VENV/bin/python" -m pip install -q -e "$ROOT/runtimes" -e "$spec"
        fi
        touch "$stamp"
    fi
}
