"""Dataset.map with a tokenizer, fingerprinted from the tokenizer's contents (hf_prefs.tokenizer_maps): the same
rows as datasets' own map, a fingerprint that follows every change to the tokenizer, and no stale cache file."""

from __future__ import annotations

import copy

from datasets import Dataset, load_from_disk

from hf_prefs.tokenizer_maps import map_with_tokenizer, tokenizer_digest

TEXTS = ["The sun rose over the hills.", "She said: hello [NEW] world", "It was a dark and stormy night"]


def _tokenize(tokenizer):
    return lambda batch: {"input_ids": tokenizer(batch["text"])["input_ids"]}


def test_digest_follows_what_changes_the_tokenizers_output(gpt2_tokenizer):
    same = copy.deepcopy(gpt2_tokenizer)
    assert tokenizer_digest(same) == tokenizer_digest(gpt2_tokenizer)
    digests = {tokenizer_digest(gpt2_tokenizer)}
    added = copy.deepcopy(gpt2_tokenizer)
    added.add_tokens(["[NEW]"])
    padded = copy.deepcopy(gpt2_tokenizer)
    padded.pad_token = padded.eos_token
    templated = copy.deepcopy(gpt2_tokenizer)
    templated.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    left = copy.deepcopy(gpt2_tokenizer)
    left.padding_side = "left"
    for tokenizer in (added, padded, templated, left):
        digests.add(tokenizer_digest(tokenizer))
    assert len(digests) == 5
    gpt2_tokenizer("a warning-raising call " * 2)  # bookkeeping a call changes is not hashed
    assert tokenizer_digest(gpt2_tokenizer) == tokenizer_digest(same)


def test_map_gives_datasets_rows_and_a_new_fingerprint_for_another_tokenizer(gpt2_tokenizer, tmp_path):
    data = Dataset.from_dict({"text": TEXTS})
    mapped = map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert mapped["input_ids"] == data.map(_tokenize(gpt2_tokenizer), batched=True)["input_ids"]
    again = map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert again._fingerprint == mapped._fingerprint  # deterministic: a dataset read from disk reuses its cache
    added = copy.deepcopy(gpt2_tokenizer)
    added.add_tokens(["[NEW]"])
    other = map_with_tokenizer(data, _tokenize(added), added, batched=True)
    assert other._fingerprint != mapped._fingerprint
    assert map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, reads=(1,), batched=True)._fingerprint \
        != mapped._fingerprint  # a value the function reads
    assert map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True, batch_size=2)._fingerprint \
        != mapped._fingerprint  # an argument of the map
    assert map_with_tokenizer(data, lambda batch: {"input_ids": [[0]] * len(batch["text"])}, gpt2_tokenizer,
                              batched=True)._fingerprint != mapped._fingerprint  # the function's code

    # a dataset read from disk (cache files): a second tokenizer's map is computed, not read from the first's cache
    data.save_to_disk(tmp_path / "texts")
    on_disk = load_from_disk(str(tmp_path / "texts"))
    first = map_with_tokenizer(on_disk, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert first.cache_files and first["input_ids"] == mapped["input_ids"]
    second = map_with_tokenizer(on_disk, _tokenize(added), added, batched=True)
    assert second["input_ids"] == other["input_ids"] != first["input_ids"]
    assert map_with_tokenizer(on_disk, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True).cache_files == first.cache_files
