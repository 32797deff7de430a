"""Dataset.map with a tokenizer, fingerprinted from the tokenizer's contents (hf_prefs.tokenizer_maps): the same
rows as datasets' own map, a fingerprint that follows every change to the tokenizer or the function, and no stale
cache file."""

from __future__ import annotations

import copy
import functools

from datasets import Dataset, load_from_disk

from hf_prefs.tokenizer_maps import map_with_tokenizer, tokenizer_digest

TEXTS = ["The sun rose over the hills.", "She said: hello [NEW] world", "It was a dark and stormy night"]


def _tokenize(tokenizer, limit=None):
    return lambda batch: {"input_ids": [ids[:limit] for ids in tokenizer(batch["text"])["input_ids"]]}


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
    # what a call leaves behind is not hashed: the "longer than the maximum" warning's mark, and the padding and
    # truncation state a padded call sets on the Rust tokenizer (the next call sets its own)
    gpt2_tokenizer("word " * 2000)
    assert gpt2_tokenizer.deprecation_warnings
    padded(TEXTS, padding=True, truncation=True, max_length=4)
    assert '"padding":{' in padded.backend_tokenizer.to_str().replace(" ", "")
    assert tokenizer_digest(gpt2_tokenizer) == tokenizer_digest(same)
    pad_only = copy.deepcopy(same)
    pad_only.pad_token = pad_only.eos_token
    assert tokenizer_digest(padded) == tokenizer_digest(pad_only)


def test_map_gives_datasets_rows_and_a_fingerprint_that_follows_the_function(gpt2_tokenizer, tmp_path):
    data = Dataset.from_dict({"text": TEXTS})
    mapped = map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert mapped["input_ids"] == data.map(_tokenize(gpt2_tokenizer), batched=True)["input_ids"]
    again = map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert again._fingerprint == mapped._fingerprint  # deterministic: a dataset read from disk reuses its cache
    added = copy.deepcopy(gpt2_tokenizer)
    added.add_tokens(["[NEW]"])
    other = map_with_tokenizer(data, _tokenize(added), added, batched=True)
    fingerprints = {mapped._fingerprint, other._fingerprint}
    fingerprints.add(map_with_tokenizer(data, _tokenize(gpt2_tokenizer, limit=2), gpt2_tokenizer,  # a closure value
                                        batched=True)._fingerprint)
    fingerprints.add(map_with_tokenizer(data, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True,  # an argument
                                        batch_size=2)._fingerprint)
    fingerprints.add(map_with_tokenizer(data, lambda batch: {"input_ids": [[0]] * len(batch["text"])}, gpt2_tokenizer,
                                        batched=True)._fingerprint)  # the code

    def with_default(batch, limit=1):  # a default value
        return {"input_ids": [ids[:limit] for ids in gpt2_tokenizer(batch["text"])["input_ids"]]}

    fingerprints.add(map_with_tokenizer(data, with_default, gpt2_tokenizer, batched=True)._fingerprint)
    with_default.__defaults__ = (2,)
    fingerprints.add(map_with_tokenizer(data, with_default, gpt2_tokenizer, batched=True)._fingerprint)

    def with_keyword(batch, *, limit=1):  # a keyword-only default
        return {"input_ids": [ids[:limit] for ids in gpt2_tokenizer(batch["text"])["input_ids"]]}

    fingerprints.add(map_with_tokenizer(data, with_keyword, gpt2_tokenizer, batched=True)._fingerprint)
    with_keyword.__kwdefaults__ = {"limit": 3}
    fingerprints.add(map_with_tokenizer(data, with_keyword, gpt2_tokenizer, batched=True)._fingerprint)
    assert len(fingerprints) == 9
    # a callable that is not a plain function: datasets' own hashing, the same rows
    partial = functools.partial(lambda batch, tokenizer: {"input_ids": tokenizer(batch["text"])["input_ids"]},
                                tokenizer=gpt2_tokenizer)
    assert map_with_tokenizer(data, partial, gpt2_tokenizer, batched=True)["input_ids"] == mapped["input_ids"]

    # a dataset read from disk (cache files): a second tokenizer's map is computed, not read from the first's cache
    data.save_to_disk(tmp_path / "texts")
    on_disk = load_from_disk(str(tmp_path / "texts"))
    first = map_with_tokenizer(on_disk, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True)
    assert first.cache_files and first["input_ids"] == mapped["input_ids"]
    second = map_with_tokenizer(on_disk, _tokenize(added), added, batched=True)
    assert second["input_ids"] == other["input_ids"] != first["input_ids"]
    assert map_with_tokenizer(on_disk, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True).cache_files == first.cache_files
    # a stream: no fingerprint, and its map takes no desc/num_proc
    stream = data.to_iterable_dataset()
    rows = map_with_tokenizer(stream, _tokenize(gpt2_tokenizer), gpt2_tokenizer, batched=True, desc="x", num_proc=2)
    assert [row["input_ids"] for row in rows] == mapped["input_ids"]
