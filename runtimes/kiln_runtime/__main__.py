"""``python -m kiln_runtime``: start the dyno for ``$KILN_RUNTIME`` serving ``$KILN_ENTRYPOINT``.

Arguments override the environment: ``python -m kiln_runtime python main:app``.
"""

import os
import sys


def main() -> None:
    runtime = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KILN_RUNTIME", "python")
    if len(sys.argv) > 2:
        os.environ["KILN_ENTRYPOINT"] = sys.argv[2]
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if runtime == "python":
        from kiln_runtime.python.server import main as run
    elif runtime == "model":
        from kiln_runtime.model.server import main as run
    else:
        sys.exit(f"kiln_runtime: unknown runtime {runtime!r}; expected python or model")
    run()


main()
