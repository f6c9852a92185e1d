"""The quickstart's settings live in its recipe and make a valid run config."""

from tunelab.config.loader import config_from_dict
from tunelab.config.schema import DEFAULT_MODEL
from tunelab.data.tasks import ticket_routing as task
from tunelab.recipes.quickstart import RECOMMENDED, quickstart_config


def test_recommended_settings_are_the_measured_ones():
    # The numbers of the verified `make quickstart` run (README); a change needs a new run.
    assert RECOMMENDED == {
        "n_train": 640, "n_test": 120, "epochs": 1, "lr": 1e-3, "lr_scheduler": "cosine",
        "warmup_steps": 16, "batch_size": 4, "lora_r": 16, "lora_alpha": 32,
        "max_new_tokens": 8, "seed": 0,
    }
    assert (RECOMMENDED["n_train"], RECOMMENDED["n_test"]) == (task.TRAIN_ROWS, task.TEST_ROWS)


def test_quickstart_config_is_valid_and_carries_the_settings(tmp_path):
    cfg = config_from_dict(quickstart_config(tmp_path, DEFAULT_MODEL, RECOMMENDED))
    assert cfg.model.name == DEFAULT_MODEL
    assert (cfg.train.learning_rate, cfg.train.batch_size, cfg.train.epochs) == (1e-3, 4, 1)
    assert (cfg.train.warmup_steps, cfg.train.lr_scheduler, cfg.train.seed) == (16, "cosine", 0)
    assert (cfg.lora.r, cfg.lora.alpha) == (16, 32)
