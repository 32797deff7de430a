"""TL;DR summarization (paper §3.2): summarize Reddit posts; online labels in the paper (60k offline / 45k online).
Use --label_source file (e.g. tldr/online_45k.json) or --label_source human.

    accelerate launch recipes/tldr.py --config recipes/configs/tldr.yaml [--any_field value ...]

Every field of PipelineArguments, hf_prefs.PPOConfig and TRL's ModelConfig can be set in the YAML file or on the
command line (the command line wins); see README.md.
"""

from hf_prefs.pipeline import main

if __name__ == "__main__":
    main(task="tldr")
