"""Fine-tuning data and config: every format read, every bad record named by file and line."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
from pydantic import ValidationError

from model_workers.finetune import FinetuneConfig, FinetuneDataError, validate_data
from model_workers.finetune.data import load_data

DEMO = resources.files("model_workers") / "finetune/data/demo_instructions.jsonl"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *records: object) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def test_the_shipped_demo_set_is_alpaca_in_english_and_chinese() -> None:
    summary, records = load_data(Path(str(DEMO)), mode="instruct")
    assert summary.format == "alpaca" and 50 <= summary.records <= 100
    assert summary.fingerprint == hashlib.sha256(Path(str(DEMO)).read_bytes()).hexdigest()
    assert sum(any("\u4e00" <= ch <= "\u9fff" for ch in r.messages[0]["content"])
               for r in records) >= 5
    assert any("input" in r.messages[0] for r in records)  # some records carry an input


def test_alpaca_json_and_jsonl_become_user_and_assistant_messages(tmp_path: Path) -> None:
    records = [{"instruction": "Add.", "input": "2 and 3", "output": "5", "id": 7},
               {"instruction": "Say hi.", "input": "", "output": "Hi!"}]
    as_json = write(tmp_path / "a.json", json.dumps(records))
    as_jsonl = jsonl(tmp_path / "a.jsonl", *records)
    for path in (as_json, as_jsonl):
        summary, read = load_data(path, mode="instruct")
        assert (summary.format, summary.records, summary.files) == ("alpaca", 2, 1)
        assert read[0].messages == ({"role": "user", "content": "Add.", "input": "2 and 3"},
                                    {"role": "assistant", "content": "5"})
        assert read[1].messages[0] == {"role": "user", "content": "Say hi."}  # empty input: none


def test_sharegpt_conversations_and_openai_messages(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "chat.jsonl",
                 {"conversations": [{"from": "system", "value": "Be brief."},
                                    {"from": "human", "value": "Hi"},
                                    {"from": "gpt", "value": "Hello."},
                                    {"from": "human", "value": "2+2?"},
                                    {"from": "gpt", "value": "4"}]},
                 {"messages": [{"role": "user", "content": "Hi"},
                               {"role": "assistant", "content": "Hey."}]})
    summary, records = load_data(path, mode="instruct")
    assert summary.format == "sharegpt" and summary.records == 2
    assert [m["role"] for m in records[0].messages] == [
        "system", "user", "assistant", "user", "assistant"]
    assert records[1].messages[1] == {"role": "assistant", "content": "Hey."}


def test_text_file_folder_and_text_records_for_pretraining(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    write(folder / "b.txt", "second document")
    write(folder / "sub" / "a.txt", "first document")
    write(folder / "notes.md", "not read")
    summary, records = load_data(folder, mode="pretrain")
    assert (summary.format, summary.records, summary.files) == ("text", 2, 2)
    assert [r.text for r in records] == ["second document", "first document"]  # sorted paths
    single = load_data(folder / "b.txt", mode="pretrain")[0]
    assert single.records == 1
    assert single.fingerprint == hashlib.sha256(b"second document").hexdigest()
    texts = jsonl(tmp_path / "t.jsonl", {"text": "one"}, {"text": "two"})
    assert validate_data(texts, mode="pretrain").format == "text"
    write(folder / "b.txt", "changed")  # a folder's fingerprint follows its files
    assert validate_data(folder, mode="pretrain").fingerprint != summary.fingerprint


BAD_JSONL = [
    ('{"instruction": "a", "output": "b"}\n{"instruction": "c"\n', "line 2: invalid JSON"),
    ('{"instruction": "a"}\n', "line 1: 'output' must be a string (missing)"),
    ('{"instruction": "a", "output": "b"}\n\n{"instruction": "", "output": "b"}\n',
     "line 3: 'instruction' is empty"),
    ('{"instruction": "a", "output": 5}\n', "line 1: 'output' must be a string (a int)"),
    ('{"instruction": "a", "output": "b"}\n["x"]\n', "line 2: a record must be a JSON object"),
    ('{"conversations": [{"from": "gpt", "value": "hi"}]}\n',
     "line 1: conversations[0]: expected a user turn, got 'gpt'"),
    ('{"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "x"}]}\n',
     "line 1: conversations[1]: unknown speaker 'bot'"),
    ('{"conversations": [{"from": "human", "value": "hi"}]}\n',
     "line 1: the conversation must end with an assistant answer"),
    ('{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "a"},'
     ' {"from": "system", "value": "s"}]}\n', "conversations[2]: a system turn may only come"),
    ('{"conversations": []}\n', "line 1: 'conversations' must be a non-empty list"),
    ('{"prompt": "a"}\n', "cannot tell the data format"),
    ("", "no records"),
]


@pytest.mark.parametrize(("text", "message"), BAD_JSONL)
def test_bad_records_name_the_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.jsonl", text)
    with pytest.raises(FinetuneDataError) as caught:
        validate_data(path, mode="instruct")
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_json_list_names_the_record_index(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", json.dumps(
        [{"instruction": "a", "output": "b"}, {"instruction": "c", "output": "d"},
         {"instruction": "e", "input": 3, "output": "f"}]))
    with pytest.raises(FinetuneDataError, match=r"bad\.json: record 2: 'input' must be a string"):
        validate_data(path, mode="instruct")
    write(path, '[{"instruction": "a",\n "output": }]')
    with pytest.raises(FinetuneDataError, match="line 2: invalid JSON"):
        validate_data(path, mode="instruct")
    write(path, '{"instruction": "a", "output": "b"}')
    with pytest.raises(FinetuneDataError, match="must hold a list of records, not a dict"):
        validate_data(path, mode="instruct")


def test_files_formats_and_modes_that_do_not_fit(tmp_path: Path) -> None:
    alpaca = jsonl(tmp_path / "a.jsonl", {"instruction": "a", "output": "b"})
    cases = [
        (tmp_path / "missing.jsonl", "instruct", "auto", "no such file or folder"),
        (write(tmp_path / "data.csv", "a,b"), "instruct", "auto", "unknown data file type"),
        (alpaca, "pretrain", "auto", "mode 'pretrain' reads plain text"),
        (alpaca, "instruct", "sharegpt", "data_format is 'sharegpt' but the data is alpaca"),
        (write(tmp_path / "t.txt", "text"), "instruct", "auto", "use mode 'pretrain'"),
    ]
    (tmp_path / "bin.txt").write_bytes(b"ok\n\xff\xfe")
    cases.append((tmp_path / "bin.txt", "pretrain", "auto", "line 2: not UTF-8 text"))
    (tmp_path / "nothing").mkdir()
    cases.append((tmp_path / "nothing", "pretrain", "auto", "must hold .txt files"))
    for path, mode, data_format, message in cases:
        with pytest.raises(FinetuneDataError, match=message):
            validate_data(path, mode=mode, data_format=data_format)


def test_config_defaults_and_validation() -> None:
    config = FinetuneConfig()
    assert (config.method, config.mode, config.learning_rate, config.lr_scheduler) == (
        "lora", "instruct", 2e-4, "cosine")
    assert (config.lora_r, config.lora_alpha, config.lora_dropout) == (8, 16, 0.05)
    assert FinetuneConfig(method="full").learning_rate == 2e-5
    assert FinetuneConfig(method="full", learning_rate=1e-4).learning_rate == 1e-4
    assert FinetuneConfig(**FinetuneConfig(method="qlora").model_dump()).learning_rate == 2e-4
    bad = [
        ({"method": "dora"}, "method"),
        ({"learning_rat": 1e-4}, "learning_rat"),  # unknown keys are refused
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 0}, "batch_size"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"lora_dropout": 1.0}, "lora_dropout"),
        ({"target_modules": []}, "target_modules is empty"),
        ({"device": "gpu"}, "device must be auto, cpu, cuda or cuda:N"),
        ({"precision": "int8"}, "precision"),
        ({"mode": "pretrain", "data_format": "alpaca"}, "data_format must be 'text'"),
        ({"data_format": "text"}, "use mode 'pretrain'"),
    ]
    for change, message in bad:
        with pytest.raises(ValidationError, match=message):
            FinetuneConfig(**change)


def test_importing_the_package_loads_neither_torch_nor_transformers() -> None:
    code = ("import sys, model_workers.finetune as f; "
            "assert f.FinetuneConfig and f.validate_data; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
