"""TL;DR summarization (paper §3.2): summarize Reddit posts.

The same flow as recipes/sentiment.py (base model -> labels -> reward model -> PPO -> evaluation -> save/push); what
differs is the task's data — posts from trl-lib/tldr (or --query_dataset: a local file or folder of OpenAI TL;DR
posts or prompt/completion rows) cut to fit 500 tokens with the suffix "\n\nTL;DR:", their
reference summaries scored with ROUGE in summary.json — and the config, recipes/configs/tldr.yaml (75-token
responses cut at a newline, fixed beta). The paper's labels are human: --label_source file (e.g. tldr/online_45k.json)
or --label_source human, offline or with --label_mode online.

    accelerate launch recipes/tldr.py --config recipes/configs/tldr.yaml [--any_field value ...]
"""

from sentiment import configure_logging, main  # the flow, stage by stage: recipes/sentiment.py

if __name__ == "__main__":
    configure_logging()  # INFO on the main process, warnings on the others
    main(task="tldr")
