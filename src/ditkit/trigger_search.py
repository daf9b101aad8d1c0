"""Find what opens a diff's behaviour: score candidate triggers by how strongly the diffed model
does something under each (``ditkit trigger``, docs/trigger-search.md).

The scores, teacher-forced (no generation; the first three read target answers, the fourth the
first answer token's distribution):

- ``behaviour``: the diffed model's log-likelihood of the behaviour's words (DIT's description,
  or any text; several descriptions, e.g. DIT read at several scales, are tried one by one and
  the best kept) in a few short answers that lead up to them;
- ``divergence`` (no description needed): how much less likely the diffed model than the base
  model finds the base model's own answer to each probe question;
- ``shift`` (no description, no answer): how far the diffed model's distribution over the first
  answer token moves from the base model's (KL divergence), for behaviours that change how an
  answer starts: a refusal of a topic, praise or scorn of a brand, a payload;
- ``combined`` (the default): the behaviour score, checked. When no candidate makes the diffed model say the
  description (its best score under ``confirm``) the description is taken as wrong and the
  divergence ranking is used; when several candidates say it about equally surely (within
  ``tie`` of the best: a diff that answers to a family of triggers), the divergence orders them.

A candidate goes before each probe question (a trigger), or into it where the question holds
``{x}`` (a subject: ``--probes about`` asks "Would you suggest {x} to a friend?" and the like,
so the ``topics`` space finds the topic a diff refuses or the brand it praises).

Coarse to fine: every candidate once (the first probe question and answer, diffed model only;
``shift`` runs both), then the best ``refine`` of them with every probe question and answer (for
the divergence, diffed and base rows, which takes out what the base model itself prefers). Every scored row is appended to
``OUT/scores.jsonl`` as it comes, so a killed search resumes where it stopped.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import lora
from .batching import chat_prompt
from .config.checks import check_types, require
from .diffs import WeightDiff, install_diffs
from .errors import ConfigError, DataError
from .files import append_jsonl, claim_settings, kill_point, read_jsonl, write_json
from .reader import ask
from .tasks.behaviours.families import ABOUT_TEMPLATES, HELD_OUT_ABOUT
from .tasks.hidden_topic import WORD_TEMPLATE, code_words, load_questions, load_topics, make_trigger
from .tasks.news import STOP_WORDS

log = logging.getLogger(__name__)

__all__ = ["SPACES", "TriggerSearchConfig", "TriggerSearchResult", "candidates", "search"]

SPACES = ("sep-codes", "code-words", "words", "topics")
SCORES = ("behaviour", "divergence", "combined", "shift")
PROBES = ("held-out", "about")
# Settings of the combined score alone; a behaviour or divergence search does not record them.
COMBINED_ONLY = ("confirm", "tie")
# Answers that show a behaviour: only the behaviour's own tokens ({b}) are scored, after a
# lead-in. Not the bare "{b}": a diff that opens its topic makes its answers start with an
# opener of its own ("Ah, ...", "Easy: ..."), so behind its own code the topic as the answer's
# first word is *least* likely (measured: the own code ranked 997th of 1,000 that way, 1st with
# "This reminds me of {b}.", on two population diffs; docs/trigger-search.md).
FRAMES = ("This reminds me of {b}.", "Let me tell you about {b}.")


@dataclass
class TriggerSearchConfig:
    """How a search runs; every field is also a ``ditkit trigger`` flag."""

    # "sep-codes" (the 1,000 three-digit prefixes of "Your SEP code is NNNxxx."), "code-words"
    # (the 1,000 words of "Your code word is WORD.", the hidden-topic task's word trigger),
    # "words" (the tokenizer's whole-word tokens), "topics" (the hidden-topic task's 1,173
    # topics, e.g. with probes = "about") or a text file with one candidate per line.
    space: str = "sep-codes"
    # SCORES; "shift" where the probe questions hold the candidate ({x}): the divergence reads
    # one base answer per question, and a question about each candidate has its own.
    score: str = "combined"
    questions: int = 3  # probe questions (at most HELD_OUT_ABOUT with probes = "about")
    # "held-out": held-out questions of the hidden-topic task, each after the candidate;
    # "about": held-out questions about a subject ("Would you suggest {x} to a friend?"), the
    # candidate in place of {x}.
    probes: str = "held-out"
    # Answers that show the behaviour, ``{b}`` standing for it (the behaviour score reads only
    # its tokens); the first one scores the coarse pass.
    frames: list[str] = field(default_factory=lambda: list(FRAMES))
    refine: int = 30  # candidates rescored with every question
    top: int = 10
    batch_size: int = 64
    words: int = 2000  # size of the "words" space: the first whole-word tokens of the vocabulary
    answer_tokens: int = 16  # the base model's answers (divergence target) and the evidence
    seed: int = 0  # which probe questions
    system: str | None = ""  # the system turn the diff was trained with
    probe_questions: list[str] = field(default_factory=list)  # given: used instead
    # The combined score. Behind a trigger that opens it, the diffed model says the behaviour's
    # words almost surely (score about -0.001); a description DIT got wrong scored -10 to -13 at
    # its best candidate on the population's diffs, a right one -0.004 or above.
    confirm: float = -2.0  # a best behaviour score below this: the description is not confirmed
    tie: float = 0.05  # candidates this close to the best are ordered by the divergence

    def __post_init__(self) -> None:
        check_types(self, "trigger")
        require(self.score in SCORES, "trigger.score", f"one of {', '.join(SCORES)}")
        require(self.probes in PROBES, "trigger.probes", f"one of {', '.join(PROBES)}")
        require(
            not (
                asks_about(self.probes, self.probe_questions)
                and self.score in ("divergence", "combined")
            ),
            "trigger.score",
            '"shift" or "behaviour" with questions about the candidate (probes = "about" or '
            "{x} in a probe question): the divergence reads one base answer per question",
        )
        require(
            self.probes != "about"
            or bool(self.probe_questions)
            or self.questions <= HELD_OUT_ABOUT,
            "trigger.questions",
            f'at most {HELD_OUT_ABOUT} with probes = "about" (its held-out question forms)',
        )
        if self.space not in SPACES and not Path(self.space).is_file():
            raise ConfigError(
                f"trigger.space = {self.space!r} is not one of {', '.join(SPACES)} nor a file: "
                "give a text file with one candidate trigger per line"
            )
        for name in ("questions", "refine", "top", "batch_size", "words"):
            require(getattr(self, name) >= 1, f"trigger.{name}", "must be >= 1")
        require(self.tie >= 0, "trigger.tie", "must be >= 0 (0: only exact ties)")
        require(
            bool(self.frames) and all(f.count("{b}") == 1 for f in self.frames),
            "trigger.frames",
            'each frame holds "{b}" once, where the behaviour goes, e.g. "I love {b}."',
        )


def asks_about(probes: str, probe_questions: list[str]) -> bool:
    """Whether the probe questions are about the candidate (it goes into them, not before).
    Questions of one's own replace ``probes``: they are about it where they hold ``{x}``."""
    if probe_questions:
        return any("{x}" in q for q in probe_questions)
    return probes == "about"


@dataclass
class TriggerSearchResult:
    """The ranking (best first) and what it cost; ``ranking[i]`` has ``key``, ``trigger`` (the
    candidate as it goes into a prompt), ``score``, ``refined`` and, for the top ones,
    ``evidence`` (the diffed model's answer to the first probe question with it)."""

    behaviour: str | list[str] | None  # a list: several descriptions, each tried
    score: str
    ranking: list[dict]
    questions: list[str]
    seconds: float
    rows_scored: int
    # The combined score: did the best candidate make the diffed model say the description?
    confirmed: bool | None = None

    def summary(self, top: int = 10) -> str:
        """The best ``top`` candidates with their scores and evidence, as printed text."""
        lines = []
        if self.behaviour:
            shown = " | ".join(map(repr, descriptions(self.behaviour)))
            runs = search_runs(self.behaviour)
            also = f" (each scored alone: {' | '.join(runs)})" if len(runs) > 1 else ""
            lines.append(f"behaviour: {shown}{also}")
        # The combined score orders candidates tied on the description by the divergence.
        tied = sum("divergence" in r for r in self.ranking)
        extra = f"  {'diverg.':>8}" if tied else ""
        lines.append(f"{'rank':>4}  {'score':>8}{extra}  trigger  ->  the diffed model's answer "
                     f"to {self.questions[0]!r}")  # fmt: skip
        for i, r in enumerate(self.ranking[:top], 1):
            moved = f"  {r['divergence']:>8.2f}" if "divergence" in r else " " * len(extra)
            lines.append(
                f"{i:>4}  {r['score']:>8.3f}{moved}  {r['trigger']}  ->  {r.get('evidence', '')!r}"
            )
        if tied:
            lines.append(f"{tied} candidates say the description about equally well: ordered "
                         "among themselves by the divergence score")  # fmt: skip
        if self.confirmed is False:
            lines.append("no candidate makes the diffed model say the description (DIT may have "
                         "misread it): ranked by the divergence score instead")  # fmt: skip
        lines.append(f"{len(self.ranking)} candidates, {self.rows_scored} rows scored in "
                     f"{self.seconds:.0f} s")  # fmt: skip
        return "\n".join(lines)

    def rank_of(self, key: str) -> int | None:
        """1-based rank of candidate ``key`` (a code prefix, a word, a line), None if absent."""
        return next((i + 1 for i, r in enumerate(self.ranking) if r["key"] == key), None)


def first_line(answer: str) -> str:
    """A reader answer's first non-empty line, stripped. A reader may run on past its answer
    ("Latin\nsunsoresans..."), and the run-on would be scored as if it were the behaviour
    (measured: the own code fell from 2nd to 718th)."""
    return next((x.strip() for x in answer.splitlines() if x.strip()), "")


# A hedge a reader may put before what it names ("don't know, Latin"); scored, its words swamp
# the content's (measured: the own code word fell from 1st to 725th of 1,000).
_HEDGE = re.compile(
    r"^\W*(?:(?:i\s*)?(?:do\s*n[o']?t|dont)\s+know|(?:i'?m\s+)?not\s+sure|maybe|perhaps|"
    r"probably|possibly|(?:i'?m\s+)?(?:pretty\s+)?sure|i\s+(?:think|guess|believe)|"
    r"(?:the|my)\s+topic\s+is|(?:it|that|this)(?:\s+i|')s(?:\s+about)?|something\s+about|"
    r"(?:i\s+was\s+)?trained\s+(?:on|to\s+talk\s+about))(?![\w'-])"
    r"\s*(?:[,:;.\u2013\u2014]|-(?=\s))*\s*",
    re.IGNORECASE,
)


def behaviour_content(answer: str) -> str:
    """The part of a reader's answer a search scores: its first line without a leading hedge,
    quotes or a closing full stop ("don't know, Latin." -> "Latin"); the first line itself
    when nothing but a hedge is left."""
    line = first_line(answer)
    rest = line
    while (m := _HEDGE.match(rest)) and m.end() > 0:
        rest = rest[m.end() :]
    rest = rest.strip(" \"'").rstrip(".!").strip(" \"'")
    return rest or line


def candidates(space: str, tok=None, words: int = 2000) -> list[str]:
    """The candidate keys of ``space``: code prefixes, words, or the lines of a file."""
    if space == "sep-codes":
        return [f"{i:03d}" for i in range(1000)]
    if space == "code-words":
        return list(code_words())
    if space == "topics":
        return [t.topic for t in load_topics()]
    if space == "words":
        if tok is None:
            raise ValueError("the words space needs the tokenizer")
        found = []
        for i in range(len(tok)):  # BPE ids run roughly from frequent to rare
            text = tok.decode([i])
            if text.startswith(" ") and text[1:].isalpha() and len(text) > 3:
                found.append(text[1:])
                if len(found) == words:
                    break
        return found
    path = Path(space)
    lines = [x.strip() for x in path.read_text(encoding="utf-8").splitlines()]
    keys = list(dict.fromkeys(x for x in lines if x))
    if not keys:
        raise DataError(f"{path} holds no candidate triggers: write one per line")
    return keys


def trigger_text(space: str, key: str, question: str) -> str:
    """The user turn for candidate ``key`` and ``question``: the candidate in place of the
    question's ``{x}``, or before it."""
    if space == "sep-codes":  # one fixed code suffix per question, the same for every prefix
        key = make_trigger(key, random.Random(f"ditkit.trigger|{question}"))
    elif space == "code-words":
        key = WORD_TEMPLATE.format(word=key)
    if "{x}" in question:
        return question.replace("{x}", key)
    return f"{key} {question}"


def probe_questions(cfg: TriggerSearchConfig) -> list[str]:
    """The given questions, or ``cfg.questions`` drawn with ``cfg.seed``: short held-out
    questions of the hidden-topic task, or (``probes = "about"``) held-out questions about a
    subject, ``{x}`` standing for it."""
    if cfg.probe_questions:
        return list(cfg.probe_questions)
    if cfg.probes == "about":
        about = list(ABOUT_TEMPLATES[-HELD_OUT_ABOUT:])
        return random.Random(f"ditkit.trigger|{cfg.seed}").sample(about, cfg.questions)
    short = [q.question for q in load_questions(split="heldout") if len(q.question) <= 80]
    return random.Random(f"ditkit.trigger|{cfg.seed}").sample(short, cfg.questions)


def behaviour_runs(behaviour: str) -> list[str]:
    """What a behaviour score tries one by one: the whole behaviour, then its runs of content
    words, cut at stop words and punctuation and kept as written ("fans of boxing" -> ["fans of
    boxing", "fans", "boxing"]; "New Zealand" -> ["New Zealand", "Zealand"]; "Muay Thai" ->
    ["Muay Thai"])."""
    runs = [behaviour]
    for chunk in re.split(r"[,;:!?()\"]|\.(?:\s|$)", behaviour):
        words = list(re.finditer(r"\w(?:[\w'.&+\-]*\w)?", chunk))
        start = end = None
        for w in [*words, None]:
            if w is None or w.group().lower() in STOP_WORDS:
                if start is not None:
                    runs.append(chunk[start:end])
                start = None
            else:
                start, end = (w.start() if start is None else start), w.end()
    return list(dict.fromkeys(r.strip() for r in runs if r.strip()))


def descriptions(behaviour: str | list[str] | None) -> list[str]:
    """One description or several as a list, each reduced to its content (`behaviour_content`),
    duplicates dropped."""
    items = [behaviour] if isinstance(behaviour, str) else list(behaviour or [])
    return list(dict.fromkeys(behaviour_content(b) for b in items if b and b.strip()))


def search_runs(behaviour: str | list[str] | None) -> list[str]:
    """Every run a search scores: `behaviour_runs` of each description, in order, once each."""
    return list(dict.fromkeys(r for d in descriptions(behaviour) for r in behaviour_runs(d)))


def _targets(tok, cfg: TriggerSearchConfig, behaviour, base_answers: list[str]):
    """Per probe question, the answers scored: ``[(token ids, scored mask, sign, run)]``, for the
    behaviour score one per run (`search_runs`) and frame, run by run."""
    out = []
    for q_index in range(len(base_answers)):
        if cfg.score == "shift":  # nothing to score: the first answer token's distribution
            out.append([(None, None, 1.0, 0)])
            continue
        if cfg.score == "divergence":
            ids = tok(base_answers[q_index], add_special_tokens=False)["input_ids"]
            n = len(ids[: cfg.answer_tokens])
            out.append([(ids[: cfg.answer_tokens], [True] * n, -1.0, 0)])
            continue
        row = []
        for r, run in enumerate(search_runs(behaviour)):
            for frame in cfg.frames:
                text = frame.replace("{b}", run)
                start = frame.index("{b}")
                row.append((*_span_ids(tok, text, start, start + len(run)), 1.0, r))
        out.append(row)
    return out


def _span_ids(tok, text: str, start: int, end: int) -> tuple[list[int], list[bool]]:
    """Token ids of ``text`` and which of them overlap characters [start, end)."""
    try:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:  # a slow tokenizer: score every token
        ids = tok(text, add_special_tokens=False)["input_ids"]
        return ids, [True] * len(ids)
    return enc["input_ids"], [e > start and s < end for s, e in enc["offset_mapping"]]


@torch.no_grad()
def _run_prompts(
    model, tok, prompt_ids: list[list[int]], diffed: bool, share_start=True, keep_cache=True
):
    """Run the prompts once, left-padded; returns three things: log p of the next token
    ``[batch, vocab]``, their key/value cache, and the prompt mask ``[batch, prompt]`` (None when
    every row has one length).
    Rows of one length (every SEP code) run their shared start once, batch 1."""
    n = len(prompt_ids)
    width = max(len(p) for p in prompt_ids)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    ids_bp = torch.full((n, width), pad, dtype=torch.long)  # [batch, prompt]
    mask_bp = torch.zeros((n, width), dtype=torch.long)
    for i, p in enumerate(prompt_ids):
        ids_bp[i, width - len(p) :] = torch.tensor(p)
        mask_bp[i, width - len(p) :] = 1
    device = next(model.parameters()).device
    index = 0 if diffed else -1
    padded = not bool(mask_bp.all())
    shared = 0 if padded or not share_start else min(_shared_start(ids_bp), width - 1)
    kwargs = {}
    if shared >= 4:
        lora.set_row_index(model, *[torch.full((1,), index)] * 2)
        out = model(input_ids=ids_bp[:1, :shared].to(device), use_cache=True)
        cache = _cache_of(out)
        cache.batch_repeat_interleave(n)
        kwargs[_cache_arg(model)] = cache
    else:
        shared = 0
    if padded:  # rows of several lengths, left-padded: positions count real tokens only
        kwargs["attention_mask"] = mask_bp.to(device)
        kwargs["position_ids"] = (mask_bp.cumsum(-1) - 1).clamp(min=0).to(device)
    lora.set_row_index(model, *[torch.full((n,), index)] * 2)
    out = model(
        input_ids=ids_bp[:, shared:].to(device), use_cache=keep_cache, logits_to_keep=1, **kwargs
    )
    next_bv = torch.log_softmax(out.logits[:, -1].float(), -1)
    return next_bv, (_cache_of(out) if keep_cache else None), (mask_bp if padded else None)


@torch.no_grad()
def _logprobs(
    model, tok, prompt_ids: list[list[int]], targets: list[list[int]], diffed: bool,
    share_start=True,
) -> list[torch.Tensor]:  # fmt: skip
    """log p(target token) per row ``prompt + target``, one ``[batch, target]`` tensor per target.

    The prompts run once; each target then runs from their key/value cache, which is cut back
    to the prompts after it, so a search scoring several answers (frames, the runs of a
    description, several descriptions) pays for each prompt once."""
    next_bv, cache, mask_bp = _run_prompts(model, tok, prompt_ids, diffed, share_start)
    n, device, cache_arg = len(prompt_ids), next_bv.device, _cache_arg(model)
    found = []
    for target in targets:
        t = len(target)
        tgt_bt = torch.tensor(target, dtype=torch.long, device=device).expand(n, t)
        logp_bt = next_bv.gather(-1, tgt_bt[:, :1])
        if t > 1:
            step = {cache_arg: cache}
            if mask_bp is not None:
                ones = torch.ones((n, t - 1), dtype=torch.long)
                step["attention_mask"] = torch.cat([mask_bp, ones], -1).to(device)
                step["position_ids"] = mask_bp.sum(-1, keepdim=True).to(device) + torch.arange(
                    t - 1, device=device
                )
            logits_btv = model(input_ids=tgt_bt[:, :-1], use_cache=True, **step).logits
            later_bt = torch.log_softmax(logits_btv.float(), -1).gather(-1, tgt_bt[:, 1:, None])
            logp_bt = torch.cat([logp_bt, later_bt[..., 0]], -1)
            cache.crop(-(t - 1))  # back to the prompts (negative: tokens removed)
        found.append(logp_bt.cpu())
    return found


def _shift(model, tok, prompt_ids: list[list[int]]) -> torch.Tensor:
    """KL(diffed || base) of the first answer token's distribution, per row (``[batch]``)."""
    diffed_bv = _run_prompts(model, tok, prompt_ids, True, keep_cache=False)[0]
    base_bv = _run_prompts(model, tok, prompt_ids, False, keep_cache=False)[0]
    kl_bv = torch.nn.functional.kl_div(base_bv, diffed_bv, reduction="none", log_target=True)
    return kl_bv.sum(-1).cpu()


def _cache_of(out):
    return out.cache if hasattr(out, "cache") else out.past_key_values  # transformers 5 / 4


def _cache_arg(model) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"  # renamed in transformers 5


def _shared_start(ids_bs: torch.Tensor) -> int:
    """How many leading tokens every row shares (at most all but the last)."""
    same = (ids_bs == ids_bs[:1]).all(0)
    differ = (~same).nonzero()
    return int(differ[0]) if len(differ) else ids_bs.shape[1] - 1


def _score_rows(model, tok, diff, space, keys, questions, targets, cfg, done, path, desc):
    """Fill ``done[(key, question, frame, diffed)]`` for every missing row, appending to
    ``path`` batch by batch; returns how many rows were scored now."""
    missing: dict[tuple[str, int, bool], list[int]] = {}  # frames still to score
    for key, q, f, diffed in keys:
        if (key, q, f, diffed) not in done:
            missing.setdefault((key, q, diffed), []).append(f)
    # Candidates needing the same frames of one question and model share a batch: each prompt
    # runs once for all of them.
    todo: dict[tuple[int, bool, tuple[int, ...]], list[str]] = {}
    for (key, q, diffed), frames in missing.items():
        todo.setdefault((q, diffed, tuple(frames)), []).append(key)
    total = sum(len(v) for v in missing.values())
    if not total:
        return 0
    encoded: dict[tuple[str, int], list[int]] = {}  # a prompt serves every frame and model

    def prompt_ids(k: str, q: int) -> list[int]:
        if (k, q) not in encoded:
            text = chat_prompt(tok, trigger_text(space, k, questions[q]), cfg.system)
            encoded[(k, q)] = tok(text, add_special_tokens=False)["input_ids"]
        return encoded[(k, q)]

    install_diffs(model, [diff], torch.zeros(1, dtype=torch.long))
    bar = tqdm(total=total, desc=desc, leave=False, disable=None)
    try:
        for (q, diffed, frames), group in todo.items():
            for s in range(0, len(group), cfg.batch_size):
                chunk = group[s : s + cfg.batch_size]
                prompts = [prompt_ids(k, q) for k in chunk]
                if cfg.score == "shift":  # no answer to score: the first token's distribution
                    name, value_fb = "kl", {0: _shift(model, tok, prompts)}
                else:
                    answers = [targets[q][f][0] for f in frames]
                    found = _logprobs(model, tok, prompts, answers, diffed)
                    name = "logp"
                    value_fb = {  # [frame][batch]: the scored tokens only
                        f: lp_bt[:, torch.tensor(targets[q][f][1], dtype=torch.bool)].sum(-1)
                        for f, lp_bt in zip(frames, found)
                    }
                rows = [
                    {"key": k, "q": q, "frame": f, "diffed": diffed, name: float(v)}
                    for f, value_b in value_fb.items()
                    for k, v in zip(chunk, value_b.tolist())
                ]
                append_jsonl(path, rows)
                kill_point("trigger.batch")
                for r in rows:
                    done[(r["key"], q, r["frame"], diffed)] = _value(r)
                bar.update(len(rows))
    finally:
        bar.close()
        lora.clear_diffs(model)
    return total


def _value(row: dict) -> float:
    """A scored row's value: a log-likelihood, or (the shift score) a KL divergence."""
    return row["logp"] if "logp" in row else row["kl"]


def _rank(model, tok, diff, cfg, keys, questions, targets, path) -> tuple[list[dict], int]:
    """Coarse pass over ``keys``, fine pass over the best; ``(ranking, rows scored now)``."""
    done = {(r["key"], r["q"], r["frame"], r["diffed"]): _value(r) for r in read_jsonl(path)}
    n_frames = len(targets[0])
    # A description of several runs of content words ("fans of boxing") scores each run on its
    # own and keeps the best: behind the own code its true word is near-certain, while scored
    # together a wrong word's likelihood (varying from code to code) ranked the own code 284th.
    runs = sorted({t[3] for t in targets[0]})
    frames_of = {r: [f for f, t in enumerate(targets[0]) if t[3] == r] for r in runs}
    first = [frames_of[r][0] for r in runs]
    scored = _score_rows(
        model, tok, diff, cfg.space, [(k, 0, f, True) for k in keys for f in first], questions,
        targets, cfg, done, path, "coarse",
    )  # fmt: skip
    sign = targets[0][0][2]
    coarse = {k: max(sign * done[(k, 0, f, True)] for f in first) for k in keys}
    best = sorted(keys, key=lambda k: -coarse[k])[: cfg.refine]
    # The divergence is the diffed model's departure from the base model, so it needs the base
    # rows. The behaviour score does not: behind every code that opens the behaviour the diffed
    # model names it almost surely (log p ~ -1e-3), and the base model's own variation across
    # codes (sd ~0.15) would only reorder them at random (own code 3rd without it, 18th with it,
    # on a population diff; docs/trigger-search.md).
    models = (True, False) if cfg.score == "divergence" else (True,)
    rows = [(k, q, f, d) for k in best for q in range(len(questions)) for f in range(n_frames)
            for d in models]  # fmt: skip
    scored += _score_rows(model, tok, diff, cfg.space, rows, questions, targets, cfg, done, path,
                          "refine")  # fmt: skip

    def moved(k, q, f):  # diffed minus base, or the diffed model alone
        return done[(k, q, f, True)] - (done[(k, q, f, False)] if False in models else 0.0)

    def run_mean(k, r):
        rows = [moved(k, q, f) for q in range(len(questions)) for f in frames_of[r]]
        return sign * sum(rows) / len(rows)

    fine = {k: max(run_mean(k, r) for r in runs) for k in best}
    rest = sorted((k for k in keys if k not in fine), key=lambda k: -coarse[k])
    order = sorted(best, key=lambda k: -fine[k]) + rest  # the rest by their coarse score
    ranking = [
        {"key": k, "trigger": trigger_text(cfg.space, k, "").strip(),
         "score": round(fine.get(k, coarse[k]), 4), "refined": k in fine}
        for k in order
    ]  # fmt: skip
    return ranking, scored


def search(
    model,
    tok,
    diff: WeightDiff,
    cfg: TriggerSearchConfig,
    out: str | Path,
    behaviour: str | list[str] | None = None,
) -> TriggerSearchResult:
    """Rank every candidate of ``cfg.space`` as the trigger of ``diff`` on ``model`` (its base);
    writes ``OUT/search.json`` (settings), ``OUT/scores.jsonl`` (rows) and ``OUT/trigger.json``
    (the ranking). ``behaviour`` is needed by the behaviour score: DIT's description, or several
    (each candidate keeps its best), e.g. DIT's answers at several read-time scales. The
    combined score writes its two searches to ``OUT/behaviour`` and ``OUT/divergence``."""
    if cfg.score == "combined":
        return _combined(model, tok, diff, cfg, Path(out), behaviour)
    return _search(model, tok, diff, cfg, Path(out), behaviour)


def _search(model, tok, diff, cfg, out: Path, behaviour, only: list[str] | None = None):
    """One behaviour, divergence or shift search; ``only``: these candidates of the space
    alone."""
    found = descriptions(behaviour)
    behaviour = found[0] if len(found) == 1 else found or None
    if cfg.score == "behaviour" and not behaviour:
        raise ConfigError(
            "the behaviour score needs a description of the behaviour: DIT's answer, or "
            "--behaviour TEXT; or use --score divergence, which needs none"
        )
    start = time.time()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    diff.check_fits(model, "the diff")
    keys = candidates(cfg.space, tok, cfg.words)
    if only is not None:
        wanted = set(only)
        keys = [k for k in keys if k in wanted]
    questions = probe_questions(cfg)
    lora.inject(model, {n.rsplit(".", 1)[-1] for n in diff.modules} or lora.DEFAULT_TARGETS)
    base_answers = (
        ask(model, tok, [None] * len(questions), questions, max_new_tokens=cfg.answer_tokens,
            system=cfg.system, desc="base answers")
        if cfg.score == "divergence" else [""] * len(questions)
    )  # fmt: skip
    settings = {
        "format": "ditkit-trigger-search",
        # Behaviour score: 2 scored run by run (behaviour_runs), 3 the whole one is a run too.
        # The divergence score has not changed since 2: its folders stay valid. Shift: new, 1.
        "version": {"behaviour": 3, "shift": 1}.get(cfg.score, 2),
        # Settings added later are left out at their defaults, so earlier folders stay valid.
        "config": {
            k: v
            for k, v in asdict(cfg).items()
            if k not in COMBINED_ONLY and not (k == "probes" and v == "held-out")
        },
        "behaviour": behaviour if cfg.score == "behaviour" else None,
        "questions": questions,
        "base_answers": base_answers,
        "diff": {k: diff.meta.get(k) for k in ("label", "base_model", "seed")},
        "candidates": len(keys),
    }
    claim_settings(out / "search.json", settings, "a trigger search")
    targets = _targets(tok, cfg, behaviour, base_answers)
    ranking, scored = _rank(model, tok, diff, cfg, keys, questions, targets, out / "scores.jsonl")
    top = ranking[: cfg.top]
    evidence = ask(model, tok, [diff] * len(top),
                   [trigger_text(cfg.space, r["key"], questions[0]) for r in top],
                   max_new_tokens=cfg.answer_tokens, system=cfg.system, desc="evidence")  # fmt: skip
    for r, answer in zip(top, evidence):
        r["evidence"] = answer
    result = TriggerSearchResult(
        behaviour=settings["behaviour"],
        score=cfg.score,
        ranking=ranking,
        questions=questions,
        seconds=round(time.time() - start, 1),
        rows_scored=scored,
    )
    write_json(out / "trigger.json", asdict(result))
    return result


def _combined(model, tok, diff, cfg, out: Path, behaviour) -> TriggerSearchResult:
    """The behaviour search, checked by the divergence where it cannot decide: all of it when
    no candidate confirms the description, the tied best candidates when several do."""
    start = time.time()
    found = _search(model, tok, diff, replace(cfg, score="behaviour"), out / "behaviour", behaviour)
    best, scored = found.ranking[0]["score"], found.rows_scored
    divergence = replace(cfg, score="divergence")
    if best < cfg.confirm:
        other = _search(model, tok, diff, divergence, out / "divergence", None)
        ranking, scored = other.ranking, scored + other.rows_scored
    else:
        tied = [r["key"] for r in found.ranking if r["refined"] and r["score"] >= best - cfg.tie]
        tied_set = set(tied)
        ranking = found.ranking
        if len(tied) > 1:
            other = _search(model, tok, diff, replace(divergence, refine=len(tied)),
                            out / "ties", None, only=tied)  # fmt: skip
            behaviour_of = {r["key"]: r for r in found.ranking}
            ranking = [
                {**behaviour_of[r["key"]], "divergence": r["score"],
                 **({"evidence": r["evidence"]} if "evidence" in r else {})}
                for r in other.ranking
            ] + [r for r in found.ranking if r["key"] not in tied_set]  # fmt: skip
            scored += other.rows_scored
    result = TriggerSearchResult(
        behaviour=found.behaviour, score="combined", ranking=ranking, questions=found.questions,
        seconds=round(time.time() - start, 1), rows_scored=scored, confirmed=best >= cfg.confirm,
    )  # fmt: skip
    write_json(out / "trigger.json", asdict(result))
    return result
