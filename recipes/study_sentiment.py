"""Label-count study on mock sentiment (paper Figures 2-3) with seeds: direct RL on the known reward and RL on reward
models from N simulated best-of-4 labels for each N in --label_counts, each for every seed in --seeds, evaluated on
the same held-out queries, with the optimal KL-reward frontier read at each run's KL where its ESS >= --min_ess.

    python recipes/study_sentiment.py --config recipes/configs/sentiment_offline.yaml \
        --label_counts 300 1200 5000 --seeds 0 1 2 --output_dir docs/study

Resumable: runs already in <output_dir>/study.csv are skipped, so the same command finishes an interrupted study.
Fields: hf_prefs.pipeline.PipelineArguments, hf_prefs.analysis.study.StudyArguments (label_counts, seeds,
frontier_queries, frontier_samples, policy_samples, min_ess), hf_prefs.PPOConfig and TRL's ModelConfig.
Then `hf-prefs report docs/study`.
"""

from hf_prefs.analysis.study import study_main

if __name__ == "__main__":
    study_main(task="sentiment")
