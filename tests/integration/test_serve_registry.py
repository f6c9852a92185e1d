"""Serving several runs: adapters on one base share it, each answers as it does alone."""

import json

import pytest
import yaml

from tunelab.cli.main import main
from tunelab.errors import StoreError, UsageError
from tunelab.models.runs import load_for_inference
from tunelab.serve.batching import BASE_ADAPTER, EngineSettings, SamplingParams
from tunelab.serve.engine import GenerationEngine
from tunelab.serve.registry import load_registry

PROMPTS = ["I was charged twice", "the app crashes", "my parcel is late", "reset my password"]
SETTINGS = EngineSettings(max_batch_size=8, max_queue=16, prefill_tokens=4096)


def _train(tmp_path, model_dir, name, answers, seed):
    rows = [{"messages": [{"role": "user", "content": f"{p} {i}"},
                          {"role": "assistant", "content": answers[i % 2]}]}
            for i, p in enumerate(PROMPTS * 4)]
    data = tmp_path / f"{name}.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "model": {"name": str(model_dir)}, "data": {"train": str(data)},
        "lora": {"r": 4, "alpha": 8},
        "train": {"learning_rate": 0.2, "batch_size": 4, "max_steps": 16, "seed": seed},
        "output": {"dir": str(tmp_path / "runs"), "name": name}}))
    assert main(["train", str(cfg), "--no-progress"]) == 0
    return tmp_path / "runs" / name


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, lively_model_dir):
    tmp = tmp_path_factory.mktemp("serve_runs")
    return (_train(tmp, lively_model_dir, "billing-run", ["billing", "refund"], 1),
            _train(tmp, lively_model_dir, "tech-run", ["technical", "crash"], 2))


def _alone(ref, convs):
    loaded = load_for_inference(str(ref))
    return GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template).complete_ids(
        [GenerationEngine(loaded.model, loaded.tokenizer, loaded.chat_template).render(c)
         for c in convs], max_new_tokens=6)


def test_two_adapters_share_a_base_and_answer_as_alone_in_one_mixed_batch(two_runs, lively_model_dir):
    run_a, run_b = two_runs
    fp = json.loads((run_a / "inputs.json").read_text())["chat_template_fingerprint"]
    assert isinstance(fp, str) and len(fp) == 16
    reg = load_registry([str(run_a), str(run_b), str(lively_model_dir)], {"support": str(run_b)},
                        "runs", SETTINGS)
    try:
        assert set(reg.models) == {"billing-run", "tech-run", str(lively_model_dir), "support"}
        assert len(reg.engines) == 1  # one base, loaded once, three adapters beside it
        engine = reg.engines[0]
        assert reg.get(str(lively_model_dir)).adapter == BASE_ADAPTER
        convs = [[{"role": "user", "content": p}] for p in PROMPTS]
        expected = {"billing-run": _alone(run_a, convs), "tech-run": _alone(run_b, convs),
                    str(lively_model_dir): _alone(lively_model_dir, convs)}
        assert expected["billing-run"] != expected["tech-run"] != expected[str(lively_model_dir)]
        order = [(name, i) for i in range(len(PROMPTS)) for name in expected]
        seqs = [engine.scheduler.submit(reg.get(n).render(convs[i]), SamplingParams(6),
                                        reg.get(n).adapter) for n, i in order]
        while engine.scheduler.has_work():
            engine.scheduler.step()
        for (name, i), seq in zip(order, seqs, strict=True):
            got = seq.output_ids + ([seq.stop_id] if seq.stop_id is not None else [])
            assert got == expected[name][i], (name, i)
    finally:
        reg.close()


def test_a_run_whose_template_drifted_is_refused(two_runs, tmp_path):
    import shutil

    run = tmp_path / "drifted"
    shutil.copytree(two_runs[0], run)
    cfg_path = run / "tokenizer" / "tokenizer_config.json"
    tpl = run / "tokenizer" / "chat_template.jinja"
    if tpl.is_file():
        tpl.write_text(tpl.read_text().replace("<|im_start|>", "<|im_start|> "))
    else:
        cfg = json.loads(cfg_path.read_text())
        cfg["chat_template"] = cfg["chat_template"].replace("<|im_start|>", "<|im_start|> ")
        cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(StoreError) as e:
        load_registry([str(run)], {}, "runs", SETTINGS)
    assert "fingerprint" in e.value.message and "drift" in e.value.message


def test_two_references_cannot_claim_one_name(two_runs):
    with pytest.raises(UsageError):
        load_registry([str(two_runs[0])], {"billing-run": str(two_runs[1])}, "runs", SETTINGS)
    with pytest.raises(UsageError):
        load_registry([], {}, "runs", SETTINGS)


def test_a_served_name_longer_than_the_request_log_keeps_is_refused_before_loading(tmp_path):
    from tunelab.db import NAME_LENGTH

    long = "m" * (NAME_LENGTH + 1)
    with pytest.raises(UsageError) as e:
        load_registry([long], {}, str(tmp_path), SETTINGS)
    assert str(NAME_LENGTH) in e.value.message and "alias" in e.value.hint
    with pytest.raises(UsageError, match=str(NAME_LENGTH)):
        load_registry([], {long: "smollm2-135m-instruct"}, str(tmp_path), SETTINGS)
