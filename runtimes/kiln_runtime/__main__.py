"""``python -m kiln_runtime``: start the dyno for ``$KILN_RUNTIME`` serving ``$KILN_ENTRYPOINT``.

Arguments override the environment: ``python -m kiln_runtime python main:app``.
"""

import os
import sys
from pathlib import Path


def main() -> None:
    runtime = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("KILN_RUNTIME", "python")
    if len(sys.argv) > 2:
        os.environ["KILN_ENTRYPOINT"] = sys.argv[2]
    here = str(Path.cwd())
    if "" not in sys.path and here not in sys.path:  # the app's modules sit in the working dir
        sys.path.insert(0, here)
    if runtime == "python":
        from kiln_runtime.python.server import main as run
    elif runtime == "model":
        from kiln_runtime.model.server import main as run
    elif runtime == "llm":
        from kiln_runtime.llm.server import main as run
    elif runtime == "embeddings":
        from kiln_runtime.embeddings.server import main as run
    else:
        sys.exit(
            f"kiln_runtime: unknown runtime {runtime!r}; expected python, model, llm or embeddings"
        )
    run()


if __name__ == "__main__":
    main()
