"""The whole improvement loop on a tiny model, through the real commands, in one test:

served traffic (an experiment on a real `tunelab serve`) -> feedback (``POST
/v1/feedback`` with corrections) -> `tunelab feedback export` (the gate passes) ->
`tunelab retrain` (continues the served run's adapter; judged against it on the held-out
set) -> promoted as a canary variant of the experiment -> a restarted server routes new
users to the canary at its weight while users assigned before keep their variant.
"""

from __future__ import annotations

import json
import random

import pytest
import yaml
from serve_server import start_server

from tunelab.cli import exits
from tunelab.cli.main import main
from tunelab.config.loader import config_from_dict
from tunelab.config.serve import ExperimentSettings
from tunelab.serve.experiments import choose
from tunelab.train.run import run_finetune

pytestmark = pytest.mark.slow

TEAMS = {"invoice": "billing", "refund": "billing", "password": "account", "login": "account",
         "parcel": "shipping", "delivery": "shipping", "crash": "technical", "error": "technical"}
WHO = ["Ana", "Bo", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun", "Kai", "Lea"]
WHAT = ["since yesterday", "after the update", "on my phone", "again this week", "twice today",
        "for my team", "on the website", "this morning"]


def ticket(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(sorted(TEAMS))
    text = (f"{rng.choice(WHO)} writes {rng.randint(10, 9999)}: my {topic} problem "
            f"happens {rng.choice(WHAT)}, {rng.choice(WHAT)}")
    return text, TEAMS[topic]


def write_rows(path, n: int, seed: int):
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            text, team = ticket(rng)
            f.write(json.dumps({"messages": [{"role": "user", "content": text},
                                             {"role": "assistant", "content": team}]}) + "\n")
    return path


def test_traffic_feedback_export_retrain_gate_promote(tmp_path, lively_model_dir, capsys):
    runs = tmp_path / "runs"
    run_finetune(config_from_dict({
        "model": {"name": str(lively_model_dir)},
        "data": {"train": str(write_rows(tmp_path / "train.jsonl", 32, seed=1)),
                 "validation": str(write_rows(tmp_path / "heldout.jsonl", 16, seed=2)),
                 "max_length": 64},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"learning_rate": 2e-2, "batch_size": 4, "max_steps": 8, "save_every": 0,
                  "keep_best": False, "num_threads": 1},
        "output": {"dir": str(runs), "name": "support-v1"}}))
    serve = {"models": ["support-v1"], "runs_dir": str(runs),
             "aliases": {"plain": str(lively_model_dir)},
             "experiments": [{"name": "support", "variants": [
                 {"name": "v1", "model": "support-v1", "weight": 1},
                 {"name": "plain", "model": "plain", "weight": 1}]}]}

    # 1. traffic: 24 users ask two tickets each; every answer of the run gets a correction
    server = start_server(tmp_path / "srv", [], serve)
    client = server.client()
    rng = random.Random(3)
    users = [f"customer-{i:02d}" for i in range(24)]
    assigned, corrected = {}, 0
    try:
        for user in users:
            for _ in range(2):
                text, team = ticket(rng)
                raw = client.chat.completions.with_raw_response.create(
                    model="support", user=user, max_tokens=4, temperature=0,
                    messages=[{"role": "user", "content": text}])
                answer = raw.parse()
                assigned[user] = raw.headers["X-Tunelab-Variant"]
                said = answer.choices[0].message.content
                body = {"response_id": answer.id, "user": user,
                        "rating": "up" if said.strip() == team else "down"}
                if answer.model == "support-v1" and said.strip() != team:
                    body["correction"] = team
                    corrected += 1
                reply = client.post("/feedback", body=body, cast_to=object)
                assert reply["object"] == "feedback"
    finally:
        assert server.stop() == 0, server.output()
    assert corrected >= 10, corrected  # the gate wants at least 10 rows

    # 2. export: the corrections become chat rows; the gate checks them against held-out data
    out = tmp_path / "fb"
    code = main(["feedback", "export", "--out", str(out), "--db", server.db_url,
                 "--model", "support-v1", "--runs-dir", str(runs), "--include-unreviewed",
                 "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == exits.OK, stdout + stderr
    summary = json.loads(stdout)
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    assert len(rows) == corrected and summary["gate"]["ok"]
    assert all(r["messages"][-1]["role"] == "assistant" and r["messages"][-1]["content"]
               in set(TEAMS.values()) for r in rows)

    # 3. retrain from the served run's adapter, judged on the held-out set, promoted at 0.1
    code = main(["retrain", "support-v1", "--runs-dir", str(runs), "--data",
                 str(out / "sft.jsonl"), "--steps", "4", "--out", "support-v2", "--no-progress",
                 "--promote", "support", "--weight", "0.1", "--config",
                 str(tmp_path / "srv" / "serve.yaml"), "--json"])
    stdout, stderr = capsys.readouterr()
    assert code == exits.OK, stdout + stderr
    result = json.loads((runs / "support-v2" / "retrain.json").read_text())
    assert result["promotable"] and not result["worse"]
    promoted = yaml.safe_load((tmp_path / "srv" / "serve.yaml").read_text())
    variants = {v["name"]: v for v in promoted["experiments"][0]["variants"]}
    assert variants["support-v2"]["weight"] == pytest.approx(0.1)
    assert variants["v1"]["weight"] == pytest.approx(0.45)

    # 4. the restarted server: old users keep their variants, new users meet the canary
    server = start_server(tmp_path / "srv", [], promoted, db_url=server.db_url)
    client = server.client()
    experiment = ExperimentSettings.model_validate(promoted["experiments"][0])
    newcomers = [f"newcomer-{i:03d}" for i in range(200)]
    canary = [u for u in newcomers if choose(experiment, u).name == "support-v2"]
    assert 8 <= len(canary) <= 35  # about 10% of 200
    try:
        for user in users[:6] + canary[:3]:
            raw = client.chat.completions.with_raw_response.create(
                model="support", user=user, max_tokens=2, temperature=0,
                messages=[{"role": "user", "content": "my parcel is late"}])
            expect = assigned.get(user, "support-v2")
            assert raw.headers["X-Tunelab-Variant"] == expect
            if expect == "support-v2":
                assert raw.parse().model == "support-v2"
    finally:
        assert server.stop() == 0, server.output()
