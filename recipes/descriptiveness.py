"""Descriptiveness (paper §3.1): continue book passages in vividly descriptive language.

The same flow as recipes/sentiment.py (base model -> labels -> reward model -> PPO -> evaluation -> save/push) on the
same kind of data, book passages; what differs is the config, recipes/configs/descriptiveness.yaml: the paper's
labels are human, so use --label_source file (e.g. its descriptiveness/offline_5k.json) or --label_source human,
and there is no known reward to track (known_reward: none).

    accelerate launch recipes/descriptiveness.py --config recipes/configs/descriptiveness.yaml [--any_field value ...]
"""

from sentiment import configure_logging, main  # the flow, stage by stage: recipes/sentiment.py

if __name__ == "__main__":
    configure_logging()  # INFO on the main process, warnings on the others
    main(task="descriptiveness")
