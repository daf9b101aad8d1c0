"""A task's own keys live in [task_options]: checked against the task, old layouts still load."""

from __future__ import annotations

import json
import logging
import re

import pytest

from ditkit.config import RunConfig, from_dict, load_config
from ditkit.errors import ConfigError
from ditkit.rundir import Run, resolve_task

# A config.json as ditkit wrote it before [task_options]: the task's keys in the shared sections.
OLD_LAYOUT = {
    "name": "old",
    "data": {
        "topics_file": None,
        "questions_file": None,
        "headlines_file": None,
        "narrators_file": None,
        "stories_per_diff": 100,
        "test_trigger": "zwsp_start",
        "n_train": 4,
        "n_test": 2,
        "seed": 0,
    },
    "diffs": {"wrong_pool": 8, "wrong_codes": "pool", "steps": 3},
    "eval": {"gate_questions": 5, "gate_max_new_tokens": 32, "twenty_q_count": 20},
}


def test_an_old_layout_loads_with_a_deprecation_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="ditkit.config"):
        cfg = from_dict(OLD_LAYOUT, "old.json")
    # Keys left at their old defaults are dropped; the others move.
    assert cfg.task_options == {"test_trigger": "zwsp_start", "gate_questions": 5}
    assert "data.test_trigger, eval.gate_questions now belong to [task_options]" in caplog.text
    resolve_task(cfg)
    assert cfg.task_options["test_trigger"] == "zwsp_start" and cfg.task_options["wrong_pool"] == 8


def test_an_old_set_key_moves_and_a_new_one_is_checked_against_the_task(caplog):
    with caplog.at_level(logging.WARNING, logger="ditkit.config"):
        cfg = load_config("quickstart", ["eval.gate_questions=7"])
    assert "eval.gate_questions is now task_options.gate_questions" in caplog.text
    assert resolve_task(cfg).task_options["gate_questions"] == 7
    cfg = load_config("quickstart", ["task_options.gate_questoins=2"])
    with pytest.raises(ConfigError, match=re.escape("did you mean 'task_options.gate_questions'")):
        resolve_task(cfg)
    with pytest.raises(
        ConfigError, match=re.escape("task_options.gate_questions = 'x' is not an integer")
    ):
        resolve_task(load_config("quickstart", ['task_options.gate_questions="x"']))
    with pytest.raises(
        ConfigError, match="test_trigger: one of sep, word, zwsp_start, zwsp_random"
    ):
        resolve_task(load_config("quickstart", ['task_options.test_trigger="later"']))
    with pytest.raises(ConfigError, match="task_options = 3 is not a table"):
        load_config("quickstart", ["task_options=3", "task_options.x=1"])


def test_a_news_key_is_refused_for_hidden_topics():
    cfg = from_dict({"task_options": {"stories_per_diff": 12}})
    with pytest.raises(ConfigError, match=re.escape("unknown key task_options.stories_per_diff")):
        resolve_task(cfg)
    news = {"task": "news", "diffs": {"weights": [1.0]}, "task_options": {"stories_per_diff": 12}}
    news = resolve_task(from_dict(news))
    assert news.task_options["stories_per_diff"] == 12 and news.task_options["twenty_q_count"] == 20


def test_an_old_run_directory_accepts_the_new_layout_and_free_options(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stored = resolve_task(RunConfig()).to_dict()  # as a run writes it, less the new table
    del stored["task_options"]
    for key, table in OLD_LAYOUT.items():
        stored[key] = {**stored[key], **table} if isinstance(table, dict) else table
    (out / "config.json").write_text(json.dumps(stored))
    del_keys = {k: v for k, v in OLD_LAYOUT.items() if k != "eval"}
    same = from_dict({**del_keys, "task_options": {"test_trigger": "zwsp_start"}})
    Run(same, out).claim(write=False)  # the same recipe, written the new way
    # Gating questions are read only at evaluation: they may change on a rerun.
    free = from_dict(
        {**del_keys, "task_options": {"test_trigger": "zwsp_start", "gate_questions": 9}}
    )
    Run(free, out).claim(write=False)
    changed = from_dict({**del_keys, "task_options": {"test_trigger": "sep"}})
    with pytest.raises(
        ConfigError, match=re.escape("task_options.test_trigger: 'zwsp_start' -> 'sep'")
    ):
        Run(changed, out).claim(write=False)
