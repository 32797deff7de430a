"""The data side of PPO: how an update's queries are dealt to the processes."""

from __future__ import annotations

import copy
import json
import logging
import random

import pytest

from hf_prefs.trainers.ppo_data import deal_by_length


def test_deal_by_length_hand_example():
    rows = [10, 11, 12, 13, 14, 15, 16, 17]
    lengths = [5, 60, 7, 30, 61, 8, 29, 6]
    # sorted by length: rows 10(5) 17(6) 12(7) 15(8) 16(29) 13(30) 11(60) 14(61); snake over 2 processes:
    # groups (10,17) (12,15) (16,13) (11,14) -> rank 0 takes 10, 15, 16, 14; rank 1 takes 17, 12, 13, 11
    assert deal_by_length(rows, lengths, 2, 0) == [10, 15, 16, 14]
    assert deal_by_length(rows, lengths, 2, 1) == [17, 12, 13, 11]
    assert deal_by_length(rows, lengths, 1, 0) == [10, 17, 12, 15, 16, 13, 11, 14]  # one process: sorted
    # equal query tokens: 5+8+29+61 = 6+7+30+60 = 103 (contiguous halves of this order: 102 and 104)
    assert sum(lengths[rows.index(r)] for r in deal_by_length(rows, lengths, 2, 0)) == 103


@pytest.mark.parametrize("world", [2, 3, 4])
def test_deal_by_length_partitions_the_batch_with_equal_work(world):
    rng = random.Random(world)
    for _ in range(200):
        n = world * rng.randint(1, 12)
        rows = rng.sample(range(1000), n)
        lengths = [rng.randint(1, 200) for _ in rows]
        length = dict(zip(rows, lengths))
        shares = [deal_by_length(rows, lengths, world, r) for r in range(world)]
        assert sorted(sum(shares, [])) == sorted(rows)  # every row exactly once
        assert all(len(s) == n // world for s in shares)
        for share in shares:
            assert [length[r] for r in share] == sorted(length[r] for r in share)  # ascending on each process
        totals = [sum(length[r] for r in s) for s in shares]
        assert max(totals) - min(totals) <= max(lengths) - min(lengths)
        longest = [max(length[r] for r in s) for s in shares]
        last_group = sorted(lengths)[-world:]
        assert max(longest) - min(longest) <= last_group[-1] - last_group[0]


def test_deal_by_length_rejects_a_batch_it_cannot_split():
    with pytest.raises(ValueError, match="multiple of the process count"):
        deal_by_length([1, 2, 3], [4, 5, 6], 2, 0)
    with pytest.raises(ValueError, match="3 rows but 2 lengths"):
        deal_by_length([1, 2, 3], [4, 5], 1, 0)


def test_a_trl_prompt_column_becomes_the_queries(gpt2_tokenizer, caplog):
    """TRL's online trainers take ``prompt`` (text or conversational): text is the query; messages are rendered with
    the chat template and its generation prompt, tokenized without special tokens added again."""
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from transformers import GPT2LMHeadModel
    from trl.data_utils import maybe_apply_chat_template

    from conftest import tiny_gpt2_config
    from hf_prefs.trainers.ppo_data import prepare_query_dataset

    torch.manual_seed(0)
    policy, args = GPT2LMHeadModel(tiny_gpt2_config()), SimpleNamespace(dataset_num_proc=None, response_length=4)
    text = prepare_query_dataset(Dataset.from_dict({"prompt": ["The sun rose", "Hello"]}), gpt2_tokenizer, policy, args)
    assert text["query"] == ["The sun rose", "Hello"]
    assert text["input_ids"] == gpt2_tokenizer(["The sun rose", "Hello"])["input_ids"]
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_data"):  # beside `query`: not read, said so
        both = prepare_query_dataset(Dataset.from_dict({"prompt": ["The sun rose"], "query": ["id-17"]}), gpt2_tokenizer,
                                     policy, args)
    assert both["query"] == ["id-17"] and "samples from its `query` column, not from its `prompt` column" in caplog.text
    assert "get those queries as `prompts`, and no `prompt`" in caplog.text  # as reward_functions.trl_keywords passes them
    caplog.clear()

    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                               "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    chats = [[{"role": "user", "content": "Say something kind."}], [{"role": "system", "content": "Be brief."},
                                                                    {"role": "user", "content": "Hi"}]]
    with caplog.at_level(logging.WARNING, logger="hf_prefs.trainers.ppo_data"):
        conv = prepare_query_dataset(Dataset.from_dict({"prompt": chats}), tokenizer, policy, args)
        assert "conversational prompts with no stop_token" in caplog.text  # GRPO users expect a stop at EOS
        caplog.clear()
        prepare_query_dataset(Dataset.from_dict({"prompt": chats}), tokenizer, policy, SimpleNamespace(**vars(args), stop_token="eos"))
        assert "stop_token" not in caplog.text
    rendered = [maybe_apply_chat_template({"prompt": c}, tokenizer)["prompt"] for c in chats]
    assert conv["query"] == rendered and rendered[0] == "<|user|>Say something kind.\n<|assistant|>"
    # a row's tools and chat_template_kwargs (TRL's columns) reach the template, as TRL renders them (were dropped)
    kw_tok = copy.deepcopy(tokenizer)
    kw_tok.chat_template = ("{% if think is defined and not think %}[no-think]{% endif %}{% if tools %}TOOLS: "
                            "{{ tools | map(attribute='name') | join(',') }}\n{% endif %}" + tokenizer.chat_template)
    schema = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}}
    rows = Dataset.from_list([{"prompt": chats[0], "tools": json.dumps([schema]), "chat_template_kwargs": {"think": False}},
                              {"prompt": chats[0], "tools": None, "chat_template_kwargs": None}])
    tooled = prepare_query_dataset(rows, kw_tok, policy, args)
    assert tooled["query"] == ["[no-think]TOOLS: get_weather\n" + rendered[0], rendered[0]]
    assert tooled["query"][0] == maybe_apply_chat_template({"prompt": chats[0], "chat_template_kwargs": {"think": False}},
                                                           kw_tok, tools=[schema])["prompt"]
    assert tooled["input_ids"] == kw_tok(list(tooled["query"]), add_special_tokens=False)["input_ids"]
    assert conv["input_ids"] == tokenizer(rendered, add_special_tokens=False)["input_ids"]
    # a tokenizer that adds BOS itself and a template that writes it: the policy's ids hold one BOS, and so does what a
    # reward model reads (it tokenizes the query text with special tokens)
    from tokenizers.processors import TemplateProcessing

    bos = copy.deepcopy(tokenizer)
    bos._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", 50256)])
    bos.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    assert bos("x")["input_ids"][0] == 50256
    row = prepare_query_dataset(Dataset.from_dict({"prompt": chats[:1]}), bos, policy, args)[0]
    assert row["input_ids"].count(50256) == 1 and row["query"] == rendered[0]
    assert bos(row["query"])["input_ids"] == row["input_ids"]
    # the same in a conversational label row (the reward model trains on what it will score)
    from hf_prefs.labels.schema import pairwise_label

    turn = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    label = pairwise_label({"prompt": chats[0], "chosen": turn("Yes."), "rejected": turn("No.")}, 0, bos)
    assert not label["query"].startswith("<|endoftext|>") and bos(label["query"])["input_ids"].count(50256) == 1
    # a dataset of chat-template ids only (TRL 1.12's scripts): the reward reads the template's special tokens too
    ended = copy.deepcopy(tokenizer)
    ended.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|endoftext|>{% endfor %}"
    text = ended.apply_chat_template(chats[1], tokenize=False)
    ids_only = prepare_query_dataset(Dataset.from_dict({"input_ids": [ended(text)["input_ids"]]}), ended, policy, args)
    assert ids_only["query"] == [text] and text.count("<|endoftext|>") == 2  # were dropped (skip_special_tokens)
    with pytest.raises(ValueError, match=r"column `prompt` must hold non-empty strings or lists of chat messages.*; bad rows \[1\]"):
        prepare_query_dataset(Dataset.from_dict({"prompt": ["a", ""]}), gpt2_tokenizer, policy, args)
    wrong_keys = [chats[0], [{"speaker": "user", "text": "hi"}]]  # not chat messages: named, not a tokenizer error
    with pytest.raises(ValueError, match=r"\{'role': ..., 'content': ...\} dicts\); bad rows \[1\]"):
        prepare_query_dataset(Dataset.from_dict({"prompt": wrong_keys}), tokenizer, policy, args)
    with pytest.raises(ValueError, match=r"dicts\); bad rows \[0, 1\]"):
        prepare_query_dataset(Dataset.from_dict({"prompt": [wrong_keys[1]] * 2}), tokenizer, policy, args)
    with pytest.raises(ValueError, match="conversational `prompt` rows need a tokenizer with a chat template"):
        prepare_query_dataset(Dataset.from_dict({"prompt": chats}), gpt2_tokenizer, policy, args)


def test_queries_past_the_model_positions_are_named_with_the_limit(gpt2_tokenizer):
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from transformers import GPT2LMHeadModel

    from conftest import tiny_gpt2_config
    from hf_prefs.trainers.ppo_data import prepare_query_dataset

    torch.manual_seed(0)
    policy, args = GPT2LMHeadModel(tiny_gpt2_config()), SimpleNamespace(dataset_num_proc=None, response_length=4)
    queries = ["a short one", " word" * 260, "another", " word" * 253]  # 260 and 253 tokens; 256 positions
    with pytest.raises(ValueError, match=r"row 1: query of 260 tokens \+ response_length 4 exceeds the model's 256 "
                                         r"positions; 2 of 4 rows do \(rows \[1, 3\]\): .* at most 252 tokens"):
        prepare_query_dataset(Dataset.from_dict({"query": queries}), gpt2_tokenizer, policy, args)


def test_input_ids_padded_by_the_tokenizer_or_in_torch_format_are_the_queries_tokens(gpt2_tokenizer, caplog):
    """TRL 1.12's users tokenized with padding (an ``attention_mask`` column) and often ``set_format("torch")``: the
    queries are the attended tokens only (TRL 1.12 masked the pad tokens), whatever the dataset's format; a bad row
    is named."""
    from types import SimpleNamespace

    import torch
    from datasets import Dataset
    from transformers import GPT2LMHeadModel

    from conftest import tiny_gpt2_config
    from hf_prefs.trainers.ppo_data import prepare_query_dataset

    torch.manual_seed(0)
    policy, args = GPT2LMHeadModel(tiny_gpt2_config()), SimpleNamespace(dataset_num_proc=None, response_length=4)
    texts = ["The sun rose", "She walked to the river", "Hello"]
    plain = gpt2_tokenizer(texts)["input_ids"]
    tokenizer = copy.deepcopy(gpt2_tokenizer)
    tokenizer.pad_token = tokenizer.eos_token  # TRL's scripts: pad = EOS
    for side in ("left", "right"):
        tokenizer.padding_side = side
        enc = tokenizer(texts, padding="max_length", max_length=8)
        assert any(m.count(0) for m in enc["attention_mask"])
        out = prepare_query_dataset(Dataset.from_dict(dict(enc)), tokenizer, policy, args)
        assert out["input_ids"] == plain and out["query"] == texts and "attention_mask" not in out.column_names
        torch_format = Dataset.from_dict(dict(enc)).with_format("torch")
        assert prepare_query_dataset(torch_format, tokenizer, policy, args)["input_ids"] == plain
    for fmt in ("torch", "numpy"):  # unpadded rows of different lengths too
        out = prepare_query_dataset(Dataset.from_dict({"input_ids": plain}).with_format(fmt), tokenizer, policy, args)
        assert out["input_ids"] == plain and out["query"] == texts
    # a pad token of its own (not EOS) is never a query token: its runs at the ends are dropped without a mask too
    padded = copy.deepcopy(gpt2_tokenizer)
    padded.pad_token = "!"  # id 0: inside the embedding, not EOS
    ids = [[0, 0] + plain[0], plain[1], plain[2] + [0]]
    with caplog.at_level(logging.INFO, logger="hf_prefs.trainers.ppo_data"):
        out = prepare_query_dataset(Dataset.from_dict({"input_ids": ids}), padded, policy, args)
    assert out["input_ids"] == plain and "2 of 3 rows" in caplog.text
    ended = [plain[0] + [tokenizer.eos_token_id]]  # pad = EOS (= BOS for GPT-2) without a mask: may be the query's own
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="hf_prefs.trainers.ppo_data"):
        assert prepare_query_dataset(Dataset.from_dict({"input_ids": ended}), tokenizer, policy, args)["input_ids"] == ended
        assert "run of the pad token" not in caplog.text
        tokenizer.padding_side = "left"  # padded with EOS and the mask left behind: kept, but said (it was silent)
        enc = tokenizer(texts, padding="max_length", max_length=8)["input_ids"]
        assert prepare_query_dataset(Dataset.from_dict({"input_ids": enc}), tokenizer, policy, args)["input_ids"] == enc
    assert ("train_dataset: rows [0, 1, 2] (3 of 3) start or end with a run of the pad token '<|endoftext|>'" in caplog.text
            and "keep the tokenizer's `attention_mask` column" in caplog.text)
    with pytest.raises(ValueError, match=r"train_dataset row 1: `input_ids` must be a list of token ids \(ints\), got None"):
        prepare_query_dataset(Dataset.from_dict({"input_ids": [plain[0], None]}), tokenizer, policy, args)
    with pytest.raises(ValueError, match=r"row 0: `input_ids` must be .*got a list holding float 464.0"):  # pandas' floats
        prepare_query_dataset(Dataset.from_dict({"input_ids": [[464.0, 4252.0]]}), tokenizer, policy, args)
    bad_mask = {"input_ids": [plain[0], plain[1]], "attention_mask": [[1] * len(plain[0]), [1]]}
    with pytest.raises(ValueError, match=r"train_dataset row 1: `attention_mask` has 1 entries for 5 `input_ids`"):
        prepare_query_dataset(Dataset.from_dict(bad_mask), tokenizer, policy, args)
