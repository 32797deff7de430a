"""Label-count study on mock sentiment (paper Figures 2-3): direct RL on the known reward, RL on reward models from
N simulated best-of-4 labels for each N in --label_counts, and the optimal KL-reward frontier of rho.

    python recipes/study_sentiment.py --config recipes/configs/sentiment_offline.yaml --label_counts 64 128 256 \
        --output_dir runs/study_sentiment

Fields: hf_prefs.pipeline.PipelineArguments, hf_prefs.analysis.study.StudyArguments (label_counts,
frontier_samples), hf_prefs.PPOConfig and TRL's ModelConfig. Then `hf-prefs report runs/study_sentiment`.
"""

from hf_prefs.analysis.study import study_main

if __name__ == "__main__":
    study_main(task="sentiment")
