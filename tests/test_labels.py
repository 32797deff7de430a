"""The label schema: validation errors that name the row and field, and the converters."""

from __future__ import annotations

import copy
import json

import pytest
from datasets import Dataset
from trl.data_utils import maybe_apply_chat_template, maybe_extract_prompt

from hf_prefs.labels.schema import (
    OPENAI_PAD_ID,
    LabelValidationError,
    from_openai_json,
    from_pairwise,
    load_label_file,
    to_canonical,
    to_pairwise,
    validate_labels,
)


def _labels(**overrides) -> dict:
    rows = {
        "query": ["It was a dark night.", "She smiled.", "The house was old."],
        "samples": [[" a", " b", " c", " d"], [" e", " f", " g", " h"], [" i", " j", " k", " l"]],
        "best": [0, 3, 2],
    }
    rows.update(overrides)
    return rows


def _error(rows: dict, **kw) -> LabelValidationError:
    with pytest.raises(LabelValidationError) as info:
        validate_labels(Dataset.from_dict(rows), **kw)
    return info.value


def test_valid_labels_pass_and_keep_extra_columns():
    ds = validate_labels(Dataset.from_dict({**_labels(), "labeler": ["a", "b", "c"]}), k=4)
    assert ds["best"] == [0, 3, 2]
    assert ds["labeler"] == ["a", "b", "c"]


def test_best_out_of_range_names_row_and_field():
    err = _error(_labels(best=[0, 4, 2]))
    assert (err.row, err.field) == (1, "best")
    assert "row 1" in str(err) and "'best'" in str(err) and "out of range" in str(err)
    err = _error(_labels(best=[0, 1, -1]))
    assert (err.row, err.field) == (2, "best")


def test_wrong_number_of_samples_names_row():
    err = _error(_labels(), k=2)
    assert (err.row, err.field) == (0, "samples")
    assert "K=2" in str(err)
    samples = _labels()["samples"]
    samples[2] = [" only one"]
    err = _error(_labels(samples=samples))
    assert (err.row, err.field) == (2, "samples")
    assert "at least 2" in str(err)


def test_mixed_k_names_the_first_row_that_differs():
    samples = _labels()["samples"]
    samples[1] = [" e", " f", " g"]
    err = _error(_labels(samples=samples))
    assert (err.row, err.field) == (1, "samples")
    assert "K=4" in str(err) and "got 3" in str(err)


def test_empty_sample_names_row_and_sample():
    samples = _labels()["samples"]
    samples[2][1] = "   "
    err = _error(_labels(samples=samples))
    assert (err.row, err.field) == (2, "samples[1]")
    assert "empty" in str(err)


def test_nan_and_missing_best_name_row():
    err = _error(_labels(best=[0.0, float("nan"), 2.0]))
    assert (err.row, err.field) == (1, "best")
    assert "nan" in str(err).lower()
    err = _error(_labels(best=[0, 1, None]))
    assert (err.row, err.field) == (2, "best")
    err = _error(_labels(best=[0.0, 1.5, 2.0]))
    assert (err.row, err.field) == (1, "best")


def test_float_best_is_cast_to_int():
    ds = validate_labels(Dataset.from_dict(_labels(best=[0.0, 3.0, 2.0])))
    assert ds["best"] == [0, 3, 2]
    assert ds.features["best"].dtype == "int64"


def test_non_string_query_and_missing_columns():
    err = _error(_labels(query=["ok", None, "ok"]))
    assert (err.row, err.field) == (1, "query")
    with pytest.raises(LabelValidationError, match="'best' column"):
        validate_labels(Dataset.from_dict({"query": ["q"], "samples": [["a", "b"]]}))
    with pytest.raises(LabelValidationError, match="'samples' column"):
        validate_labels(Dataset.from_dict({"query": ["q"], "best": [0]}))


def test_flat_sample_columns_are_canonicalized():
    flat = Dataset.from_dict({"query": ["q"], "sample0": [" a"], "sample1": [" b"], "sample2": [" c"], "best": [2]})
    ds = validate_labels(flat)
    assert ds["samples"] == [[" a", " b", " c"]]
    assert "sample0" not in ds.column_names
    with pytest.raises(LabelValidationError, match="without gaps"):
        to_canonical(Dataset.from_dict({"query": ["q"], "sample0": ["a"], "sample2": ["b"], "best": [0]}))


def test_from_pairwise_explicit_and_implicit_prompt():
    explicit = Dataset.from_dict({"prompt": ["Q: hi."], "chosen": [" good answer"], "rejected": [" bad answer"]})
    ds = from_pairwise(explicit)
    assert ds[0] == {"query": "Q: hi.", "samples": [" good answer", " bad answer"], "best": 0}
    implicit = Dataset.from_dict({"chosen": ["Q: hi. good"], "rejected": ["Q: hi. bad"]})
    ds = from_pairwise(implicit)
    assert ds[0]["query"] == "Q: hi."  # TRL's split: the space stays with the words it precedes
    assert ds[0]["samples"] == [" good", " bad"]
    assert from_pairwise(implicit, eos_token="<|endoftext|>")[0]["samples"] == [" good<|endoftext|>", " bad<|endoftext|>"]
    with pytest.raises(LabelValidationError, match="field 'margin'"):
        from_pairwise(explicit.add_column("margin", [1.0]))
    with pytest.raises(LabelValidationError, match="'rejected'"):
        from_pairwise(Dataset.from_dict({"prompt": ["q"], "chosen": ["a"]}))
    with pytest.raises(LabelValidationError, match="TRL's pairwise preference format: PreferenceRewardTrainer takes it as it is, or convert it with hf_prefs.from_pairwise"):
        validate_labels(explicit)  # passed where K-way labels are expected: the error says what to do


_CHATML = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
           "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def test_from_pairwise_renders_conversational_rows_as_trl_does(gpt2_tokenizer):
    tok = copy.deepcopy(gpt2_tokenizer)
    tok.chat_template = _CHATML
    user = [{"role": "user", "content": "Is the sky blue?"}]
    good, bad = [{"role": "assistant", "content": "Yes."}], [{"role": "assistant", "content": "No."}]
    explicit = Dataset.from_dict({"prompt": [user], "chosen": [good], "rejected": [bad]})
    implicit = Dataset.from_dict({"chosen": [user + good], "rejected": [user + bad]})
    for ds in (explicit, implicit):
        row = from_pairwise(ds, tok)[0]
        assert row == {"query": "<|user|>Is the sky blue?<|end|><|assistant|>",
                       "samples": ["Yes.<|end|>", "No.<|end|>"], "best": 0}
        # what trl.RewardTrainer trains on for the same row: the prompt followed by the chosen/rejected turn
        trl_row = maybe_apply_chat_template(maybe_extract_prompt(ds[0]), tok)
        assert row["query"] == trl_row["prompt"]
        assert [row["query"] + s for s in row["samples"]] == [trl_row["prompt"] + trl_row["chosen"],
                                                                trl_row["prompt"] + trl_row["rejected"]]
    with pytest.raises(LabelValidationError, match="row 0, field 'chosen': is conversational .* pass the tokenizer"):
        from_pairwise(explicit)
    with pytest.raises(LabelValidationError, match="row 0, field 'chosen': could not be rendered.*chat_template is not set"):
        from_pairwise(explicit, gpt2_tokenizer)  # GPT-2's tokenizer has no chat template
    no_content = Dataset.from_dict({"prompt": [user, user], "chosen": [good, [{"role": "assistant"}]], "rejected": [bad, bad]})
    with pytest.raises(LabelValidationError, match=r"row 1, field 'chosen': message 0 has no content"):
        from_pairwise(no_content, tok)  # Arrow gives it content None: rendered as "None" by a template, or jinja's error
    call = [{"role": "assistant", "content": None, "tool_calls": [{"name": "lookup"}]}]  # a tool call: no content, fine
    tool_tok = copy.deepcopy(tok)
    tool_tok.chat_template = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] or m['tool_calls'] }}{% endfor %}"
    row = from_pairwise(Dataset.from_list([{"prompt": user, "chosen": call, "rejected": call}]), tool_tok)[0]
    assert row["samples"][0].startswith("<|assistant|>")
    raising = copy.deepcopy(tok)
    raising.chat_template = "{{ raise_exception('no turns') }}"
    with pytest.raises(LabelValidationError, match=r"row 0, field 'chosen': could not be rendered with the chat template "
                                                   r"\(TemplateError: no turns\)"):  # any template error, its row named
        from_pairwise(explicit, raising)
    mixed = Dataset.from_dict({"prompt": ["Is the sky blue?"], "chosen": [good], "rejected": [bad]})
    with pytest.raises(LabelValidationError, match=r"row 0, field 'chosen': is a list of messages while 'prompt' is text"):
        from_pairwise(mixed, tok)  # was an IndexError inside TRL's template code
    # a row's tools and chat_template_kwargs (TRL's columns) reach the template, as in trl.RewardTrainer (were dropped)
    kw_tok = copy.deepcopy(tok)
    kw_tok.chat_template = ("{% if think is defined and not think %}[no-think]{% endif %}{% if tools %}TOOLS: "
                            "{{ tools | map(attribute='name') | join(',') }}\n{% endif %}" + _CHATML)
    schema = {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {}}}
    rows = [{"prompt": user, "chosen": good, "rejected": bad, "tools": json.dumps([schema]),
             "chat_template_kwargs": {"think": False}},
            {"prompt": user, "chosen": good, "rejected": bad, "tools": None, "chat_template_kwargs": None}]
    got = from_pairwise(Dataset.from_list(rows), kw_tok)
    assert got[0]["query"] == "[no-think]TOOLS: get_weather\n<|user|>Is the sky blue?<|end|><|assistant|>"
    assert got[1]["query"] == "<|user|>Is the sky blue?<|end|><|assistant|>" and "tools" not in got.column_names
    trl_row = maybe_apply_chat_template({"prompt": user, "chosen": good, "rejected": bad,
                                         "chat_template_kwargs": {"think": False}}, kw_tok, tools=[schema])
    assert got[0]["query"] == trl_row["prompt"] and got[0]["samples"] == [trl_row["chosen"], trl_row["rejected"]]


def test_load_label_file_takes_trl_pairwise_files(gpt2_tokenizer, tmp_path):
    """A recipe's label_file in TRL's pairwise format: K = 2 labels, samples as the text (no EOS: the reward model then
    scores policy responses, which are text too); conversational rows need the tokenizer's chat template."""
    text = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "Q: hi.", "chosen": " good", "rejected": " bad"}, {"prompt": "It rained.", "chosen": " Sad", "rejected": " Fun"}]
    text.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = load_label_file(text, k=2)
    assert ds.to_list() == [{"query": "Q: hi.", "samples": [" good", " bad"], "best": 0},
                            {"query": "It rained.", "samples": [" Sad", " Fun"], "best": 0}]
    assert len(load_label_file(text, k=2, limit=1)) == 1
    implicit = tmp_path / "implicit.jsonl"
    implicit.write_text(json.dumps({"chosen": "It rained. Sad", "rejected": "It rained. Fun"}) + "\n")
    assert load_label_file(implicit, k=2)[0] == {"query": "It rained.", "samples": [" Sad", " Fun"], "best": 0}
    mixed = tmp_path / "mixed.jsonl"  # a row without the prompt the others have: named
    mixed.write_text(text.read_text() + implicit.read_text())
    with pytest.raises(LabelValidationError, match="row 2, field 'prompt'"):
        load_label_file(mixed, k=2)
    with pytest.raises(LabelValidationError, match="K=2 samples per row but num_candidates=4 .*set num_candidates 2"):
        load_label_file(text, k=4)
    chat = tmp_path / "chat.jsonl"
    user = [{"role": "user", "content": "Is the sky blue?"}]
    chat.write_text(json.dumps({"prompt": user, "chosen": [{"role": "assistant", "content": "Yes."}],
                                "rejected": [{"role": "assistant", "content": "No."}]}) + "\n")
    tok = copy.deepcopy(gpt2_tokenizer)
    tok.chat_template = _CHATML
    assert load_label_file(chat, k=2, processing_class=tok)[0] == {
        "query": "<|user|>Is the sky blue?<|end|><|assistant|>", "samples": ["Yes.<|end|>", "No.<|end|>"], "best": 0}
    with pytest.raises(LabelValidationError, match="row 0, field 'chosen': is conversational"):
        load_label_file(chat, k=2)


def test_to_pairwise_gives_the_k_minus_1_implied_pairs():
    ds = to_pairwise(Dataset.from_dict(_labels()))
    assert len(ds) == 3 * 3
    first = ds.select(range(3))
    assert first["prompt"] == ["It was a dark night."] * 3
    assert first["chosen"] == [" a"] * 3
    assert first["rejected"] == [" b", " c", " d"]
    second = ds.select(range(3, 6))
    assert second["chosen"] == [" h"] * 3 and second["rejected"] == [" e", " f", " g"]
    # round trip of a K=2 dataset: chosen is always sample `best`
    back = to_pairwise(from_pairwise(Dataset.from_dict({"prompt": ["p"], "chosen": [" x"], "rejected": [" y"]})))
    assert back[0] == {"prompt": "p", "chosen": " x", "rejected": " y"}


def _openai_records(tok, texts, best, query="The rain had stopped at last.", q_len=16, s_len=24):
    def pad_to(ids, n, left=False):
        pads = [OPENAI_PAD_ID] * (n - len(ids))
        return pads + ids if left else ids + pads

    rec = {"query": pad_to(tok.encode(query), q_len, left=True), "best": best}
    for j, t in enumerate(texts):
        rec[f"sample{j}"] = pad_to(tok.encode(t), s_len)
    return rec


def test_from_openai_json_decodes_gpt2_ids_and_drops_pad_50259(gpt2_tokenizer, tmp_path):
    texts1 = [" She was very happy.", " He left the room.", " It rained all day.", " Nobody came."]
    texts2 = [" A letter arrived.", " The dog barked.", " Tea was served.", " The end."]
    records = [_openai_records(gpt2_tokenizer, texts1, 0), _openai_records(gpt2_tokenizer, texts2, 3)]
    assert OPENAI_PAD_ID == 50259 and OPENAI_PAD_ID >= len(gpt2_tokenizer)
    path = tmp_path / "offline_5k.json"
    path.write_text(json.dumps(records))
    ds = from_openai_json(path, gpt2_tokenizer)
    assert ds["query"] == ["The rain had stopped at last."] * 2
    assert ds["samples"] == [texts1, texts2]
    assert ds["best"] == [0, 3]
    assert len(from_openai_json(records, gpt2_tokenizer, limit=1)) == 1
    lines = tmp_path / "lines.json"  # one record per line (Dataset.to_json), or one record: read as any label file
    lines.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert from_openai_json(lines, gpt2_tokenizer).to_list() == ds.to_list()  # was json's "Extra data"
    (tmp_path / "one.json").write_text(json.dumps(records[0]))
    assert from_openai_json(tmp_path / "one.json", gpt2_tokenizer).to_list() == ds.to_list()[:1]  # was KeyError: 0
    (tmp_path / "no_suffix").write_text(json.dumps(records))  # JSON whatever the file's name
    assert from_openai_json(tmp_path / "no_suffix", gpt2_tokenizer).to_list() == ds.to_list()


def test_from_openai_json_bad_records_name_row_and_field(gpt2_tokenizer):
    good = _openai_records(gpt2_tokenizer, [" a.", " b.", " c.", " d."], 1)
    bad_best = dict(good, best=7)
    with pytest.raises(LabelValidationError) as info:
        from_openai_json([good, bad_best], gpt2_tokenizer)
    assert (info.value.row, info.value.field) == (1, "best")
    missing = {k: v for k, v in good.items() if k != "sample2"}
    with pytest.raises(LabelValidationError) as info:
        from_openai_json([good, missing], gpt2_tokenizer)
    assert (info.value.row, info.value.field) == (1, "sample2")
    extra = dict(good, sample4=good["sample0"])  # K from record 0: a fifth sample was dropped silently
    with pytest.raises(LabelValidationError, match=r"expected K=4 samples \(sample0..sample3\) like record 0, got "
                                                   r"\['sample0', 'sample1', 'sample2', 'sample3', 'sample4'\]") as info:
        from_openai_json([good, extra], gpt2_tokenizer)
    assert (info.value.row, info.value.field) == (1, "samples")
    only_pad = dict(good, sample3=[OPENAI_PAD_ID] * 24)
    with pytest.raises(LabelValidationError) as info:
        from_openai_json([only_pad], gpt2_tokenizer)
    assert (info.value.row, info.value.field) == (0, "samples[3]")
    # a "samples" list of token-id lists is the same record (it said "a comparison needs at least 2 samples, got 0")
    listed = {"query": good["query"], "samples": [good[f"sample{j}"] for j in range(4)], "best": good["best"]}
    assert from_openai_json([listed], gpt2_tokenizer).to_list() == from_openai_json([good], gpt2_tokenizer).to_list()
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples': has both 'samples' and \['sample0'"):
        from_openai_json([dict(good, samples=listed["samples"])], gpt2_tokenizer)
    texts = dict(listed, samples=[" a.", " b."])  # token-id query, text samples: named, not a TypeError in decoding
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples\[0\]': a sample of a token-id record .* got str"):
        from_openai_json([texts], gpt2_tokenizer)
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples': a token-id record needs sample0"):
        from_openai_json([{"query": good["query"], "best": 0}], gpt2_tokenizer)
    # a bad query or best was an Arrow, int() or iteration error naming neither; a float id was truncated silently
    for field, value, message in (("best", "2", r"best must be an integer, got '2'"), ("best", True, "got True"),
                                  ("query", "Hello there", r"must be a list of token ids, got str 'Hello there'"),
                                  ("query", None, "got NoneType None"), ("query", [1.5, 2], "a list holding 1.5")):
        with pytest.raises(LabelValidationError, match=message) as info:
            from_openai_json([good, dict(good, **{field: value})], gpt2_tokenizer)
        assert (info.value.row, info.value.field) == (1, field)


def test_a_missing_local_label_file_is_named_as_such_and_hub_ids_are_not_taken_for_paths(tmp_path, monkeypatch):
    from hf_prefs.labels.schema import names_a_local_file
    from hf_prefs import PPOConfig
    from hf_prefs.pipeline.arguments import PipelineArguments, validate_pipeline_config

    for spec in ("nope.jsonl", "NOPE.JSONL", "./labels", "../x", "~/labels.csv", "/abs/labels", "data/2024/labels", str(tmp_path / "a")):
        assert names_a_local_file(spec), spec
    for spec in ("imdb", "trl-lib/ultrafeedback_binarized", "openai/summarize_from_feedback"):
        assert not names_a_local_file(spec), spec
    with pytest.raises(FileNotFoundError, match="label_file nope.jsonl: no such file"):
        load_label_file("nope.jsonl")  # was the Hub's "Couldn't reach 'nope.jsonl'"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a missing one-slash folder reads as a Hub id: both are said
    with pytest.raises(FileNotFoundError, match="label_file runs/labels: no local file or folder .* Hub dataset id"):
        load_label_file("runs/labels")
    # a Hub id with a namespace passes the config check (it was refused as a missing local path); it is loaded later
    validate_pipeline_config(PipelineArguments(task="sentiment", label_source="file",
                                               label_file="trl-lib/ultrafeedback_binarized"), PPOConfig(output_dir=str(tmp_path)))
    with pytest.raises(FileNotFoundError, match="label_file data/2024/labels.jsonl: no such file"):
        validate_pipeline_config(PipelineArguments(task="sentiment", label_source="file", label_file="data/2024/labels.jsonl"),
                                 PPOConfig(output_dir=str(tmp_path)))
    # a file under ~ is read
    home = tmp_path / "home"
    home.mkdir()
    (home / "labels.jsonl").write_text(json.dumps({"query": "q", "samples": ["a", "b"], "best": 1}) + "\n")
    monkeypatch.setenv("HOME", str(home))
    assert load_label_file("~/labels.jsonl")[0]["best"] == 1


def test_half_a_pairwise_row_names_the_missing_column():
    with pytest.raises(LabelValidationError, match="needs both 'chosen' and 'rejected': no 'rejected' column"):
        validate_labels(Dataset.from_dict({"prompt": ["p"], "chosen": ["c"]}))
    with pytest.raises(LabelValidationError, match="no 'chosen' column"):
        validate_labels(Dataset.from_dict({"rejected": ["r"]}))
    for ids in ("chosen_ids", "chosen_input_ids"):  # TRL's pre-tokenized rows (current and older column names)
        rows = {ids: [[1, 2]], ids.replace("chosen", "rejected"): [[1, 3]]}
        with pytest.raises(LabelValidationError, match="pre-tokenized pairwise rows: labels are text here"):
            validate_labels(Dataset.from_dict(rows))


def test_a_missing_chosen_or_rejected_cell_of_an_implicit_prompt_row_is_named(gpt2_tokenizer):
    """TRL's implicit-prompt rows (no ``prompt`` column) with a None or non-text ``chosen``/``rejected``: the row and
    field are named, as for explicit-prompt rows (was ``KeyError: 'prompt'``; conversational rows: ``TypeError``)."""
    from datasets import IterableDataset

    conv = lambda a: [{"role": "user", "content": "hi"}, {"role": "assistant", "content": a}]  # noqa: E731
    gpt2_tokenizer.chat_template = _CHATML
    cases = [([{"chosen": "I like apples", "rejected": "I like pears"}, {"chosen": "I like apples", "rejected": None}],
              "rejected", "NoneType"),
             ([{"chosen": "I like apples", "rejected": "I like pears"}, {"chosen": 5, "rejected": "I like pears"}],
              "chosen", "int"),
             ([{"chosen": conv("a"), "rejected": conv("b")}, {"chosen": conv("a"), "rejected": None}], "rejected", "NoneType")]
    for rows, field, got in cases:
        message = f"row 1, field '{field}': must be text or a list of messages, got {got}"
        if got == "NoneType":  # Arrow itself refuses an int among text
            with pytest.raises(LabelValidationError, match=message):
                from_pairwise(Dataset.from_list(rows), gpt2_tokenizer)
        with pytest.raises(LabelValidationError, match=message):  # a stream: when the row is read
            list(from_pairwise(IterableDataset.from_generator(lambda rows=rows: iter(rows)), gpt2_tokenizer))


def test_label_file_rows_arrow_cannot_type_and_bad_bytes_name_their_row_or_line(tmp_path):
    """A ``best`` given as text or a bool among integer rows, or a line that is not UTF-8: the row or line is named
    (was Arrow's ``ArrowInvalid``/``ArrowTypeError`` or a bare ``UnicodeDecodeError`` with no line)."""
    good = {"query": "q", "samples": [" a", " b", " c", " d"], "best": 1}
    for bad_best, shown in (("2", "'2'"), (True, "True")):
        path = tmp_path / f"best_{type(bad_best).__name__}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in [good, good, {**good, "best": bad_best}]))
        with pytest.raises(LabelValidationError, match=f"best must be an integer, got {shown}") as err:
            load_label_file(path)
        assert (err.value.row, err.value.field) == (2, "best")
    path = tmp_path / "latin1.jsonl"
    latin1 = json.dumps({**good, "query": "caf\u00e9"}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(json.dumps(good).encode() + b"\n" + latin1 + b"\n")
    with pytest.raises(LabelValidationError, match=r"latin1.jsonl:2 is not UTF-8 text"):
        load_label_file(path)
    path = tmp_path / "latin1.json"
    path.write_bytes(json.dumps([good, {**good, "query": "caf\u00e9"}], ensure_ascii=False).encode("latin-1"))
    with pytest.raises(LabelValidationError, match=r"latin1.json is not UTF-8 text"):
        load_label_file(path)
    path.write_text(json.dumps([good, {**good, "best": 1.0}]))  # an integral float is still an integer
    assert load_label_file(path)["best"] == [1, 1]


def test_own_label_files_keep_every_row_as_written(gpt2_tokenizer, tmp_path):
    """Users' files: a column row 0 lacks is not dropped (the row is named), a wrong-typed cell is named with its row,
    field and file, CSV cells stay the text written ("42", "NA", " 4" are samples), and an implicit prompt is cut at
    a word boundary so that query + sample tokenize as the joined text does (what trl.RewardTrainer reads)."""
    rows = [{"chosen": "It rained. Sad", "rejected": "It rained. Fun"},  # implicit, then explicit rows
            {"prompt": "Q1", "chosen": " a", "rejected": " b"}]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(LabelValidationError, match=r"row 0, field 'prompt': must be text or a list of messages, got "
                                                   r"nothing"):
        load_label_file(mixed, k=2)
    typed = tmp_path / "typed.jsonl"
    typed.write_text("".join(json.dumps(r) + "\n" for r in [rows[1], {**rows[1], "chosen": 5}]))
    with pytest.raises(LabelValidationError, match=rf"row 1, field 'chosen': must be text .* got int \(in {typed}\)"):
        load_label_file(typed, k=2)
    csv_file = tmp_path / "numbers.csv"
    csv_file.write_text('query,sample0,sample1,best\nQ,42,NA,1.0\n"multi\nline", 4,None,0\n')  # 1.0 as JSON's 1.0
    assert load_label_file(csv_file, k=2).to_list() == [
        {"query": "Q", "samples": ["42", "NA"], "best": 1}, {"query": "multi\nline", "samples": [" 4", "None"], "best": 0}]
    implicit = tmp_path / "implicit.jsonl"
    pairs = [("I like apples", "I like apricots"), ("Good", "Good day"), ("Yes it is ", "No it is ")]
    implicit.write_text("".join(json.dumps({"chosen": c, "rejected": r}) + "\n" for c, r in pairs))
    got = load_label_file(implicit, k=2).to_list()
    assert [(g["query"], g["samples"]) for g in got] == [
        ("I like", [" apples", " apricots"]), ("", ["Good", "Good day"]), ("", ["Yes it is ", "No it is "])]
    for g in got:  # TRL's extract_prompt gave 'I like ap' + 'ples' (Ġap, ples against Ġapples), and for the last
        for sample in g["samples"]:  # row an empty rejected sample
            separate = gpt2_tokenizer(g["query"])["input_ids"] + gpt2_tokenizer(sample, add_special_tokens=False)["input_ids"]
            assert separate == gpt2_tokenizer(g["query"] + sample)["input_ids"]


def test_an_empty_pairwise_sample_and_a_pairwise_row_given_as_k_way_are_named():
    """An empty chosen is refused before TRL's EOS is appended (with it the sample was not empty and trained); a
    chosen/rejected row where K-way rows are read says how to convert it."""
    from hf_prefs.labels.schema import merge_flat_samples, pairwise_label

    with pytest.raises(LabelValidationError, match=r"row 3, field 'chosen': is empty"):
        pairwise_label({"prompt": "Q", "chosen": "  ", "rejected": " no"}, 3, eos_token="<|endoftext|>")
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples': .*TRL's pairwise chosen/rejected rows: "
                                                   r"hf_prefs.labels.from_pairwise"):
        merge_flat_samples(0, {"prompt": "Q", "chosen": " a", "rejected": " b"})


def test_k_way_files_keep_columns_row_0_lacks_and_name_a_mixed_column_and_a_bad_limit(tmp_path):
    """A K-way label file: an optional column the first row lacks is kept (null there; Dataset.from_list took row
    0's columns only), a column Arrow cannot type (ints, then a str) is named with the row that breaks it (was a bare
    ArrowInvalid), and ``limit`` (the recipes' label_limit) below 1 is refused naming the field (0 was an
    IndexError, -1 dropped the last row)."""
    rows = [{"query": f"q{i}", "samples": ["a", "b", "c"], "best": i % 3, **({"labeler": "ann"} if i else {})}
            for i in range(4)]
    path = tmp_path / "kway.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = load_label_file(path, k=3)
    assert got.column_names == ["query", "samples", "best", "labeler"] and got["labeler"] == [None, "ann", "ann", "ann"]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("".join(json.dumps({**r, "query_id": i if i < 2 else f"q{i}"}) + "\n" for i, r in enumerate(rows)))
    with pytest.raises(LabelValidationError, match=r"row 2, field 'query_id': .*mixed.jsonl: a str where the rows "
                                                   r"before hold other types \(ArrowInvalid"):
        load_label_file(mixed)
    for bad in (0, -1, 1.5):
        with pytest.raises(LabelValidationError, match=rf"field 'label_limit': label_limit must be a whole number of "
                                                       rf"rows >= 1 \(or null for all\), got {bad}"):
            load_label_file(path, limit=bad)
    assert len(load_label_file(path, limit=3)) == 3


def test_label_files_as_users_write_them_are_read_or_named(tmp_path):
    """A DatasetDict saved to disk (its train split) and a folder of data files are label files; a row with both
    ``samples`` and ``sample0..`` (which may disagree), a best-of-K row whose query is a chat or a list of texts (taken
    for the paper's token ids: a TypeError deep in decoding), and a file without a ``best`` column are named."""
    from datasets import DatasetDict

    rows = [{"query": "q1", "samples": ["a", "b"], "best": 1}, {"query": "q2", "samples": ["c", "d"], "best": 0}]
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:1])}).save_to_disk(tmp_path / "dict")
    (tmp_path / "files").mkdir()
    Dataset.from_list(rows).to_parquet(tmp_path / "files" / "train.parquet")
    for folder in ("dict", "files"):
        assert load_label_file(tmp_path / folder).to_list() == rows
    both = tmp_path / "both.jsonl"
    both.write_text(json.dumps({**rows[0], "sample0": "x", "sample1": "y"}) + "\n")
    with pytest.raises(LabelValidationError, match=r"row 0, field 'samples': has both 'samples' and \['sample0', 'sample1'\]"):
        load_label_file(both)
    with pytest.raises(LabelValidationError, match=r"has both a 'samples' column and \['sample0', 'sample1'\]"):
        validate_labels(Dataset.from_list([{**rows[0], "sample0": "x", "sample1": "y"}]))
    mixed = tmp_path / "mixed.jsonl"  # both layouts, the other's cells null (a concatenated table): one 'samples'
    mixed.write_text(json.dumps({**rows[0], "sample0": None, "sample1": None}) + "\n"
                     + json.dumps({"query": "q2", "samples": None, "sample0": "c", "sample1": "d", "best": 0}) + "\n")
    loaded = load_label_file(mixed)
    assert loaded.to_list() == rows and validate_labels(loaded).to_list() == rows  # validate_labels refused it
    for query in ([{"role": "user", "content": "Hi"}], ["one", "two"]):
        listed = tmp_path / "listed.jsonl"
        listed.write_text(json.dumps({"query": query, "samples": ["a", "b"], "best": 0}) + "\n")
        with pytest.raises(LabelValidationError, match=r"row 0, field 'query': query must be a string, got list"):
            load_label_file(listed)
    choice = tmp_path / "choice.jsonl"
    choice.write_text(json.dumps({"query": "q", "samples": ["a", "b"], "choice": 1}) + "\n")
    with pytest.raises(LabelValidationError, match=r"has no 'best' column .* its columns: \['query', 'samples', 'choice'\]"):
        load_label_file(choice)


def test_a_json_label_file_of_one_object_per_line_is_read_as_datasets_writes_it(tmp_path):
    """``Dataset.to_json("labels.json")`` writes one object per line under a ``.json`` name, which datasets reads back;
    it stopped at ``json.load``'s "Extra data: line 2 column 1". A list of objects still reads; a broken file is named."""
    rows = [{"query": "q1", "samples": ["a", "b"], "best": 1}, {"query": "q2", "samples": ["c", "d"], "best": 0}]
    Dataset.from_list(rows).to_json(tmp_path / "lines.json")
    assert len((tmp_path / "lines.json").read_text().splitlines()) == 2
    assert load_label_file(tmp_path / "lines.json").to_list() == rows
    (tmp_path / "list.json").write_text(json.dumps(rows))
    assert load_label_file(tmp_path / "list.json").to_list() == rows
    (tmp_path / "broken.json").write_text(json.dumps(rows[0]) + "\n{\"query\": \n")
    with pytest.raises(LabelValidationError, match=r"broken.json:2 is not valid JSON"):
        load_label_file(tmp_path / "broken.json")
    (tmp_path / "bad.json").write_text("[{\"query\": 'q'}]")
    with pytest.raises(LabelValidationError, match=r"bad.json is not valid JSON \(Expecting value: line 1 column 12"):
        load_label_file(tmp_path / "bad.json")


def test_csv_and_json_label_files_as_spreadsheets_and_editors_write_them_are_read_or_named(tmp_path):
    """A CSV row with more fields than the header was read shifted (pandas took the extra first field for the row's
    index: the query lost, a sample read as the query); a trailing comma was read as a blank ``best``; a header naming
    a column twice moved a sample out of ``samples`` (pandas renamed it ``sample1.1``). A byte-order mark (Notepad,
    Excel) and a one-label ``Dataset.to_json`` file (one object) were refused; pandas' by-column JSON is named."""
    rows = [{"query": "q1", "samples": ["a", "b"], "best": 1}, {"query": "q2", "samples": ["c", "d"], "best": 0}]
    cases = {
        "shifted.csv": ("query,sample0,sample1,best\nWhat is 2+2?,4,5,four,1\n", r"shifted.csv:2 has 5 fields where "
                        r"the header has 4 \(query, sample0, sample1, best\): a comma inside a cell needs", 0),
        "trailing.csv": ("query,sample0,sample1,best\nq1,a,b,1\nq2,c,d,0,\n", r"trailing.csv:3 has 5 fields", 1),
        "short.csv": ("query,sample0,sample1,best\nq1,a,b\n", r"short.csv:2 has 3 fields", 0),
        "twice.csv": ("query,sample0,sample1,sample1,best\nq1,a,b,c,1\n", r"the header names \['sample1'\] more than once",
                      None),
    }
    for name, (text, message, row) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(LabelValidationError, match=message) as info:
            load_label_file(tmp_path / name)
        assert info.value.row == row, name
    quoted = tmp_path / "quoted.csv"  # a comma inside a quoted cell, a blank line, text that looks like numbers or NA
    quoted.write_text('query,sample0,sample1,best\n"Well, then",42,NA,1\n\nq2," c, d",7,0\n')
    assert load_label_file(quoted).to_list() == [{"query": "Well, then", "samples": ["42", "NA"], "best": 1},
                                                 {"query": "q2", "samples": [" c, d", "7"], "best": 0}]
    export = tmp_path / "export.csv"  # a spreadsheet's export: blank lines first, unnamed empty columns, a long cell
    long = "word " * 40_000  # 200,000 characters: over the csv module's default limit of 131,072 per cell
    export.write_text(f"\n\nquery,sample0,sample1,best,,\nq1,a,{long},1,,\n")
    assert [(r["query"], r["samples"][0], len(r["samples"][1]), r["best"]) for r in load_label_file(export).to_list()] \
        == [("q1", "a", len(long), 1)]
    bom = b"\xef\xbb\xbf"
    (tmp_path / "bom.jsonl").write_bytes(bom + "".join(json.dumps(r) + "\n" for r in rows).encode())
    (tmp_path / "bom.json").write_bytes(bom + json.dumps(rows).encode())
    (tmp_path / "bom.csv").write_bytes(bom + b"query,sample0,sample1,best\nq1,a,b,1\nq2,c,d,0\n")
    for name in ("bom.jsonl", "bom.json", "bom.csv"):
        assert load_label_file(tmp_path / name).to_list() == rows, name
    folder = tmp_path / "folder"  # a folder of data files reads as its files alone do (datasets typed "42" as an int
    folder.mkdir()  # and "NA" as missing; a JSONL "best": "0" after integer rows was cast silently)
    (folder / "train.csv").write_text('query,sample0,sample1,best\n"Well, then",42,NA,1\n')
    (folder / "test.csv").write_text("query,sample0,sample1,best\nheld,out,row,0\n")  # another split: not read
    assert load_label_file(folder).to_list() == [{"query": "Well, then", "samples": ["42", "NA"], "best": 1}]
    (folder / "train.csv").unlink()
    (folder / "train.jsonl").write_text(json.dumps(rows[0]) + "\n" + json.dumps({**rows[1], "best": "0"}) + "\n")
    with pytest.raises(LabelValidationError, match=r"row 1, field 'best': best must be an integer, got '0'"):
        load_label_file(folder)
    carded = tmp_path / "carded"  # a dataset card's configs name the train files: datasets reads the folder by them
    (carded / "mine").mkdir(parents=True)
    (carded / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                      "    path: mine/*.jsonl\n---\n")
    (carded / "mine" / "part.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (carded / "train.jsonl").write_text(json.dumps(rows[1]) + "\n")  # the default pattern's file: not the card's
    assert load_label_file(carded).to_list() == rows[:1]
    Dataset.from_list(rows[:1]).to_json(tmp_path / "one.json")  # one line: '{"query":"q1",...}'
    assert load_label_file(tmp_path / "one.json").to_list() == rows[:1]
    (tmp_path / "columns.json").write_text(json.dumps({"query": {"0": "q1"}, "samples": {"0": ["a", "b"]}, "best": {"0": 1}}))
    with pytest.raises(LabelValidationError, match=r"holds its rows by column .* to_json\(orient='records', lines=True\)"):
        load_label_file(tmp_path / "columns.json")


def test_a_bad_row_of_a_json_lines_label_file_names_its_line(tmp_path):
    """Rows count records; a JSON-lines file with blank lines has them on other lines: the error says both (it said
    "row 2" for the record on line 5)."""
    good = json.dumps({"query": "q", "samples": ["a", "b"], "best": 1})
    path = tmp_path / "labels.jsonl"
    path.write_text(f"{good}\n\n{good}\n\n{json.dumps({'query': 'q', 'samples': ['a', 'b'], 'best': 2})}\n")
    with pytest.raises(LabelValidationError) as info:
        load_label_file(path)
    assert str(info.value).startswith("line 5: row 2, field 'best': best=2 is out of range")
    assert (info.value.row, info.value.field) == (2, "best")
    csv = tmp_path / "labels.csv"
    csv.write_text("query,sample0,sample1,best\nq,a,b,0\nq,a,,1\n")
    with pytest.raises(LabelValidationError, match=r"^row 1, field 'samples\[1\]': sample 1 is empty"):
        load_label_file(csv)
