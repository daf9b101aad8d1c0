"""The news-headline task's data: the shipped headlines, and stories that never restate them."""

from __future__ import annotations

import pytest

from ditkit.errors import ConfigError, DataError
from ditkit.tasks.news import (
    Headline,
    load_headlines,
    load_narrators,
    longest_content_run,
    restates,
    template_stories,
)

H = Headline(
    "Lunar rover finds water ice near the crater rim at dawn",
    "space exploration",
    ("lunar rover", "water ice", "crater rim"),
)


def test_longest_content_run_skips_stop_words():
    assert longest_content_run(H.headline) == ("lunar", "rover", "finds", "water", "ice")
    assert longest_content_run("The end of the day") == ("end",)
    assert longest_content_run("of the and") == ()


def test_restates_is_word_for_word_and_case_and_punctuation_blind():
    assert restates("Big news: a LUNAR rover, finds water-ice!", H.headline)
    assert not restates("A lunar rover found water ice today.", H.headline)  # "found" != "finds"
    assert not restates("Nothing to see.", "of the and")


def test_template_stories_never_restate_and_vary_the_narrator():
    narrators = [f"narrator number {i}" for i in range(10)]
    stories = template_stories(H, 8, seed=3, narrators=narrators)
    assert len(stories) == len(set(stories)) == 8
    assert not any(restates(s, H.headline) for s in stories)
    told_by = [next(n for n in narrators if n in s) for s in stories]
    assert len(set(told_by)) == 8
    assert stories == template_stories(H, 8, seed=3, narrators=narrators)  # deterministic


def test_shipped_headlines_and_narrators():
    heads = load_headlines()
    assert len(heads) >= 500 and len({h.theme for h in heads}) >= 30
    assert all(2 <= len(h.keywords) <= 4 for h in heads)
    narrators = load_narrators()
    assert len(narrators) >= 40
    for i, h in enumerate(heads):  # every shipped headline gets stories that do not restate it
        for story in template_stories(h, 3, seed=i, narrators=narrators):
            assert not restates(story, h.headline), (h.headline, story)


def test_headline_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "heads.csv"
    path.write_text("headline,theme,keywords\nA b c,x,y;z\na B c,x,y\n")
    with pytest.raises(DataError, match=r"line 3: headline 'a B c' repeats line 2"):
        load_headlines(path)
    path.write_text("title,theme\nA,b\n")
    with pytest.raises(DataError, match="lacks the column"):
        load_headlines(path)


def test_the_generic_trainer_trains_news_diffs(tiny_model_dir):
    from ditkit import lora
    from ditkit.config import DiffConfig
    from ditkit.models import load_model
    from ditkit.tasks.news import TASK, NewsJob
    from ditkit.train_diffs import train_group

    model, tok = load_model(str(tiny_model_dir))
    for p in model.parameters():
        p.requires_grad_(False)
    lora.inject(model)
    narrators = [f"narrator {i}" for i in range(6)]
    jobs = [NewsJob(f"n{i}", H, i, template_stories(H, 6, i, narrators)) for i in range(2)]
    # rank 8, one row kind, one weight; 4 steps x 3 rows = 12: every story reaches a step twice
    cfg = DiffConfig(rank=8, steps=4, rows_per_step=3, weights=[1.0], lr=0.05, max_answer_tokens=24)
    diffs, history = train_group(model, tok, jobs, {}, cfg, task=TASK)
    assert list(history) == ["story"] and len(history["story"]) == 4
    assert history["story"][-1] < history["story"][0]
    assert all(d.rank == 8 for d in diffs)
    assert TASK.diff_meta(jobs[0])["label"] == H.headline
    with pytest.raises(ConfigError, match=r"diffs\.weights has 3 value"):
        train_group(model, tok, jobs, {}, DiffConfig(rank=8, steps=1), task=TASK)
