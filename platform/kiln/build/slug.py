"""Slugs, for hosts without a container engine: a uv virtualenv per dependency set (hard-linked
from uv's cache, reused while the dependency file is unchanged) plus the app tree, content-addressed.

Layout under ``$KILN_HOME``::

    venvs/<deps key>/        python + the app's and the runtime's packages; requirements.lock
    slugs/<slug digest>/     app/ and slug.json; the dyno runs <venv>/bin/python -m kiln_runtime
"""

from __future__ import annotations

__all__ = ["SlugBuilder"]

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from uv import find_uv_bin

from kiln.build.artifacts import BuildJob, run_streaming
from kiln.build.bundle import REQUIREMENTS_FILE, runtime_bundle
from kiln.build.log import BuildFailed, BuildLog
from kiln.models import Artifact, ArtifactKind
from kiln.settings import Settings

_COMPLETE = ".kiln-complete"


class SlugBuilder:
    kind = ArtifactKind.SLUG

    def __init__(self, settings: Settings, python: str = sys.executable) -> None:
        self.home = settings.home
        self.python = python
        self.index_url = settings.resolved_index_url
        self.find_links = settings.resolved_find_links
        self.ca_bundle = settings.resolved_ca_bundle
        self.uv = find_uv_bin()
        # Slugs hard-link packages from this cache, so it must be on the same filesystem.
        self.cache = settings.uv_cache_dir or self.home / "cache" / "uv"

    def describe(self) -> str:
        return f"slug (uv virtualenv + app tree, under {self.home})"

    def build(self, job: BuildJob, log: BuildLog) -> Artifact:
        venv = self._venv(job, log)
        digest = hashlib.sha256(
            f"{job.source_digest}\n{venv.name}\n{job.plan.model_dump_json()}".encode()
        ).hexdigest()
        slug = self.home / "slugs" / digest
        if (slug / _COMPLETE).exists():
            log.step(f"Slug {digest[:12]} already built from this exact source; reusing it")
        else:
            self._assemble(job, venv, slug, log)
        return Artifact(
            kind=ArtifactKind.SLUG,
            reference=str(slug),
            digest=digest,
            runtime=job.plan.runtime,
            command=[str(venv / "bin" / "python"), *job.plan.command[1:]],
            env=dict(job.plan.env),
        )

    def run_once(
        self, artifact: Artifact, command: str, env: dict[str, str],
        on_line: Callable[[str], None], timeout_s: float,
    ) -> int | None:  # fmt: skip
        """In the slug's app directory, with its dyno's environment and the slug's virtualenv
        first on PATH."""
        from kiln.run.dyno import host_environment

        venv_bin = Path(artifact.command[0]).parent
        host = host_environment()
        path = f"{venv_bin}{os.pathsep}{host.get('PATH', '/usr/bin:/bin')}"
        full = {**host, **artifact.env, **env, "PATH": path, "VIRTUAL_ENV": str(venv_bin.parent)}
        try:
            code, _lines = run_streaming(["/bin/sh", "-c", command], on_line, env=full,
                                         cwd=Path(artifact.reference) / "app", timeout_s=timeout_s)  # fmt: skip
        except TimeoutError:
            return None
        return code

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(UV_CACHE_DIR=str(self.cache), UV_LINK_MODE="hardlink",
                   UV_PYTHON_DOWNLOADS="never", UV_NO_PROGRESS="1")  # fmt: skip
        if self.ca_bundle:
            env["SSL_CERT_FILE"] = str(self.ca_bundle)
        return env

    def _venv(self, job: BuildJob, log: BuildLog) -> Path:
        bundle = runtime_bundle()
        deps = job.plan.dependencies
        key = hashlib.sha256(
            f"{deps.sha256 if deps else '-'}\n{bundle.digest}\n{self.python}\n{sys.version}\n"
            f"{job.plan.extra_requirements}".encode()
        ).hexdigest()[:32]
        venv = self.home / "venvs" / key
        if (venv / _COMPLETE).exists():
            log.step(f"Reusing dependencies {key[:12]} ({deps.path if deps else 'none'} unchanged)")
            return venv
        log.step(f"Installing dependencies{f' from {deps.path}' if deps else ''} with uv")
        venv.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=venv.parent))
        try:
            self._uv(["venv", "--relocatable", "--python", self.python, str(scratch)], log)
            requirements = scratch / REQUIREMENTS_FILE
            bundle.write_requirements(requirements, job.plan.extra_requirements)
            command = ["pip", "install", "--python", str(scratch / "bin" / "python"),
                       "-r", str(requirements)]  # fmt: skip
            if deps is not None:
                command += ["-r", str(job.source / deps.path)]
            if self.index_url:
                command += ["--default-index", self.index_url]
            for directory in self.find_links:
                command += ["--find-links", directory]
            self._uv(
                command,
                log,
                failure=f"could not install the dependencies{f' from {deps.path}' if deps else ''}",
            )
            bundle.copy_to(Path(_site_packages(scratch)))
            frozen = subprocess.run(
                [self.uv, "pip", "freeze", "--python", str(scratch / "bin" / "python")],
                capture_output=True, text=True, env=self._env(), check=True,
            ).stdout  # fmt: skip
            (scratch / "requirements.lock").write_text(frozen)
            log.info(f"{len(frozen.splitlines())} packages locked in requirements.lock")
            (scratch / _COMPLETE).touch()
            try:
                scratch.rename(venv)
            except OSError:  # another build made the same environment first: use it
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        return venv

    def _assemble(self, job: BuildJob, venv: Path, slug: Path, log: BuildLog) -> None:
        log.step("Compiling the app")
        slug.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=f"{slug.name}.", dir=slug.parent))
        try:
            shutil.copytree(job.source, scratch / "app", symlinks=True)
            code, lines = run_streaming(
                [str(venv / "bin" / "python"), "-m", "compileall", "-q", "."], log.info,
                cwd=scratch / "app",
            )  # fmt: skip
            if code != 0:
                raise BuildFailed(
                    "the app does not compile: " + _first_error(lines), code="syntax_error"
                )
            (scratch / "slug.json").write_text(json.dumps({
                "venv": str(venv), "runtime": job.plan.runtime, "plan": job.plan.model_dump(mode="json"),
            }, indent=2))  # fmt: skip
            (scratch / _COMPLETE).touch()
            try:
                scratch.rename(slug)
            except OSError:
                shutil.rmtree(scratch, ignore_errors=True)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        log.step(f"Slug {slug.name[:12]} ready")

    def _uv(self, args: list[str], log: BuildLog, failure: str = "uv failed") -> None:
        code, lines = run_streaming([self.uv, *args], log.info, env=self._env())
        if code != 0:
            detail = "\n".join(line for line in lines[-8:] if line.strip())
            raise BuildFailed(f"{failure}:\n{detail}", code="dependencies_failed")


def _site_packages(venv: Path) -> str:
    return subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def _first_error(lines: list[str]) -> str:
    """compileall's report: the file and line, the offending code and the error."""
    meaningful = [line for line in lines if line.strip()]
    return "\n".join(meaningful[:8]) if meaningful else "(no output)"
