"""The manifest's mini-languages, parsed at the edge into typed values: sizes, GPUs, model refs.

>>> Memory.parse("4Gi").bytes
4294967296
>>> GpuSpec.parse("H100:2")
GpuSpec(type=<Accelerator.H100: 'H100'>, count=2.0)
>>> ModelRef.parse("Qwen/Qwen2.5-0.5B-Instruct@main").revision
'main'
"""

from __future__ import annotations

__all__ = ["Accelerator", "GpuSpec", "Memory", "ModelRef", "parse_duration", "parse_rate"]

import enum
import math
import re
from dataclasses import dataclass

from kiln.errors import InvalidInput


class Accelerator(enum.StrEnum):
    """GPU types a replica may ask for; the names are Ray's ``accelerator_type`` values.

    ``any`` means any GPU the cluster has.
    """

    ANY = "any"
    K80 = "K80"
    P4 = "P4"
    P100 = "P100"
    V100 = "V100"
    T4 = "T4"
    A10G = "A10G"
    L4 = "L4"
    L40S = "L40S"
    A100 = "A100"
    A100_40G = "A100-40G"
    A100_80G = "A100-80G"
    H20 = "H20"
    H100 = "H100"
    H200 = "H200"
    B200 = "B200"
    B300 = "B300"
    GB200 = "GB200"
    GB300 = "GB300"
    RTX_PRO_6000 = "RTX-PRO-6000"

    @classmethod
    def lookup(cls, text: str) -> Accelerator:
        for member in cls:
            if member.value.lower() == text.strip().lower():
                return member
        raise ValueError(f"unknown GPU type; must be one of: {', '.join(m.value for m in cls)}")


_UNITS = {
    "": 1,
    "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
}  # fmt: skip
_SIZE = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?")
SIZE_HELP = 'a size like "512Mi", "4Gi" or "16G" (units Ki, Mi, Gi, Ti, or K, M, G, T)'


@dataclass(frozen=True, order=True)
class Memory:
    """An amount of memory in bytes, written as Kubernetes writes it: ``"4Gi"``, ``"512Mi"``."""

    bytes: int

    @classmethod
    def parse(cls, value: object) -> Memory:
        if isinstance(value, Memory):
            return value
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"must be {SIZE_HELP}")
        match = _SIZE.fullmatch(str(value).strip())
        if match is None:
            raise ValueError(f"must be {SIZE_HELP}")
        size = int(float(match.group(1)) * _UNITS[match.group(2) or ""])
        if size <= 0:
            raise ValueError(f"must be more than 0: {SIZE_HELP}")
        return cls(size)

    def __str__(self) -> str:
        for unit in ("Ti", "Gi", "Mi", "Ki"):
            if self.bytes % _UNITS[unit] == 0:
                return f"{self.bytes // _UNITS[unit]}{unit}"
        return str(self.bytes)


GPU_HELP = (
    'a GPU type with an optional count, like "H100", "H100:2" or "any:0.5" '
    "(a count below 1 shares one GPU)"
)


@dataclass(frozen=True)
class GpuSpec:
    """How many GPUs of which type one replica needs: ``"H100:2"``, or ``"any:0.5"`` to share one."""

    type: Accelerator
    count: float = 1.0

    @classmethod
    def parse(cls, value: object) -> GpuSpec:
        if isinstance(value, GpuSpec):
            return value
        if not isinstance(value, str):
            raise ValueError(f"must be {GPU_HELP}")
        kind, sep, count_text = value.partition(":")
        accelerator = Accelerator.lookup(kind)
        count = 1.0
        if sep:
            try:
                count = float(count_text)
            except ValueError:
                raise ValueError(f"the count is not a number; must be {GPU_HELP}") from None
        if not math.isfinite(count) or count <= 0:
            raise ValueError(
                "the GPU count must be more than 0 (a whole number, or a fraction below 1 "
                "to share one GPU)"
            )
        if count > 1 and not count.is_integer():
            raise ValueError(
                "a GPU count above 1 must be a whole number (a fraction below 1, like 0.5, "
                "shares one GPU)"
            )
        return cls(accelerator, count)

    @property
    def fractional(self) -> bool:
        return self.count < 1

    def __str__(self) -> str:
        count = int(self.count) if self.count.is_integer() else self.count
        return f"{self.type.value}:{count}"


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}(/[A-Za-z0-9][\w.-]{0,95})?")
_REVISION = re.compile(r"[\w./-]{1,255}")


@dataclass(frozen=True)
class ModelRef:
    """A Hugging Face model: ``"org/name"`` at an optional ``@revision`` (branch, tag or commit)."""

    repo_id: str
    revision: str | None = None

    @classmethod
    def parse(cls, value: object) -> ModelRef:
        if isinstance(value, ModelRef):
            return value
        if not isinstance(value, str):
            raise ValueError(
                'must be a Hugging Face repo id like "org/name" or "org/name@revision"'
            )
        repo_id, sep, revision = value.partition("@")
        if not _REPO_ID.fullmatch(repo_id) or ".." in repo_id:
            raise ValueError(
                'must be a Hugging Face repo id like "Qwen/Qwen2.5-0.5B-Instruct", optionally '
                'followed by "@revision"'
            )
        if sep and not _REVISION.fullmatch(revision):
            raise ValueError('the revision after "@" must be a branch, tag or commit id')
        return cls(repo_id, revision or None)

    def __str__(self) -> str:
        return self.repo_id if self.revision is None else f"{self.repo_id}@{self.revision}"

    @property
    def cache_folder(self) -> str:
        """Its folder in a Hugging Face cache: ``models--org--name``."""
        return "models--" + self.repo_id.replace("/", "--")


_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_RATE = re.compile(r"(\d+(?:\.\d+)?)/([smhd])")


def parse_duration(text: str, what: str = "--expires") -> float:
    """``"30d"`` -> seconds (``what`` names the option or field, for the error)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(
            f"got {text!r} for {what}; it must be a duration like 90m, 12h or 30d",
            code="bad_duration",
        )
    return float(match.group(1)) * _TIME_UNITS[match.group(2)]


def parse_rate(text: str) -> float:
    """``"10/s"`` -> requests per second."""
    match = _RATE.fullmatch(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise InvalidInput(
            f"got {text!r} for --rate; it must be requests per unit like 10/s, 600/m or 5000/h",
            code="bad_rate",
        )
    return float(match.group(1)) / _TIME_UNITS[match.group(2)]
