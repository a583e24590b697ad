"""The runtimes' detect() and plan(): pure functions over an app's files."""

import pytest

from kiln.manifest import parse_manifest
from kiln_runtime.model import buildpack as model
from kiln_runtime.plan import DetectionError
from kiln_runtime.python import buildpack as python


class Files:
    """A Source made of a dict: path -> text."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files

    def exists(self, path: str) -> bool:
        return path in self.files

    def read_bytes(self, path: str) -> bytes:
        return self.files[path].encode()

    def python_files(self) -> list[str]:
        return sorted(p for p in self.files if p.endswith(".py"))


FASTAPI = "from fastapi import FastAPI\napp = FastAPI()\n"


def test_python_detects_a_dependency_file_and_an_app_object() -> None:
    assert python.detect(Files({"requirements.txt": "fastapi", "main.py": FASTAPI}))
    assert python.detect(Files({"pyproject.toml": "[project]", "server.py": FASTAPI}))
    assert not python.detect(Files({"main.py": FASTAPI}))  # no dependency file
    assert not python.detect(Files({"requirements.txt": "", "lib.py": FASTAPI}))  # no main module


def test_python_plan_names_entrypoint_dependencies_and_environment() -> None:
    plan = python.plan(Files({"requirements.txt": "fastapi\n", "app.py": FASTAPI}), None)
    assert plan.entrypoint == "app:app" and plan.runtime == "python"
    assert plan.dependencies is not None and plan.dependencies.path == "requirements.txt"
    assert plan.env == {
        "KILN_RUNTIME": "python",
        "KILN_ENTRYPOINT": "app:app",
        "KILN_HEALTH_PATH": "/healthz",
    }
    assert not plan.gpu


def test_the_dependency_key_changes_with_the_file_only() -> None:
    one = python.plan(Files({"requirements.txt": "fastapi\n", "main.py": FASTAPI}), None)
    code_change = python.plan(
        Files({"requirements.txt": "fastapi\n", "main.py": FASTAPI + "x = 1\n"}), None
    )
    dep_change = python.plan(
        Files({"requirements.txt": "fastapi\nhttpx\n", "main.py": FASTAPI}), None
    )
    assert one.dependencies == code_change.dependencies != dep_change.dependencies


def test_manifest_entrypoint_health_path_and_gpu_reach_the_plan() -> None:
    manifest = parse_manifest(
        'entrypoint = "svc.api:server"\n[health]\npath = "/ready"\n[resources]\ngpu = "any:0.5"\n'
    )
    plan = python.plan(
        Files({"requirements.txt": "", "svc/api.py": "server = object()\n"}), manifest
    )
    assert (
        plan.entrypoint == "svc.api:server"
        and plan.env["KILN_HEALTH_PATH"] == "/ready"
        and plan.gpu
    )


def test_a_wsgi_application_object_is_found() -> None:
    plan = python.plan(
        Files({"requirements.txt": "", "wsgi.py": "def application(e, s): ...\n"}), None
    )
    assert plan.entrypoint == "wsgi:application"


@pytest.mark.parametrize(
    ("files", "manifest", "message"),
    [({"requirements.txt": "", "main.py": "x = 1\n"}, 'entrypoint = "main:app"',
      "main.py defines no `app`: the entrypoint main:app needs a module-level app"),
     ({"requirements.txt": ""}, 'entrypoint = "main:app"', "the app has no module main"),
     ({"requirements.txt": "", "main.py": "def f(:\n"}, 'entrypoint = "main:app"', "main.py:1: syntax error"),
     ({"main.py": FASTAPI}, 'requirements = "reqs/prod.txt"', "names requirements = 'reqs/prod.txt', but the app has no such file"),
     ({"requirements.txt": ""}, "", "looked for requirements.txt or pyproject.toml, and a module main.py"),
     ({"requirements.txt": "", "main.py": "x = 1\n"}, "", "the python runtime found no app object"),
     ({"requirements.txt": "", "main.py": "app = (\n"}, "", "main.py:1: syntax error")],
)  # fmt: skip
def test_python_plan_errors_say_what_is_wrong(
    files: dict[str, str], manifest: str, message: str
) -> None:
    with pytest.raises(DetectionError) as caught:
        python.plan(Files(files), parse_manifest(manifest))
    assert message in str(caught.value)


def test_model_detects_a_class_with_load_and_predict() -> None:
    source = Files(
        {"model.py": "class M:\n    def load(self): ...\n    def predict(self, x: int): ...\n"}
    )
    assert model.detect(source)
    assert model.plan(source, None).entrypoint == "model:M"
    assert not model.detect(Files({"model.py": "class M:\n    def predict(self): ...\n"}))


def test_model_plan_checks_the_named_class() -> None:
    source = Files({"model.py": "class M:\n    def load(self): ...\n    def predict(self): ...\n"})
    with pytest.raises(DetectionError, match=r"model.py defines no class Missing"):
        model.plan(source, parse_manifest('entrypoint = "model:Missing"'))
