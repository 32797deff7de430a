"""hf_prefs: fine-tuning language models from human preferences (Ziegler et al., 2019) on TRL."""

__version__ = "0.1.0"
