"""The manifest's mini-languages: sizes, GPU specs, model refs."""

import pytest

from kiln.manifest import Accelerator, GpuSpec, Memory, ModelRef


@pytest.mark.parametrize(
    ("text", "size"),
    [("4Gi", 4 * 2**30), ("512Mi", 512 * 2**20), ("16G", 16 * 10**9), ("1.5Gi", 3 * 2**29),
     ("1024", 1024), (2048, 2048)],
)  # fmt: skip
def test_memory_parses_kubernetes_sizes(text: str | int, size: int) -> None:
    assert Memory.parse(text).bytes == size


@pytest.mark.parametrize("text", ["4 gigs", "4GB", "-1Gi", "0", "Gi", "", "4gi", True, 1.5])
def test_memory_rejects_other_forms_naming_the_accepted_ones(text: object) -> None:
    with pytest.raises(ValueError, match="512Mi"):
        Memory.parse(text)


def test_memory_prints_in_the_largest_whole_unit() -> None:
    assert [str(Memory.parse(t)) for t in ("4096Mi", "1536Mi", "1000")] == ["4Gi", "1536Mi", "1000"]


@pytest.mark.parametrize(
    ("text", "kind", "count"),
    [("H100", Accelerator.H100, 1.0), ("H100:2", Accelerator.H100, 2.0),
     ("any:0.5", Accelerator.ANY, 0.5), ("a100-80g:8", Accelerator.A100_80G, 8.0)],
)  # fmt: skip
def test_gpu_spec_parses_type_and_count(text: str, kind: Accelerator, count: float) -> None:
    spec = GpuSpec.parse(text)
    assert (spec.type, spec.count) == (kind, count)
    assert GpuSpec.parse(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "reason"),
    [("H100:0", "more than 0"), ("H100:-1", "more than 0"), ("any:1.5", "whole number"),
     ("Z999", "must be one of: any, K80"), ("H100:two", "not a number"), ("H100:nan", "more than 0")],
)  # fmt: skip
def test_gpu_spec_rejects_bad_strings_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        GpuSpec.parse(text)


def test_unknown_gpu_type_lists_every_valid_one() -> None:
    with pytest.raises(ValueError) as caught:
        GpuSpec.parse("Z999")
    assert all(member.value in str(caught.value) for member in Accelerator)


def test_model_ref_with_and_without_revision() -> None:
    assert ModelRef.parse("Qwen/Qwen2.5-0.5B-Instruct@main") == ModelRef(
        "Qwen/Qwen2.5-0.5B-Instruct", "main"
    )
    assert ModelRef.parse("gpt2").revision is None
    assert str(ModelRef.parse("org/m@v1.0")) == "org/m@v1.0"


@pytest.mark.parametrize("text", ["", "a/b/c", "../etc", "org/name@", "org/na me", "/abs"])
def test_model_ref_rejects_malformed_ids(text: str) -> None:
    with pytest.raises(ValueError, match=r"repo id|revision"):
        ModelRef.parse(text)
