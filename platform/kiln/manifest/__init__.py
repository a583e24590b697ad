"""The app manifest, ``kiln.toml``: models, mini-language units, and the loader with located errors."""

from kiln.manifest.load import MANIFEST_FILE, find_manifest, load_manifest, parse_manifest
from kiln.manifest.model import (
    SPARE_RUNTIMES,
    AddonKind,
    Health,
    Http,
    Llm,
    LlmEngine,
    Manifest,
    Resources,
    Rollout,
    Runtime,
    Scaling,
)
from kiln.manifest.units import Accelerator, GpuSpec, Memory, ModelRef

__all__ = [
    "MANIFEST_FILE",
    "SPARE_RUNTIMES",
    "Accelerator",
    "AddonKind",
    "GpuSpec",
    "Health",
    "Http",
    "Llm",
    "LlmEngine",
    "Manifest",
    "Memory",
    "ModelRef",
    "Resources",
    "Rollout",
    "Runtime",
    "Scaling",
    "find_manifest",
    "load_manifest",
    "parse_manifest",
]
