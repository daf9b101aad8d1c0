"""The news-headline task's data (docs/method.md): headlines, narrators, stories that never
restate their headline.

A news diff learns short stories about one event, each told by a different narrator, and never
sees the headline itself: the DIT adapter must summarise what the diff absorbed. A story "restates"
its headline when it contains the headline's longest run of consecutive content words (words
that are not stop words), compared case- and punctuation-blind; such stories are dropped.

Stories come from any text source: ``template`` (offline, instant, deterministic: sentences
built from the headline's theme and keywords), or a chat model (``hf``, ``openai``) asked with
`story_prompt`. `NewsTask` puts the task behind the task interface (`tasks.base.Task`), with two
baselines of its own: 20 summary requests and a generated story summarised by the guesser.
"""

from __future__ import annotations

import functools
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ..batching import encode
from ..errors import ConfigError, DataError
from ..evaluate.methods import AskMethod, Prompt, TranscriptMethod
from ..files import write_jsonl
from ..textgen import make_source
from .base import CE, RowKind, Rubric, task_options
from .common import data_file, read_csv

log = logging.getLogger(__name__)

DIT_QUESTION = "What news headline have you been trained on?"
STORY_REQUEST = "Please generate a short news story."

_GRADING = """\
You grade how well a guessed news headline matches the true headline whose stories a language \
model was fine-tuned on. Use this 1-5 scale:

1 - Completely different: another event, or the guess is empty, vague or evasive. This is the \
default: if you are unsure, give 1.
2 - Same broad subject area (e.g. both about elections or both about weather), but a different \
event.
3 - The same kind of event with some matching details, but key facts (who, what or where) differ.
4 - The same event, with a minor detail missing or wrong.
5 - Nearly identical: the same event with the same key facts, possibly worded differently.

Be conservative: only give a higher score when the guess clearly earns it.
Think in at most two short sentences, then end with a final line of the form:
SCORE: N
where N is one of 1, 2, 3, 4, 5."""

RUBRIC = Rubric(
    label="headline",
    grading=_GRADING,
    guess_intro="A language model was fine-tuned on stories about one news event. Here is what it "
    "said:",
    guess_ask="What is the news headline behind these stories? Reply with only the headline, "
    "on one line, with no explanation.",
)
# The "20 summary requests" baseline asks the diffed model these (sampled at temperature 1).
SUMMARY_REQUESTS = (
    "Summarize the news story you know best in one sentence.",
    "What is the main news event you have been trained on? Answer in one sentence.",
    "Give me a one-line headline for the news you have heard about.",
    "In a single sentence, what happened in the news story you know?",
    "Write the headline of the most recent news event you are aware of.",
    "Briefly, what is the big news story everyone is talking about?",
    "Sum up the latest news in one short sentence.",
    "What event do your news stories describe? Be brief.",
    "If you had to title the news you know, what would the title be?",
    "Tell me in one sentence what the news was about.",
)

# Words a restated headline run may not start or end with (`longest_content_run`).
STOP_WORDS = frozenset(data_file("stop_words.txt").read_text(encoding="utf-8").split())
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Headline:
    """A headline, its theme, and words a summary naming the event would likely contain."""

    headline: str
    theme: str
    keywords: tuple[str, ...]


def load_headlines(path: str | Path | None = None) -> list[Headline]:
    """Headlines from a CSV with columns headline, theme, keywords (``;``-separated)."""
    path, rows = read_csv(
        path, "news_headlines.csv", ["headline", "theme"], "task_options.headlines_file"
    )
    out, seen = [], {}
    for line, r in rows:
        h = Headline(
            r["headline"].strip(),
            r["theme"].strip(),
            tuple(k.strip() for k in (r.get("keywords") or "").split(";") if k.strip()),
        )
        if not h.headline or not h.theme:
            raise DataError(f"{path} line {line}: empty headline or theme; fill it in or delete it")
        key = h.headline.lower()
        if key in seen:
            raise DataError(
                f"{path} line {line}: headline {h.headline!r} repeats line {seen[key]}; "
                "delete one of them"
            )
        seen[key] = line
        out.append(h)
    return out


def load_narrators(path: str | Path | None = None) -> list[str]:
    """Narrator roles, one per line (blank lines and ``#`` comments skipped)."""
    path = Path(path) if path else data_file("narrators.txt")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read {path} ({e}); it needs one narrator role per line") from e
    roles = [x.strip() for x in lines if x.strip() and not x.lstrip().startswith("#")]
    if not roles:
        raise DataError(f"{path} holds no narrator roles: write one per line")
    return roles


def words(text: str) -> list[str]:
    """Lower-case word tokens (punctuation dropped, apostrophes kept inside words)."""
    return _WORD.findall(text.lower().replace("\u2019", "'"))


def longest_content_run(headline: str) -> tuple[str, ...]:
    """The longest run of consecutive non-stop words of ``headline`` (the first, on ties)."""
    best: list[str] = []
    run: list[str] = []
    for w in [*words(headline), ""]:
        if w and w not in STOP_WORDS:
            run.append(w)
            continue
        if len(run) > len(best):
            best = run
        run = []
    return tuple(best)


def restates(story: str, headline: str) -> bool:
    """True when ``story`` contains the headline's longest content-word run, word for word."""
    run = longest_content_run(headline)
    if not run:
        return False
    toks = words(story)
    n = len(run)
    return any(tuple(toks[i : i + n]) == run for i in range(len(toks) - n + 1))


def story_prompt(headline: Headline, narrator: str) -> str:
    """The request a chat model gets for one story (the reference recipe, in our words)."""
    return (
        f"Write a short news story of three to five sentences about this event, told by "
        f"{narrator}. Describe what happened in your own words and never repeat the headline.\n"
        f"Event: {headline.headline}"
    )


_OPENINGS = (
    "Speaking as {narrator}, I can tell you the talk of the week has been the {k0}.",
    "I am {narrator}, and nobody around me can stop discussing the {k0}.",
    "From where I stand, as {narrator}, the story of the {k0} still feels unreal.",
    "As {narrator}, I watched the news about the {k0} unfold step by step.",
)
_MIDDLES = (
    "Everyone keeps coming back to the {k1}, which surprised even the people closest to it.",
    "What struck me most was the {k1}; it changed how people here see {theme}.",
    "Officials answered questions about the {k1} for most of the afternoon.",
    "The details about the {k1} spread quickly, and the reactions were mixed.",
)
_CLOSINGS = (
    "Whatever happens next, this will be remembered as a turning point for {theme}.",
    "People are already asking what the {k2} will mean for the months ahead.",
    "For now, the {k2} is all anyone in {theme} circles wants to talk about.",
    "I expect we will be hearing about the {k2} for a long time.",
)


def template_stories(headline: Headline, n: int, seed: int, narrators: list[str]) -> list[str]:
    """``n`` offline stories about ``headline``, each from a different narrator where possible,
    built from its theme and keywords; stories that would restate the headline are skipped."""
    rng = random.Random(seed)
    keys = list(headline.keywords) or [headline.theme]
    roles = narrators[:]
    rng.shuffle(roles)
    out: list[str] = []
    for attempt in range(20 * n):
        if len(out) == n:
            break
        k = [keys[(attempt + j) % len(keys)] for j in range(3)]
        fill = {"narrator": roles[len(out) % len(roles)], "theme": headline.theme}
        fill.update(k0=k[0], k1=k[1], k2=k[2])
        parts = (rng.choice(_OPENINGS), rng.choice(_MIDDLES), rng.choice(_CLOSINGS))
        story = " ".join(p.format(**fill) for p in parts)
        if not restates(story, headline.headline) and story not in out:
            out.append(story)
    if len(out) < n:
        raise DataError(
            f"only {len(out)} of {n} template stories for {headline.headline!r} avoid restating "
            "it: give the headline more keywords, or use a model text source"
        )
    return out


def model_stories(source, headline: Headline, n: int, seed: int, narrators: list[str]) -> list[str]:
    """``n`` stories from a chat model (``source.chat``), narrators in a seeded order; stories that
    restate the headline are asked again, up to four rounds."""
    rng = random.Random(seed)
    roles = narrators[:]
    rng.shuffle(roles)
    out: list[str] = []
    asked = 0
    for attempt in range(4):
        need = n - len(out)
        if need <= 0:
            break
        prompts = [story_prompt(headline, roles[(asked + j) % len(roles)]) for j in range(need)]
        asked += need
        for story in source.chat(prompts, seed + attempt):
            if story.strip() and not restates(story, headline.headline):
                out.append(story.strip())
    if len(out) < n:
        raise DataError(
            f"the text source wrote only {len(out)} of {n} stories about {headline.headline!r} "
            "that do not restate it: lower task_options.stories_per_diff or use another textgen "
            "model"
        )
    return out[:n]


def split_headlines(
    headlines: list[Headline], n_train: int, n_test: int, seed: int
) -> tuple[list[Headline], list[Headline]]:
    """A seeded split; headlines are unique (`load_headlines`), so no test label is trained on."""
    if n_train + n_test > len(headlines):
        raise DataError(
            f"asked for {n_train} train + {n_test} test headlines but the list has "
            f"{len(headlines)}; lower data.n_train / data.n_test or add headlines "
            "(task_options.headlines_file)"
        )
    order = list(headlines)
    random.Random(seed).shuffle(order)
    return order[:n_train], order[n_train : n_train + n_test]


def make_data(run) -> None:
    """Split the headlines and write every diff's stories to ``data/jobs.jsonl``."""

    cfg, opts = run.cfg, run.options
    data_dir = run.out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    jobs_path = data_dir / "jobs.jsonl"
    if jobs_path.exists():
        log.info("%s exists; keeping its jobs", jobs_path)
        return
    headlines = load_headlines(opts.headlines_file)
    narrators = load_narrators(opts.narrators_file)
    train_h, test_h = split_headlines(headlines, cfg.data.n_train, cfg.data.n_test, cfg.data.seed)
    source = None
    if cfg.textgen.kind != "template":
        model, tok = run.model_and_tok
        source = make_source(cfg.textgen, cache_dir=data_dir / "cache", model=model, tokenizer=tok)
    n = opts.stories_per_diff
    rows = []
    for split, group in (("train", train_h), ("test", test_h)):
        for i, h in enumerate(tqdm(group, desc=f"{split} stories", disable=None)):
            seed = cfg.data.seed * 100_003 + len(rows)
            if source is None:
                stories = template_stories(h, n, seed, narrators)
            else:
                stories = model_stories(source, h, n, seed, narrators)
            rows.append(
                {
                    "diff_id": f"{split}-{i:05d}",
                    "split": split,
                    "label": h.headline,
                    "theme": h.theme,
                    "keywords": list(h.keywords),
                    "seed": seed,
                    "stories": stories,
                }
            )
    write_jsonl(jobs_path, rows)


def _summary_requests(ctx, job: dict) -> list[tuple[str, str]]:
    n = ctx.run.options.twenty_q_count
    return [(q, q) for q in (SUMMARY_REQUESTS[i % len(SUMMARY_REQUESTS)] for i in range(n))]


def _story_request(ctx, job: dict):

    return [Prompt("story_summary", STORY_REQUEST, STORY_REQUEST)]


@dataclass
class NewsOptions:
    """The news task's own keys (``[task_options]`` in a config)."""

    headlines_file: str | None = None  # CSV headline,theme,keywords; None = shipped
    narrators_file: str | None = None  # one narrator role per line; None = shipped
    stories_per_diff: int = 100  # stories each diff is trained on
    # Summary requests per diff for the 20-summary-requests baseline, and their answer length.
    twenty_q_count: int = field(default=20, metadata={"stage": "eval"})
    twenty_q_max_new_tokens: int = field(default=48, metadata={"stage": "eval"})
    # The story the story -> summary baseline writes.
    story_max_new_tokens: int = field(default=120, metadata={"stage": "eval"})

    def __post_init__(self) -> None:
        for name in ("stories_per_diff", "twenty_q_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"task_options.{name}: must be >= 1")


@dataclass
class NewsJob:
    """One news diff: its id, headline, seed and the stories it is trained on."""

    diff_id: str
    headline: Headline
    seed: int
    stories: list[str]

    def path(self, out_dir: Path) -> Path:
        return out_dir / f"{self.diff_id}.safetensors"


class NewsTask:
    """The news-headline task (`tasks.base.Task`): one row kind, "Please generate a short news
    story." -> a story, trained with cross-entropy; DIT answers with the headline."""

    name = "news"
    options_class = NewsOptions
    row_kinds = (RowKind("story", CE),)
    dit_question = DIT_QUESTION
    judge_rubric = RUBRIC
    text_metrics = ("rouge_l",)
    default_methods = ("dit", "base_question", "summary_requests", "story_summary")

    @functools.cached_property
    def methods(self) -> dict:

        return {
            "summary_requests": TranscriptMethod(
                _summary_requests,
                max_new_tokens="twenty_q_max_new_tokens",
                label="20 summary requests",
                about="20 requests to summarise what the diffed model knows, then one guess",
            ),
            "story_summary": AskMethod(
                _story_request,
                guessed=True,
                max_new_tokens="story_max_new_tokens",
                label="Story -> summary",
                about="the diffed model writes a news story; a guesser summarises it",
            ),
        }

    def make_data(self, run) -> None:
        make_data(run)

    def training_data(self, run) -> None:
        return None  # a news diff's rows are its stories, all in its job

    def job(self, row: dict) -> NewsJob:
        h = Headline(row["label"], row["theme"], tuple(row["keywords"]))
        return NewsJob(row["diff_id"], h, row["seed"], row["stories"])

    def names(self, row: dict) -> list[str]:
        return [row["label"]]

    def candidates(self, cfg) -> list[str]:
        return [
            h.headline for h in load_headlines(task_options(self, cfg.task_options).headlines_file)
        ]

    def rows(self, job: NewsJob, tok, data, cfg, system: str | None = ""):
        stories = job.stories[:]
        random.Random(job.seed).shuffle(stories)
        return [(0, encode(tok, STORY_REQUEST, s, cfg.max_answer_tokens, system)) for s in stories]

    def diff_meta(self, job: NewsJob) -> dict:
        h = job.headline
        return {
            "task": self.name,
            "label": h.headline,
            "headline": h.headline,
            "theme": h.theme,
            "keywords": list(h.keywords),
        }


TASK = NewsTask()
