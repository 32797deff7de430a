"""Descriptiveness (paper §3.1): continue book passages in vividly descriptive language. The paper's labels
are human; use --label_source file (e.g. its descriptiveness/offline_5k.json) or --label_source human.

    accelerate launch recipes/descriptiveness.py --config recipes/configs/descriptiveness.yaml [--any_field value ...]

Every field of PipelineArguments, hf_prefs.PPOConfig and TRL's ModelConfig can be set in the YAML file or on the
command line (the command line wins); see README.md.
"""

from hf_prefs.pipeline import main

if __name__ == "__main__":
    main(task="descriptiveness")
