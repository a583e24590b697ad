"""Slugs, for hosts without a container engine: a uv virtualenv per dependency set plus the app
tree, content-addressed, in the app's sandbox (``kiln.sandbox``).

Layout under the app's sandbox::

    venvs/<deps key>/      python + the app's packages; made by the app's uid (installing runs
                           the packages' own code), reused while the dependency file is unchanged
    slugs/<slug digest>/   app/ (compiled) and slug.json; the platform's, read-only to the app
    .shared/runtime/<d>/   kiln_runtime, beside every sandbox, on the virtualenvs' path

Everything that runs the app's code or reads what it controls (uv, its packages' builds, the
release command) runs as the app's uid, never as the platform's user: a requirements file that
names ``/etc/shadow`` gets that uid's "permission denied", not the file.
"""

from __future__ import annotations

__all__ = ["SlugBuilder", "slug_python"]

import compileall
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

from uv import find_uv_bin

from kiln.builds.artifacts import BuildJob
from kiln.builds.bundle import EXCLUDES_FILE, runtime_bundle, write_excludes
from kiln.builds.log import BuildFailed, BuildLog
from kiln.errors import InvalidInput
from kiln.models import Artifact, ArtifactKind
from kiln.proc import host_environment, run_streaming
from kiln.sandbox import Sandbox
from kiln.settings import Settings

_COMPLETE = ".kiln-complete"
CHECK_TIMEOUT_S = 300  # a plan's check (vLLM reading its arguments: ~15 s)
# Run as the app's uid in the new virtualenv: put kiln_runtime on its path, write the lock file
# (uv's freeze, on stdin) and mark it complete; the platform writes nothing in the app's space.
_FINISH = (
    "import pathlib, sys, sysconfig\n"
    "site = pathlib.Path(sysconfig.get_path('purelib'))\n"
    "(site / 'kiln-runtime.pth').write_text(sys.argv[1] + '\\n')\n"
    "root = pathlib.Path(sys.prefix)\n"
    "(root / 'requirements.lock').write_text(sys.stdin.read())\n"
    "(root / sys.argv[2]).touch()\n"
)


def _reachable(path: Path, mode: int = stat.S_IXOTH) -> bool:
    """Whether any uid may use ``path`` (run it, by default): every directory above it
    searchable by others, and the file itself open to them in ``mode``."""
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    if real.stat().st_mode & mode != mode:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def slug_python(settings: Settings) -> str:
    """The Python slug virtualenvs are made from: one apps' uids can run (this one may live in
    a home folder they cannot enter, e.g. pyenv under /root)."""
    if settings.slug_python:
        return settings.slug_python
    if os.geteuid() != 0 or _reachable(Path(sys.executable)):
        return sys.executable
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (f"/usr/bin/{version}", f"/usr/local/bin/{version}", "/usr/bin/python3"):
        if _reachable(Path(candidate)):
            return candidate
    raise InvalidInput(
        f"no Python that apps' uids can run: {sys.executable} is in a folder they cannot enter, "
        f"and there is no /usr/bin/{version}; install python3 (apt-get install python3-venv), "
        "or set KILN_SLUG_PYTHON",
        code="no_slug_python",
    )


class SlugBuilder:
    kind = ArtifactKind.SLUG

    def __init__(self, settings: Settings, python: str | None = None) -> None:
        self.settings = settings
        self.home = settings.home
        self.python = python or slug_python(settings)
        self.index_url = settings.resolved_index_url
        self.find_links = settings.resolved_find_links
        self.ca_bundle = settings.resolved_ca_bundle
        self.uv = find_uv_bin()

    def describe(self) -> str:
        return f"slug (uv virtualenv + app tree, under {self.settings.resolved_sandbox_dir})"

    def build(self, job: BuildJob, log: BuildLog) -> Artifact:
        if not self.settings.allow_slugs:
            raise BuildFailed(
                "slugs are turned off on this platform (KILN_ALLOW_SLUGS=false): deploy an image "
                "(kiln deploy --artifact image) where a container engine runs",
                code="slugs_disabled",
            )
        box = self._sandbox(job)
        key = self._venv_key(job)
        digest = hashlib.sha256(
            f"{job.source_digest}\n{key}\n{job.plan.model_dump_json()}".encode()
        ).hexdigest()
        slug = box.slugs / digest
        if (slug / _COMPLETE).exists():
            log.step(f"Slug {digest[:12]} already built from this exact source; reusing it")
        else:
            self._assemble(job, box, key, slug, log)
        venv = self._venv(job, box, key, slug, log)
        if job.plan.check:
            self._check(job, box, venv, slug, log)
        return Artifact(
            kind=ArtifactKind.SLUG,
            reference=str(slug),
            digest=digest,
            runtime=job.plan.runtime,
            command=[str(venv / "bin" / "python"), *job.plan.command[1:]],
            env=dict(job.plan.env),
        )

    def _sandbox(self, job: BuildJob) -> Sandbox:
        if job.sandbox is None:
            raise BuildFailed("internal error: a slug build needs the app's sandbox")
        return job.sandbox.ensure()

    def _uv_env(self, box: Sandbox) -> dict[str, str]:

        env = {**host_environment(), **box.environment()}
        # Each app's own cache where apps have uids of their own (a shared one would let one
        # app's build poison another's packages); one for all where they share the platform's.
        cache = box.uv_cache if box.uid is not None else self._platform_cache()
        env.update(UV_CACHE_DIR=str(cache), UV_LINK_MODE="hardlink",
                   UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1", UV_NO_CONFIG="1")  # fmt: skip
        if self.ca_bundle:
            env["SSL_CERT_FILE"] = str(self._shared_file(box, self.ca_bundle, "ca.pem"))
        return env

    def _platform_cache(self) -> Path:
        return self.settings.uv_cache_dir or self.home / "cache" / "uv"

    def _venv_key(self, job: BuildJob) -> str:
        deps = job.plan.dependencies
        return hashlib.sha256(
            f"{deps.sha256 if deps else '-'}\n{runtime_bundle().digest}\n{self.python}\n"
            f"{sys.version}\n{job.plan.extra_requirements}\n{job.plan.excluded_requirements}".encode()
        ).hexdigest()[:32]

    def _venv(self, job: BuildJob, box: Sandbox, key: str, slug: Path, log: BuildLog) -> Path:
        deps = job.plan.dependencies
        venv = box.venvs / key
        if (venv / _COMPLETE).exists():
            log.step(f"Reusing dependencies {key[:12]} ({deps.path if deps else 'none'} unchanged)")
            return venv
        log.step(f"Installing dependencies{f' from {deps.path}' if deps else ''} with uv")
        scratch = box.venvs / f".{key}.{os.urandom(4).hex()}"
        uv = self._shared_uv(box)
        try:
            self._uv(box, [uv, "venv", "--relocatable", "--python", self.python, str(scratch)], log)
            bundle = runtime_bundle()
            # Compiled here, once: else each dyno start compiles every module it imports
            # (importing torch and transformers: 3.0 s with bytecode, 5.6 s without).
            command = [uv, "pip", "install", "--compile-bytecode",
                       "--python", str(scratch / "bin" / "python"),
                       *bundle.requirements, *job.plan.extra_requirements]  # fmt: skip
            if deps is not None:  # read from the slug, which the app's uid may read
                command += ["-r", str(slug / "app" / deps.path)]
            if job.plan.excluded_requirements:
                command += ["--excludes", str(slug / EXCLUDES_FILE)]
            if self.index_url:
                command += ["--default-index", self.index_url]
            for directory in self.find_links:
                command += ["--find-links", directory]
            self._uv(
                box,
                command,
                log,
                failure=f"could not install the dependencies{f' from {deps.path}' if deps else ''}",
            )
            frozen = subprocess.run(
                [uv, "pip", "freeze", "--python", str(scratch / "bin" / "python")],
                capture_output=True, text=True, env=self._uv_env(box), check=True,
                cwd=box.home, **box.process_options(),
            ).stdout  # fmt: skip
            subprocess.run(
                [str(scratch / "bin" / "python"), "-I", "-c", _FINISH,
                 str(self._shared_runtime(box)), _COMPLETE],
                input=frozen, text=True, check=True, env=self._uv_env(box), cwd=box.home,
                capture_output=True, **box.process_options(),
            )  # fmt: skip
            log.info(f"{len(frozen.splitlines())} packages locked in requirements.lock")
            try:
                scratch.rename(venv)
            except OSError:  # another build made the same environment first: use it
                self._remove(box, scratch)
        except BaseException:
            self._remove(box, scratch)
            raise
        return venv

    def _assemble(self, job: BuildJob, box: Sandbox, key: str, slug: Path, log: BuildLog) -> None:
        """The slug tree, written by the platform where the app cannot write, compiled by the
        platform's own Python (compiling runs none of the app's code), readable by the app."""
        log.step("Compiling the app")
        scratch = Path(tempfile.mkdtemp(prefix=f".{slug.name}.", dir=slug.parent))
        try:
            shutil.copytree(job.source, scratch / "app", symlinks=True)
            code, lines = run_streaming(
                [sys.executable, "-I", "-m", "compileall", "-q", "."], log.info,
                cwd=scratch / "app",
            )  # fmt: skip
            if code != 0:
                raise BuildFailed(
                    "the app does not compile: " + _first_error(lines), code="syntax_error"
                )
            (scratch / "slug.json").write_text(json.dumps({
                "venv": str(box.venvs / key), "runtime": job.plan.runtime,
                "plan": job.plan.model_dump(mode="json"),
            }, indent=2))  # fmt: skip
            write_excludes(scratch / EXCLUDES_FILE, job.plan.excluded_requirements)
            (scratch / _COMPLETE).touch()
            box.share(scratch)
            try:
                scratch.rename(slug)
            except OSError:
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        log.step(f"Slug {slug.name[:12]} ready")

    def _shared_runtime(self, box: Sandbox) -> Path:
        """kiln_runtime, once per version, where every app's uid can read it (not its own
        copy: the platform writes nothing into the app's virtualenv)."""
        bundle = runtime_bundle()
        target = box.shared / "runtime" / bundle.digest[:16]
        if not (target / _COMPLETE).exists():
            target.parent.mkdir(mode=0o755, exist_ok=True)
            os.chmod(target.parent, 0o755)  # noqa: PTH101, S103 (whatever the umask)
            scratch = Path(tempfile.mkdtemp(prefix=".runtime.", dir=target.parent))
            bundle.copy_to(scratch)
            # For the platform's Python version; a dyno on another reads its own tag's, absent.
            compileall.compile_dir(scratch, quiet=1)
            (scratch / _COMPLETE).touch()
            _world_readable(scratch)
            try:
                scratch.rename(target)
            except OSError:
                shutil.rmtree(scratch, ignore_errors=True)
        return target

    def _shared_uv(self, box: Sandbox) -> str:
        """uv, where apps' uids can run it (the platform's own may sit in a home folder)."""
        if box.uid is None or _reachable(Path(self.uv)):
            return self.uv
        return str(self._shared_file(box, Path(self.uv), "uv", executable=True))

    def _shared_file(self, box: Sandbox, source: Path, name: str, executable: bool = False) -> Path:
        if box.uid is None or _reachable(source, 0o005 if executable else 0o004):
            return source
        target = box.shared / name
        if not target.exists() or target.stat().st_mtime < source.stat().st_mtime:
            scratch = box.shared / f".{name}.{os.urandom(4).hex()}"
            shutil.copyfile(source, scratch)
            os.chmod(scratch, 0o755 if executable else 0o644)  # noqa: PTH101 (public)
            scratch.rename(target)
        return target

    def _uv(self, box: Sandbox, args: list[str], log: BuildLog, failure: str = "uv failed") -> None:
        code, lines = run_streaming(args, log.info, env=self._uv_env(box), cwd=box.home,
                                    as_sandbox=box)  # fmt: skip
        if code != 0:
            detail = "\n".join(line for line in lines[-8:] if line.strip())
            raise BuildFailed(f"{failure}:\n{detail}", code="dependencies_failed")

    def _check(self, job: BuildJob, box: Sandbox, venv: Path, slug: Path, log: BuildLog) -> None:
        """The plan's check, in the built environment, as the app's uid, with the plan's env."""
        log.step(f"Checking the {job.plan.runtime} runtime's settings")
        command = [str(venv / "bin" / "python"), *job.plan.check[1:]]
        env = {**host_environment(), **box.environment(), **job.plan.env, "PYTHONUNBUFFERED": "1"}
        try:
            code, lines = run_streaming(command, log.info, env=env, cwd=slug / "app",
                                        as_sandbox=box, timeout_s=CHECK_TIMEOUT_S)  # fmt: skip
        except TimeoutError:
            raise BuildFailed(
                f"checking the {job.plan.runtime} runtime's settings took over "
                f"{CHECK_TIMEOUT_S} s; deploy again (a loaded build machine?)",
                code="runtime_check_timeout",
            ) from None
        if code != 0:
            said = [line for line in lines if line.startswith(("kiln:", "vllm: error"))]
            detail = "\n".join(said or [line for line in lines[-8:] if line.strip()])
            raise BuildFailed(
                f"kiln.toml asks the {job.plan.runtime} runtime for what it refuses:\n{detail}\n"
                "Fix kiln.toml and deploy again",
                code="runtime_settings_refused",
            )

    def _remove(self, box: Sandbox, path: Path) -> None:
        """Remove what the app's uid made, as that uid (a tree it owns may hold its links)."""
        subprocess.run(["rm", "-rf", "--", str(path)], check=False, cwd=box.home,
                       **box.process_options())  # fmt: skip


def _world_readable(root: Path) -> None:
    for directory, _dirnames, filenames in os.walk(root):
        os.chmod(directory, 0o755)  # noqa: PTH101, S103 (public code)
        for name in filenames:
            os.chmod(Path(directory) / name, 0o644)  # noqa: PTH101


def _first_error(lines: list[str]) -> str:
    """compileall's report: the file and line, the offending code and the error."""
    meaningful = [line for line in lines if line.strip()]
    return "\n".join(meaningful[:8]) if meaningful else "(no output)"
