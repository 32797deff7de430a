"""CNN/Daily Mail summarization (paper §3.2): summarize news articles.

The same flow as recipes/sentiment.py (base model -> labels -> reward model -> PPO -> evaluation -> save/push); what
differs is the task's data — abisee/cnn_dailymail articles (or --query_dataset: a local file or folder with article
and highlights columns) cut to fit 500 tokens as "Article:\n\n...\n\nTL;DR:",
their highlights scored with ROUGE in summary.json — and the config, recipes/configs/cnndm.yaml (T=0.5, fixed beta).
The paper's labels are human: --label_source file (e.g. cnndm/online_45k.json) or --label_source human.

    accelerate launch recipes/cnndm.py --config recipes/configs/cnndm.yaml [--any_field value ...]
"""

from sentiment import configure_logging, main  # the flow, stage by stage: recipes/sentiment.py

if __name__ == "__main__":
    configure_logging()  # INFO on the main process, warnings on the others
    main(task="cnndm")
