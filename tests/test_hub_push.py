"""Pushing to the Hub through huggingface_hub's real upload code, against the fake Hub on 127.0.0.1 of
``tests/fake_hub.py`` (the ``fake_hub`` fixture of conftest.py; the fake's docstring lists the endpoints it speaks).

Xet storage is switched off by the fixture (the fake does not speak Xet's CAS protocol), so these tests cover the LFS
path: preupload, batch, upload, verify, commit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import safetensors.torch
import torch
import yaml
from huggingface_hub import constants
from transformers import AutoModelForCausalLM, GPT2ForSequenceClassification, GPT2LMHeadModel

from hf_prefs.hub import push_folder_to_hub, push_run_to_hub
from hf_prefs.model_cards import render_policy_card, write_model_card
from hf_prefs.models.reward_model import set_reward_normalization
from conftest import tiny_gpt2_config
from fake_hub import TOKEN

# A ~90 KB GPT-2: its safetensors still goes through LFS like a real one.
TINY = dict(vocab_size=256, n_positions=32, n_embd=32, n_layer=1, n_head=2, bos_token_id=255, eos_token_id=255)


def _tiny_policy_folder(folder: Path) -> GPT2LMHeadModel:
    """A saved tiny GPT-2 policy with a value head file, a README card, and a checkpoint folder to leave behind."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel(tiny_gpt2_config(**TINY)).eval()
    model.save_pretrained(folder)
    safetensors.torch.save_file({"weight": torch.randn(1, 32), "bias": torch.zeros(1)}, folder / "value_head.safetensors")
    (folder / "value_head_config.json").write_text(json.dumps({"value_model": "shared"}))
    (folder / "checkpoint-1").mkdir()
    (folder / "checkpoint-1" / "optimizer.pt").write_bytes(b"\x00" * 64)
    write_model_card(folder, _policy_card())
    return model


def _policy_card(**overrides) -> str:
    fields = dict(base_model="gpt2", task="sentiment", num_labels=12, reward_gain=1.5, reward_bias=-0.25,
                  kl_final=5.5, beta_final=0.2, kl_target=6.0, temperature=0.7, response_length=24,
                  known_reward="VADER log-odds")
    fields.update(overrides)
    return render_policy_card(**fields)


def _local_files(folder: Path, skip: tuple[str, ...] = ("checkpoint-",)) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)
    }


def test_push_folder_uploads_every_file_byte_identical(fake_hub, tmp_path):
    folder = tmp_path / "policy"
    model = _tiny_policy_folder(folder)

    url = push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, private=True,
                             commit_message="first push", endpoint=fake_hub.url)

    assert url.startswith(f"{fake_hub.url}/alice/tiny-policy/commit/")
    local = _local_files(folder)
    assert {"README.md", "config.json", "model.safetensors", "value_head.safetensors"} <= set(local)
    remote = fake_hub.repos["alice/tiny-policy"]
    assert set(remote) == set(local)  # the checkpoint folder stayed behind
    for path, data in local.items():
        assert hashlib.sha256(remote[path]).hexdigest() == hashlib.sha256(data).hexdigest(), path
    # Weights went through LFS (batch + PUT + verify), text inline in the commit.
    assert fake_hub.lfs_paths["alice/tiny-policy"] == {"model.safetensors", "value_head.safetensors"}
    assert {"README.md", "config.json", "generation_config.json"} <= fake_hub.inline_paths["alice/tiny-policy"]
    assert len(fake_hub.lfs_puts) == 2
    assert fake_hub.commits["alice/tiny-policy"] == [{"summary": "first push", "description": ""}]
    assert fake_hub.called() == {
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/alice/tiny-policy/preupload/main"),
        ("POST", "/alice/tiny-policy.git/info/lfs/objects/batch"),
        ("PUT", "/_lfs/upload/{oid}"),
        ("POST", "/_lfs/verify"),
        ("POST", "/api/models/alice/tiny-policy/commit/main"),
    }

    # What the Hub holds loads back into the same model.
    download = tmp_path / "download"
    for path, data in remote.items():
        (download / path).parent.mkdir(parents=True, exist_ok=True)
        (download / path).write_bytes(data)
    reloaded = AutoModelForCausalLM.from_pretrained(download).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_push_again_to_existing_repo_skips_stored_lfs_objects(fake_hub, tmp_path):
    folder = tmp_path / "policy"
    _tiny_policy_folder(folder)
    push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    puts_after_first = len(fake_hub.lfs_puts)
    write_model_card(folder, _policy_card(kl_final=4.25))  # new card, same weights

    url = push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url, commit_message="update")

    assert url.startswith(f"{fake_hub.url}/alice/tiny-policy/commit/")
    assert ("POST", "/api/repos/create") in fake_hub.requests  # 409 from the Hub, accepted by exist_ok=True
    assert len(fake_hub.lfs_puts) == puts_after_first  # the weights were already stored: not uploaded again
    assert "| final KL(π, ρ) (nats) | 4.25 |" in fake_hub.repos["alice/tiny-policy"]["README.md"].decode()
    assert [c["summary"] for c in fake_hub.commits["alice/tiny-policy"]] == [
        "Upload model trained with hf_prefs", "update"]


@pytest.mark.parametrize("policy_subdir", ["policy", "."])
def test_push_run_to_hub_pushes_policy_and_reward_model_with_cards(fake_hub, tmp_path, policy_subdir):
    run = tmp_path / "run"
    policy = _tiny_policy_folder(run / policy_subdir)
    (run / policy_subdir / "README.md").unlink()  # the card is rendered by push_run_to_hub below
    torch.manual_seed(1)
    cfg = tiny_gpt2_config(**TINY, num_labels=1, pad_token_id=255)
    rm = GPT2ForSequenceClassification(cfg)
    set_reward_normalization(rm, 2.5, -0.75)
    rm.save_pretrained(run / "reward_model")
    common = dict(base_model="gpt2", task="sentiment", num_labels=12, reward_gain=2.5, reward_bias=-0.75,
                  known_reward="VADER log-odds")

    urls = push_run_to_hub(
        run, "alice/run", token=TOKEN, endpoint=fake_hub.url, policy_subdir=policy_subdir,
        policy_card_fields=dict(common, kl_final=5.5, beta_final=0.2, kl_target=6.0, temperature=0.7, response_length=24),
        reward_model_card_fields=dict(common, metrics={"eval_accuracy": 0.5}),
    )

    assert set(urls) == {"policy", "reward_model"}
    assert urls["policy"].startswith(f"{fake_hub.url}/alice/run/commit/")
    assert urls["reward_model"].startswith(f"{fake_hub.url}/alice/run-reward-model/commit/")
    policy_repo, rm_repo = fake_hub.repos["alice/run"], fake_hub.repos["alice/run-reward-model"]
    assert policy_repo == _local_files(run / policy_subdir, skip=("checkpoint-", "reward_model/"))
    assert rm_repo == _local_files(run / "reward_model")
    assert not any(p.startswith("reward_model/") for p in policy_repo)  # not pushed twice with policy_subdir="."
    assert json.loads(rm_repo["config.json"])["hf_prefs_reward_gain"] == 2.5

    policy_meta = yaml.safe_load(policy_repo["README.md"].decode().split("---")[1])
    rm_meta = yaml.safe_load(rm_repo["README.md"].decode().split("---")[1])
    assert {"ppo", "hf-prefs"} <= set(policy_meta["tags"]) and "reward-model" not in policy_meta["tags"]
    assert {"reward-model", "hf-prefs"} <= set(rm_meta["tags"]) and "ppo" not in rm_meta["tags"]
    # Each card points at the other repo and loads from its own.
    policy_card, rm_card = policy_repo["README.md"].decode(), rm_repo["README.md"].decode()
    assert "https://huggingface.co/alice/run-reward-model" in policy_card
    assert 'AutoModelForCausalLM.from_pretrained("alice/run")' in policy_card
    assert "https://huggingface.co/alice/run)" in rm_card
    assert 'load_reward_model("alice/run-reward-model")' in rm_card
    assert policy.config.n_embd == 32  # the fixture model is the one pushed (sanity)


def test_push_fails_before_any_request(fake_hub, tmp_path, monkeypatch):
    folder = tmp_path / "policy"
    _tiny_policy_folder(folder)
    (folder / "README.md").unlink()
    with pytest.raises(FileNotFoundError, match="no README.md model card"):
        push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        push_folder_to_hub(tmp_path / "missing", "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    with pytest.raises(ValueError):
        push_folder_to_hub(folder, "not/a/valid/id", token=TOKEN, endpoint=fake_hub.url, require_model_card=False)
    # A run missing its reward model folder: nothing is pushed (not even the policy).
    write_model_card(folder, _policy_card())
    with pytest.raises(FileNotFoundError, match="reward_model_subdir"):
        push_run_to_hub(tmp_path, "alice/run", token=TOKEN, endpoint=fake_hub.url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        push_folder_to_hub(folder, "alice/tiny-policy", token=TOKEN, endpoint=fake_hub.url)
    assert fake_hub.requests == []


def test_trainer_push_to_hub_then_load_reward_model_from_the_hub(fake_hub, tmp_path, gpt2_tokenizer):
    """``transformers.Trainer.push_to_hub`` (its shared ``HfApi()``, token from HF_TOKEN) goes to the fake, and
    ``load_reward_model("alice/rm")`` downloads it back (config, weights, tokenizer; the gain/bias restored)."""
    from datasets import Dataset

    from hf_prefs import PreferenceRewardConfig, PreferenceRewardTrainer, load_reward_model, score_texts

    torch.manual_seed(0)
    rm = GPT2ForSequenceClassification(tiny_gpt2_config(num_labels=1, pad_token_id=gpt2_tokenizer.eos_token_id))
    labels = Dataset.from_dict({"query": ["She read the letter and", "He opened the door and"],
                                "samples": [[" smiled.", " wept."], [" sighed.", " laughed."]], "best": [0, 1]})
    args = PreferenceRewardConfig(output_dir=str(tmp_path / "rm"), hub_model_id="alice/rm", max_steps=1,
                                  per_device_train_batch_size=2, report_to=[], save_strategy="no",
                                  normalize_before=False, normalize_after=False)
    trainer = PreferenceRewardTrainer(model=rm, args=args, train_dataset=labels, processing_class=gpt2_tokenizer)
    trainer.train()
    set_reward_normalization(trainer.model, 2.0, -0.5)

    commit = trainer.push_to_hub(commit_message="End of training")

    assert commit.commit_url.startswith(f"{fake_hub.url}/alice/rm/commit/")
    repo = fake_hub.repos["alice/rm"]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json", "training_args.bin"} <= set(repo)
    assert repo["model.safetensors"] == (tmp_path / "rm" / "model.safetensors").read_bytes()
    assert "model.safetensors" in fake_hub.lfs_paths["alice/rm"]
    assert fake_hub.commits["alice/rm"] == [{"summary": "End of training", "description": ""}]

    fake_hub.requests.clear()
    loaded, tokenizer = load_reward_model("alice/rm")
    queries, responses = ["It was a dark night."], [" The sun came out."]
    torch.testing.assert_close(score_texts(loaded, tokenizer, queries, responses),
                               score_texts(trainer.model.eval(), gpt2_tokenizer, queries, responses))
    assert ("GET", f"/alice/rm/resolve/{fake_hub.heads['alice/rm']}/model.safetensors") in fake_hub.called()


def test_a_failed_push_at_the_end_of_a_run_says_the_results_are_saved_and_how_to_push_them(tmp_path, monkeypatch):
    """push_results (the recipes' last step): a network error names the run folder and a shell command that pushes
    it again (split as a shell would, then run here against a stand-in for push_run_to_hub: the same folder, repo ids
    and privacy); a missing folder is raised as it is (pushing again would fail the same way)."""
    import shlex
    from types import SimpleNamespace

    import hf_prefs
    import hf_prefs.hub
    import hf_prefs.pipeline.results as results

    def unreachable(*args, **kwargs):
        raise ConnectionError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(results, "push_run_to_hub", unreachable)
    out = tmp_path / "it's a $HOME run"  # a quote, a space and a $ reach Python as they are
    cases = [(None, False, None, {}), ("me/rm", True, "hf_x", {"reward_model_id": "me/rm", "private": True})]
    for reward_id, private, token, expected in cases:
        cfg = SimpleNamespace(hub_model_id="me/run", hub_token=token, hub_private_repo=private)
        with pytest.raises(RuntimeError) as err:
            results.push_results(str(out), cfg, SimpleNamespace(push_reward_model_id=reward_id))
        message = str(err.value)
        assert "ConnectionError: [Errno 101] Network is unreachable" in message
        assert f"results are saved in {out}" in message and isinstance(err.value.__cause__, ConnectionError)
        assert ("HF_TOKEN" in message) == (token is not None) and "hf_x" not in message  # the token is not printed
        argv = shlex.split(message.split("push them again with: ", 1)[1].split(" (add token")[0])
        assert argv[:2] == ["python", "-c"] and len(argv) == 3
        calls = []
        record = lambda *a, **k: calls.append((a, k))  # noqa: E731
        monkeypatch.setattr(hf_prefs.hub, "push_run_to_hub", record)
        monkeypatch.setattr(hf_prefs, "push_run_to_hub", record, raising=False)  # where hf_prefs cached its export
        exec(argv[2], {})
        assert calls == [((str(out), "me/run"), expected)]

    def missing(*args, **kwargs):
        raise FileNotFoundError("output_dir: no policy/")

    monkeypatch.setattr(results, "push_run_to_hub", missing)
    with pytest.raises(FileNotFoundError, match="no policy/"):
        results.push_results(str(out), cfg, SimpleNamespace(push_reward_model_id=None))


def test_a_push_to_hub_run_that_cannot_reach_the_hub_says_what_to_do_for_that_failure(monkeypatch):
    """check_hub_push (before a recipe runs): no network is not a login problem (it said "log in" for a DNS failure);
    offline mode, a refused token (401/403) and another answer each get their own advice."""
    from types import SimpleNamespace

    from huggingface_hub import HfApi
    from huggingface_hub.errors import OfflineModeIsEnabled

    from hf_prefs.pipeline.arguments import check_hub_push

    class Answered(Exception):
        def __init__(self, status: int) -> None:
            super().__init__(f"{status} Client Error")
            self.response = SimpleNamespace(status_code=status)

    cfg = SimpleNamespace(push_to_hub=True, hub_model_id="me/run", hub_token=None, hub_private_repo=None)
    cases = [(ConnectionError("[Errno -2] Name or service not known"), "the Hub could not be reached: check the network"),
             (OfflineModeIsEnabled("offline"), "unset HF_HUB_OFFLINE"), (Answered(401), r"log in \(`hf auth login`\)"),
             (Answered(403), "log in"), (Answered(404), "the Hub answered 404: check --hub_model_id")]
    for error, advice in cases:
        def fail(self, *args, error=error, **kwargs):
            raise error

        monkeypatch.setattr(HfApi, "create_repo", fail)
        with pytest.raises(ValueError, match=f"cannot create or reach 'me/run' .*; {advice}") as err:
            check_hub_push(cfg)
        assert ("log in" in str(err.value)) == (advice.startswith("log in"))
