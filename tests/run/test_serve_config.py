"""Release + formation + manifest -> Serve config: pure, and valid for Ray Serve's own schema."""

import pytest
from ray.serve.schema import ServeDeploySchema

from kiln.manifest import parse_manifest
from kiln.models import Artifact, ArtifactKind, Formation
from kiln.run.serve_config import Deployable, application_config, serve_config
from kiln.run.spec import DynoSpec

ARTIFACT = Artifact(kind=ArtifactKind.SLUG, reference="/slugs/abc", digest="abc", runtime="python",
                    command=["python", "-m", "kiln_runtime"], env={"KILN_RUNTIME": "python"})  # fmt: skip


def item(manifest: str = "", formation: Formation | None = None, app: str = "chat") -> Deployable:
    return Deployable(app, 3, ARTIFACT, "gAAAA-sealed", parse_manifest(manifest), formation)


def config_of(*items: Deployable) -> dict:  # type: ignore[type-arg]
    return serve_config(
        list(items), http_host="127.0.0.1", http_port=8000, log_dir="/logs", docker_host=None
    )


def test_one_application_per_app_at_its_route() -> None:
    config = config_of(item(app="b-app"), item(app="a-app"))
    assert [(a["name"], a["route_prefix"]) for a in config["applications"]] == [
        ("a-app", "/a-app"),
        ("b-app", "/b-app"),
    ]
    assert config["http_options"] == {"host": "127.0.0.1", "port": 8000}
    ServeDeploySchema.model_validate(config)  # what Serve's REST API will accept


def test_the_spec_carries_the_release_and_sealed_config_only() -> None:
    app = application_config(
        item('[env]\nLOG_LEVEL = "debug"\n[health]\npath = "/ready"\n'),
        log_dir="/l",
        docker_host=None,
    )
    assert app is not None
    spec = DynoSpec.model_validate(app["args"]["spec"])
    assert (spec.release, spec.config_sealed, spec.health_path) == (3, "gAAAA-sealed", "/ready")
    assert spec.env["LOG_LEVEL"] == "debug" and spec.artifact == ARTIFACT


def test_math_threads_follow_the_cpu_reservation_unless_the_app_sets_them() -> None:
    def env(manifest: str) -> dict[str, str]:
        app = application_config(item(manifest), log_dir="/l", docker_host=None)
        assert app is not None
        return DynoSpec.model_validate(app["args"]["spec"]).env

    assert env("")["OMP_NUM_THREADS"] == "1"
    assert env("[resources]\ncpu = 2.5\n")["MKL_NUM_THREADS"] == "3"
    assert env("[resources]\ncpu = 0.5\n")["OMP_NUM_THREADS"] == "1"
    assert env('[resources]\ncpu = 2\n[env]\nOMP_NUM_THREADS = "8"\n')["OMP_NUM_THREADS"] == "8"


def test_fixed_replicas_and_autoscaling_from_the_manifest() -> None:
    fixed = application_config(
        item("[scaling]\nmin_replicas = 2\nmax_replicas = 2\n"), log_dir="/l", docker_host=None
    )
    assert fixed is not None and fixed["deployments"][0]["num_replicas"] == 2
    scaled = application_config(
        item("[scaling]\nmin_replicas = 0\nmax_replicas = 4\ntarget_ongoing_requests = 3\n"
             "downscale_to_zero_delay_s = 5\n"), log_dir="/l", docker_host=None,
    )  # fmt: skip
    assert scaled is not None
    autoscaling = scaled["deployments"][0]["autoscaling_config"]
    assert (autoscaling["min_replicas"], autoscaling["max_replicas"]) == (0, 4)
    assert (
        autoscaling["target_ongoing_requests"] == 3
        and autoscaling["downscale_to_zero_delay_s"] == 5
    )
    assert autoscaling["initial_replicas"] == 1  # a new release is started once, even at min 0


def test_a_formation_overrides_the_manifest() -> None:
    app = application_config(item("[scaling]\nmax_replicas = 4\n", Formation(min_replicas=3, max_replicas=3)),
                             log_dir="/l", docker_host=None)  # fmt: skip
    assert app is not None and app["deployments"][0]["num_replicas"] == 3


def test_scaled_to_zero_means_no_application() -> None:
    assert (
        application_config(
            item(formation=Formation(min_replicas=0, max_replicas=0)),
            log_dir="/l",
            docker_host=None,
        )
        is None
    )
    assert (
        config_of(item(formation=Formation(min_replicas=0, max_replicas=0)))["applications"] == []
    )


@pytest.mark.parametrize(
    ("gpu", "options"),
    [('"H100:2"', {"num_gpus": 2.0, "accelerator_type": "H100"}), ('"any:0.5"', {"num_gpus": 0.5})],
)
def test_resources_become_actor_options(gpu: str, options: dict[str, object]) -> None:
    app = application_config(
        item(f'[resources]\ncpu = 2\nmemory = "4Gi"\ngpu = {gpu}\n'), log_dir="/l", docker_host=None
    )
    assert app is not None
    assert app["deployments"][0]["ray_actor_options"] == {
        "num_cpus": 2.0,
        "memory": 4 * 2**30,
        **options,
    }


def test_rollouts_start_new_replicas_before_stopping_old_ones() -> None:
    app = application_config(item(), log_dir="/l", docker_host=None)
    assert app is not None and app["deployments"][0]["max_surge_percent"] == 100


def test_serve_logs_no_access_line_per_request_the_router_line_does() -> None:
    config = config_of(item())
    parsed = ServeDeploySchema.model_validate(config).applications[0]
    assert parsed.logging_config is not None and parsed.logging_config.enable_access_log is False


def test_the_config_is_deterministic() -> None:
    assert config_of(item(), item(app="other")) == config_of(item(app="other"), item())


def test_a_spec_an_older_kiln_stored_keeps_its_model() -> None:
    """Serve's stored config (and a canary's spec) from before adapters named one folder."""
    old = {"app": "a", "release": 1, "config_sealed": "x", "log_dir": "/l",
           "artifact": {"kind": "slug", "reference": "/s", "digest": "d", "runtime": "llm",
                        "command": ["python"]},
           "model_cache": "/m", "model_folder": "models--org--m", "model_revision": "v1"}  # fmt: skip
    spec = DynoSpec.model_validate(old)
    assert [(m.folder, m.revision) for m in spec.models] == [("models--org--m", "v1")]
