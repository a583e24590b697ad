"""Random manifests: each is valid, or rejected with a ManifestError naming a field; never a crash."""

from typing import Any

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiln.errors import ManifestError
from kiln.manifest import Manifest, parse_manifest

KEYS = {
    None: ["name", "runtime", "entrypoint", "requirements", "model", "addons", "release",
           "resources", "scaling", "health", "env", "nmae", "bogus"],
    "resources": ["cpu", "memory", "gpu", "gpu_memory", "gpus"],
    "scaling": ["min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s",
                "downscale_delay_s", "downscale_to_zero_delay_s", "max_ongoing_requests",
                "max_queued_requests", "max_replica"],
    "health": ["path", "startup_timeout_s", "period_s", "timeout_s", "pth"],
}  # fmt: skip

plausible_strings = st.sampled_from(
    ["chat", "Chat", "llm", "python", "app:app", "main", "4Gi", "4 gigs", "H100", "H100:2",
     "any:0.5", "any:1.5", "Z999", "H100:0", "org/model@main", "../x", "/healthz", "", "api-keys",
     "vector-store", "requirements.txt", "H100:-1", "a" * 40]
)  # fmt: skip
scalars = st.one_of(
    plausible_strings,
    st.text(max_size=12),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)


def section(name: str | None) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.sampled_from(KEYS[name]), values, max_size=len(KEYS[name]))


manifests = st.builds(
    lambda top, resources, scaling, health, env: {
        **top,
        **({"resources": resources} if resources else {}),
        **({"scaling": scaling} if scaling else {}),
        **({"health": health} if health else {}),
        **({"env": env} if env else {}),
    },
    section(None).map(
        lambda d: {k: v for k, v in d.items() if k not in ("resources", "scaling", "health", "env")}
    ),
    section("resources"),
    section("scaling"),
    section("health"),
    st.dictionaries(st.text(max_size=10), scalars, max_size=3),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifests)
def test_random_manifests_are_valid_or_rejected_naming_a_field(data: dict[str, Any]) -> None:
    text = tomli_w.dumps(data)
    try:
        manifest = parse_manifest(text)
    except ManifestError as exc:
        assert exc.problems, "a ManifestError must list what is wrong"
        for problem in exc.problems:
            assert problem.field, f"problem without a field: {problem}"
            assert problem.field.split(".")[0].split("[")[0] in data, problem
            assert str(problem).startswith("kiln.toml")
    else:
        assert isinstance(manifest, Manifest)


numbers = st.one_of(
    st.integers(min_value=-2, max_value=2000),
    st.floats(min_value=-1, max_value=1e7, allow_nan=False),
    st.sampled_from([0, 0.0, 1e-9, 0.001, 1, 2**31, 2**63]),
)
plausible = st.fixed_dictionaries(
    {},
    optional={
        "resources": st.fixed_dictionaries({}, optional={
            "cpu": numbers, "memory": st.sampled_from(["1Mi", "512Mi", "4Gi", "1Ti", "1"]),
            "gpu": st.sampled_from(["any:1", "H100:2", "any:0.5", "A10G:1", ["L4:1", "any:1"]]),
            "gpu_memory": st.sampled_from(["1Gi", "20Gi"])}),
        "scaling": st.fixed_dictionaries({}, optional={k: numbers for k in KEYS["scaling"][:-1]}),
        "health": st.fixed_dictionaries({}, optional={
            "startup_timeout_s": numbers, "period_s": numbers, "timeout_s": numbers}),
    },
)  # fmt: skip


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible)
def test_every_manifest_that_validates_is_one_ray_serve_accepts(data: dict[str, Any]) -> None:
    """What kiln manifest:check passes, Serve's own schema must accept: a value Serve refuses
    is caught at check time, not by the reconciler after the release exists."""
    from kiln.models import Artifact, ArtifactKind
    from kiln.run.serve_config import Deployable, application_config, serve_refusal

    try:
        manifest = parse_manifest(tomli_w.dumps(data))
    except ManifestError:
        return
    artifact = Artifact(kind=ArtifactKind.SLUG, reference="/slug", digest="0" * 64,
                        runtime="python", command=["python"])  # fmt: skip
    item = Deployable("app", 2, artifact, "sealed", manifest)
    config = application_config(item, log_dir="/logs", docker_host=None)
    if config is not None:  # None: zero replicas, nothing for Serve
        assert serve_refusal(config) is None, (data, serve_refusal(config))
