"""Reading kiln.toml: the full example parses; every error names file, line, field, value, rule."""

from pathlib import Path

import pytest

from kiln.errors import KilnError, ManifestError
from kiln.manifest import Accelerator, AddonKind, Manifest, Runtime, load_manifest, parse_manifest

FULL = """\
name = "chat"
runtime = "llm"                       # optional: detected when left out
entrypoint = "app:app"                # runtime-specific
model = "Qwen/Qwen2.5-0.5B-Instruct@main"
addons = ["api-keys", "vector-store"]
release = "python prefetch.py"        # optional release-phase command
[resources]
cpu = 1
memory = "4Gi"
gpu = "H100:1"                        # or "any:0.5", or a list in order of preference
[scaling]
min_replicas = 1
max_replicas = 4
target_ongoing_requests = 2
upscale_delay_s = 1
downscale_delay_s = 30
max_ongoing_requests = 8
[health]
path = "/healthz"
startup_timeout_s = 600
[env]
LOG_LEVEL = "info"
"""


def errors_of(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    return [str(problem) for problem in caught.value.problems]


def test_the_documented_example_parses_into_typed_values() -> None:
    manifest = parse_manifest(FULL)
    assert manifest.name == "chat" and manifest.runtime is Runtime.LLM
    assert manifest.model is not None and manifest.model.revision == "main"
    assert manifest.addons == [AddonKind.API_KEYS, AddonKind.VECTOR_STORE]
    assert manifest.resources.memory is not None and manifest.resources.memory.bytes == 4 * 2**30
    assert [(g.type, g.count) for g in manifest.resources.gpu] == [(Accelerator.H100, 1.0)]
    assert (manifest.scaling.min_replicas, manifest.scaling.max_replicas) == (1, 4)
    assert manifest.env == {"LOG_LEVEL": "info"}


def test_an_empty_manifest_is_valid_with_defaults() -> None:
    manifest = parse_manifest("")
    assert manifest.name is None and manifest.runtime is None
    assert manifest.resources.gpu == () and manifest.health.path == "/healthz"


def test_a_manifest_round_trips_through_its_toml_form() -> None:
    import tomli_w

    manifest = parse_manifest(FULL)
    assert parse_manifest(tomli_w.dumps(manifest.to_toml_dict())) == manifest


def test_max_below_min_replicas_names_line_field_value_and_rule() -> None:
    text = FULL.replace("min_replicas = 1", "min_replicas = 2").replace(
        "max_replicas = 4", "max_replicas = 1"
    )
    assert errors_of(text) == [
        "kiln.toml:13 scaling.max_replicas: got 1; must be >= scaling.min_replicas (2)"
    ]


def test_max_replicas_zero() -> None:
    assert errors_of("[scaling]\nmax_replicas = 0\n") == [
        "kiln.toml:2 scaling.max_replicas: got 0; must be >= scaling.min_replicas (1)"
    ]


def test_unknown_keys_suggest_the_close_name() -> None:
    assert errors_of('nmae = "x"\n[scaling]\nmax_replica = 3\n') == [
        "kiln.toml:1 nmae: unknown key; did you mean 'name'?",
        "kiln.toml:3 scaling.max_replica: unknown key; did you mean 'max_replicas'?",
    ]


def test_unknown_keys_far_from_any_list_what_is_allowed() -> None:
    [error] = errors_of("[health]\nzzz = 1\n")
    assert error.startswith("kiln.toml:2 health.zzz: unknown key; allowed here: path, ")


def test_unknown_table() -> None:
    [error] = errors_of("[sclaing]\nmin_replicas = 1\n")
    assert error == "kiln.toml:1 sclaing: unknown key; did you mean 'scaling'?"


@pytest.mark.parametrize(
    ("gpu", "reason"),
    [("H100:0", "must be more than 0"), ("Z999", "unknown GPU type"),
     ("H100:-1", "must be more than 0"), ("any:1.5", "must be a whole number")],
)  # fmt: skip
def test_bad_gpu_strings(gpu: str, reason: str) -> None:
    [error] = errors_of(f'[resources]\ncpu = 2\ngpu = "{gpu}"\n')
    assert error.startswith(f"kiln.toml:3 resources.gpu: got '{gpu}'; ")
    assert reason in error


def test_gpu_preference_list_names_the_bad_item() -> None:
    [error] = errors_of('[resources]\ngpu = ["H100:1", "A100:2", "Z9"]\n')
    assert "resources.gpu" in error and "item 2: unknown GPU type" in error


def test_gpu_preference_list_parses_in_order() -> None:
    manifest = parse_manifest('[resources]\ngpu = ["H100", "A100-80G:2"]\n')
    assert [str(g) for g in manifest.resources.gpu] == ["H100:1", "A100-80G:2"]


def test_bad_memory() -> None:
    [error] = errors_of('[resources]\nmemory = "4 gigs"\n')
    assert error.startswith("kiln.toml:2 resources.memory: got '4 gigs'; must be a size like")


def test_wrong_types() -> None:
    assert errors_of('[scaling]\nmin_replicas = "two"\n') == [
        "kiln.toml:2 scaling.min_replicas: got 'two'; must be a valid integer, unable to parse "
        "string as an integer"
    ]
    [error] = errors_of("resources = 3\n")
    assert error.startswith("kiln.toml:1 resources: got 3; must be a valid dictionary")


def test_malformed_toml_names_the_line() -> None:
    [error] = errors_of('name = "x"\nruntime = = "llm"\n')
    assert error.startswith("kiln.toml:2: is not valid TOML:")


def test_invalid_app_name_in_manifest() -> None:
    [error] = errors_of('name = "Chat"\n')
    assert error.startswith("kiln.toml:1 name: got 'Chat'; invalid app name")


def test_env_values_become_strings_and_keys_must_be_env_names() -> None:
    manifest = parse_manifest("[env]\nWORKERS = 4\nDEBUG = true\nRATIO = 0.5\n")
    assert manifest.env == {"WORKERS": "4", "DEBUG": "true", "RATIO": "0.5"}
    [error] = errors_of('[env]\n"BAD-NAME" = "x"\n')
    assert error.startswith("kiln.toml:2 env.BAD-NAME: got 'BAD-NAME'; invalid config var name")


def test_duplicate_addons_and_unknown_addons() -> None:
    assert errors_of('addons = ["api-keys", "api-keys"]\n') == [
        "kiln.toml:1 addons: got ['api-keys', 'api-keys']; lists api-keys twice; each add-on "
        "attaches once"
    ]
    assert errors_of('addons = ["api-keys", "redis"]\n') == [
        "kiln.toml:1 addons[1]: got 'redis'; must be one of 'api-keys' or 'vector-store'"
    ]


def test_entrypoint_and_requirements_forms() -> None:
    [error] = errors_of('entrypoint = "main"\n')
    assert 'must be "module:attribute"' in error
    [error] = errors_of('requirements = "../../etc/passwd"\n')
    assert "must be a path inside the app" in error


def test_every_problem_is_reported_at_once() -> None:
    errors = errors_of('name = "X"\n[scaling]\nmin_replicas = -1\n[resources]\ngpu = "Z"\n')
    assert [e.split(" ")[1].rstrip(":") for e in errors] == [
        "name", "scaling.min_replicas", "resources.gpu",
    ]  # fmt: skip


def test_dotted_keys_and_inline_tables_are_located() -> None:
    assert errors_of("scaling.min_replicas = -1\n") == [
        "kiln.toml:1 scaling.min_replicas: got -1; must be >= 0"
    ]
    [error] = errors_of('\n\nresources = { gpu = "Z999" }\n')
    assert error.startswith("kiln.toml:3 resources.gpu")


def test_load_manifest_from_a_directory(tmp_path: Path) -> None:
    assert load_manifest(tmp_path) is None
    (tmp_path / "kiln.toml").write_text('name = "echo"\n')
    manifest = load_manifest(tmp_path)
    assert isinstance(manifest, Manifest) and manifest.name == "echo"


def test_errors_from_a_file_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "kiln.toml").write_text("[scaling]\nmin_replicas = -1\n")
    with pytest.raises(KilnError) as caught:
        load_manifest(tmp_path)
    assert (
        str(caught.value)
        == f"{tmp_path / 'kiln.toml'}:2 scaling.min_replicas: got -1; must be >= 0"
    )


def test_non_utf8_manifest(tmp_path: Path) -> None:
    (tmp_path / "kiln.toml").write_bytes(b'name = "\xff"\n')
    with pytest.raises(ManifestError, match="is not UTF-8"):
        load_manifest(tmp_path)


def test_json_schema_describes_every_field() -> None:
    schema = Manifest.model_json_schema()
    assert "scaling" in schema["properties"] and "$defs" in schema

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"field {name} has no description"
            for value in node.values():
                walk(value)

    walk(schema)


def test_the_llm_section_reads_engine_adapters_and_engine_args() -> None:
    manifest = parse_manifest(
        'runtime = "llm"\nmodel = "org/base@main"\n[llm]\nengine = "vllm"\nmax_model_len = 8192\n'
        'adapters = { sql = "org/sql-lora@v2" }\nengine_args = { enable_prefix_caching = true }\n'
    )
    assert manifest.llm.engine == "vllm" and manifest.llm.max_model_len == 8192
    assert str(manifest.llm.adapters["sql"]) == "org/sql-lora@v2"
    assert manifest.llm.engine_args == {"enable_prefix_caching": True}
    assert parse_manifest('runtime = "llm"\nmodel = "org/base"\n').llm.engine == "auto"


@pytest.mark.parametrize(
    ("section", "wanted"),
    [
        ('engine = "tgi"', "engine"),
        ('adapters = { "no way" = "org/a" }', "adapter name 'no way'"),
        ('adapters = { sql = "not a repo" }', "Hugging Face repo id"),
        ("engine_args = { port = 9000 }", "'port' is set by Kiln"),
        ("engine_args = { tensor_parallel_size = 8 }", "set by Kiln"),
        ('engine_args = { "--x;rm" = 1 }', "not an engine argument's name"),
        ('engine = "transformers"\nadapters = { sql = "org/a" }', 'need engine = "vllm"'),
        ('engine_args = { tokenizer = "--uds=/x" }', "may not start with '-'"),
        ('engine_args = { hf_overrides = ["a", "-b"] }', "may not start with '-'"),
        ('engine_args = { config = "/x.yaml" }', "set by Kiln"),
        ('adapters = { base = "org/a" }', "the model's own name"),
    ],
)
def test_a_wrong_llm_section_says_what_and_where(section: str, wanted: str) -> None:
    errors = errors_of(f'runtime = "llm"\nmodel = "org/base"\n[llm]\n{section}\n')
    assert any(wanted in e for e in errors), errors


def test_a_warm_spare_is_for_the_model_runtimes_only() -> None:
    # Only their imports are known and run no app code; a python app's import is the app's.
    [error] = errors_of('runtime = "python"\n[scaling]\nwarm_spare = true\n')
    assert "scaling.warm_spare is for the llm and embeddings runtimes" in error
    assert 'runtime is "python"' in error
    manifest = parse_manifest('runtime = "llm"\nmodel = "org/m"\n[scaling]\nwarm_spare = true\n')
    assert manifest.scaling.warm_spare


def test_a_warm_spare_is_refused_for_vllm() -> None:
    # vLLM's server is a process of its own: a spare would leave at once, and the app's log
    # said one was left.
    [error] = errors_of(
        'runtime = "llm"\nmodel = "org/m"\n[scaling]\nwarm_spare = true\n[llm]\nengine = "vllm"\n'
    )
    assert "scaling.warm_spare is for the transformers engine" in error
    assert 'engine = "transformers"' in error
    # On another runtime, what is wrong is the [llm] section itself.
    [error] = errors_of(
        'runtime = "embeddings"\n[scaling]\nwarm_spare = true\n[llm]\nengine = "vllm"\n'
    )
    assert '[llm] is for runtime = "llm"' in error


def test_an_llm_section_on_another_runtime_is_refused() -> None:
    [error] = errors_of('runtime = "python"\n[llm]\nengine = "vllm"\n')
    assert '[llm] is for runtime = "llm"' in error
