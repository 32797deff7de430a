"""Sentiment (Ziegler et al. 2019, §3.1.1): continue book passages with positive sentiment, from best-of-4 labels.

Offline default (README command 1): SmolLM2-135M as rho, Austen passages as queries, a simulated labeler that picks
the continuation VADER finds most positive, a LoRA policy, on 2 CPU cores in 11-26 minutes with bf16 units (~40
without them; README: measured):

    accelerate launch --config_file recipes/accelerate_configs/cpu.yaml recipes/sentiment.py \
        --config recipes/configs/sentiment_offline.yaml

The paper's settings (GPU scale) are in recipes/configs/sentiment.yaml. Every field of PipelineArguments,
hf_prefs.PPOConfig and TRL's ModelConfig can be set in the YAML file or on the command line (the command line wins).
Edit the stages below to change the flow; each is a function of hf_prefs.pipeline. The other tasks' recipes
(descriptiveness.py, tldr.py, cnndm.py) run this same flow on their own data and config.
"""

import torch
from trl import ModelConfig, TrlParser

from hf_prefs import PPOConfig, RolloutSpec, evaluate_policy
from hf_prefs.pipeline import (
    PipelineArguments, StageTimer, check_stages_fit, collect_labels, configure_logging, learned_reward, load_base,
    make_ppo_trainer,
    online_label_info, online_label_loop, push_results, resolve_cpu_precision, resume_checkpoint, resume_requested,
    save_labels, saved_labels, saved_reward_model, split_queries, train_policy, train_reward_model, trained_policy,
    validate_pipeline_config, warn_replacing_earlier_run, write_results,
)
from hf_prefs.tasks import make_known_reward


def main(task="sentiment", argv=None):
    ################
    # Arguments
    ################
    parser = TrlParser((PipelineArguments, PPOConfig, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(args=argv)
    if script_args.task not in (None, task):
        raise ValueError(f"task: this recipe runs {task!r}, got task={script_args.task!r}")
    script_args.task = task
    validate_pipeline_config(script_args, training_args, model_args)  # names a bad field before any model loads
    resolve_cpu_precision(script_args, training_args, model_args)  # float32 on a CPU without bf16 matmul units
    out, timer = training_args.output_dir, StageTimer()
    resume = resume_checkpoint(training_args, script_args, model_args)  # a checkpoint folder of this run, or None
    reuse = resume_requested(training_args)  # and then the labels and reward model saved before PPO are taken
    warn_replacing_earlier_run(out, reuse)  # not resuming: an earlier run's results there are replaced
    torch.manual_seed(training_args.seed)

    ################
    # Base model (rho), the rollout rule, queries
    ################
    base = load_base(model_args)  # SmolLM2-135M offline unless --model_name_or_path
    spec = RolloutSpec.from_config(training_args, base.tokenizer)  # what a response is: length, T, cut, penalty
    queries = split_queries(script_args, training_args, base.tokenizer)  # held-out / label / PPO queries
    check_stages_fit(script_args, training_args, base, queries)  # a later stage's refusal, before the labels
    # the mock labeler's reward (VADER log-odds, or a classifier's positive-class log-odds); None: none
    known_reward = make_known_reward(script_args.known_reward, script_args.known_reward_positive_label)

    ################
    # Labels and reward model
    ################
    online = None
    with timer("labels"):
        if script_args.label_mode == "online":  # round 0 now, the other rounds inside PPO
            online = online_label_loop(script_args, training_args, base, queries.label, out)
            online.restore(resume) if resume else online.first_round(base.rho)  # resume: labels + RM so far
            labels, label_info = online.labels_dataset(), online_label_info(script_args.label_source, resume)
            save_labels(labels, out, label_info)
        elif reuse and (saved := saved_labels(out)):  # a resumed run: the labels it saved before PPO
            labels, label_info = saved
        else:  # best-of-K on rho's samples: simulated labeler, a label file, or people
            labels, label_info = collect_labels(script_args, training_args, base.rho, base.tokenizer, queries.label, spec,
                                                queries.eval)
            save_labels(labels, out, label_info)
    with timer("reward_model"):
        if online is None:  # a resumed run: the reward model it saved
            reward_model, rm_metrics = (saved_reward_model(out) if reuse else None) or train_reward_model(
                script_args, training_args, labels, base.rho, base.tokenizer, base.name, out, spec=spec
            )
        else:
            reward_model, rm_metrics = online.reward_model, online.rm_metrics

    ################
    # PPO on r(x, y) - beta * KL
    ################
    trainer = make_ppo_trainer(training_args, model_args, base, reward_model, queries.ppo, known_reward=known_reward)
    with timer("ppo"):
        train_policy(trainer, online, resume)
    if online is not None:  # all rounds' labels; the last round's reward model
        labels, rm_metrics, label_info["rounds"] = online.labels_dataset(), online.rm_metrics, len(online.rounds)
        save_labels(labels, out, label_info)

    ################
    # Evaluation: rho and pi on the same held-out queries, same sampling seed
    ################
    judge = dict(known_reward=known_reward, batch_size=script_args.evaluation_batch_size(), seed=training_args.seed + 2,
                 reward_fn=learned_reward(trainer))
    with timer("evaluation"):
        before = evaluate_policy(base.rho, base.tokenizer, queries.eval, spec, ref_model=base.rho, **judge)
        after = evaluate_policy(trained_policy(trainer), base.tokenizer, queries.eval, spec,
                                ref_model=None if trainer.is_peft_model else base.rho, **judge)

    ################
    # Save results, models and cards; push to the Hub
    ################
    summary = write_results(out, script_args, training_args, base.name, trainer, labels, label_info, rm_metrics,
                            before, after, queries.eval_references, timer.total(), online.summary() if online else None)
    if training_args.push_to_hub:
        summary["hub"] = push_results(out, training_args, script_args)
    return summary


if __name__ == "__main__":
    configure_logging()  # INFO on the main process, warnings on the others
    main()
