"""The pre-receive hook: ``python -m kiln.git.hook``, run by git-receive-pack for every push.

It reads ``<old> <new> <ref>`` lines; refuses branches other than main/master; archives the
pushed commit, builds it through the control plane's API (as the pusher), prints the build log
(git shows it as ``remote:`` lines) and waits for the release to go live. Any failure exits 1,
which makes git reject the push: the branch keeps its old commit, the app its old release.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

from kiln.client import ApiClient, await_release, build_and_follow
from kiln.credentials import Credentials
from kiln.errors import KilnError
from kiln.git.repos import DEPLOY_BRANCHES

ZERO = "0" * 40


def say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    app = os.environ["KILN_APP"]
    updates = [line.split() for line in sys.stdin.read().splitlines() if line.strip()]
    waited = float(os.environ.get("KILN_PUSH_WAITED_S", "0"))
    if waited >= 1:
        say(f"-----> Waited {waited:.0f}s for another push to {app} to finish")
    for _old, new, ref in updates:
        if ref not in DEPLOY_BRANCHES:
            say(f" !     Kiln deploys only the main (or master) branch; {ref} was not pushed.")
            say(" !     Deploy with: git push kiln HEAD:main")
            return 1
        if new == ZERO:
            say(f" !     {ref} cannot be deleted: it is what {app} runs.")
            return 1
    deploys = [(old, new, ref) for old, new, ref in updates]
    if not deploys:
        return 0
    old, new, ref = deploys[-1]
    current = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", ref], capture_output=True, text=True
    )
    if (current.stdout.strip() or ZERO) != old:
        say(f" !     {ref} moved while this push waited (another push landed first).")
        say(" !     Fetch, merge or rebase, and push again.")
        return 1
    client = ApiClient(
        Credentials(api_url=os.environ["KILN_API_URL"], token=os.environ["KILN_TOKEN"])
    )
    say(f"-----> Deploying {new[:10]} to {app}")
    try:
        with tempfile.TemporaryFile() as archive:
            subprocess.run(["git", "archive", "--format=tar.gz", new], stdout=archive, check=True)
            archive.seek(0)
            release = build_and_follow(client, app, archive, say, commit=new)
        await_release(client, app, release, float(os.environ.get("KILN_PUSH_WAIT_S", "900")), say)
    except KilnError as exc:
        for line in exc.message.splitlines():
            say(f" !     {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
