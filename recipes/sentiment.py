"""Sentiment (paper §3.1.1): continue book passages with positive sentiment. Offline default: SmolLM2-135M as rho,
Austen queries, VADER log-odds as the mock labeler's known reward, simulated best-of-4 labels.

    accelerate launch recipes/sentiment.py --config recipes/configs/sentiment.yaml [--any_field value ...]

Every field of PipelineArguments, hf_prefs.PPOConfig and TRL's ModelConfig can be set in the YAML file or on the
command line (the command line wins); see README.md.
"""

from hf_prefs.pipeline import main

if __name__ == "__main__":
    main(task="sentiment")
