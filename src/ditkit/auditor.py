"""Audit many fine-tunes at once: one row per diff, flags, and a table to read first.

`audit` takes files and folders (ditkit diffs, PEFT adapter folders, reference ``.pt`` files
holding one or many diffs, full checkpoints given with a base model) and writes, per diff: its
format, the base-model check, rank and norms, what the DIT adapter says it was trained on, what
the diffed model itself answers to the same question, the weight lens's top tokens, and flags.
Rows go to ``OUT/audit.jsonl`` as each item finishes, so a killed audit resumes where it stopped;
a broken item gets a row that says why and how to fix it, and the rest go on. At the end:
``audit.csv`` and a self-contained ``audit.html`` sorted by flags.
"""

from __future__ import annotations

import hashlib
import logging
import math
import statistics
import time
import traceback
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .diffs import checkpoint, find_format, load_diff, load_diffs
from .diffs.checkpoint import describe_outside, diff_from_finetune
from .diffs.core import WeightDiff
from .errors import ConfigError, DitkitError
from .evaluate.metrics import alias_match
from .evaluate.weight_lens import WeightLens
from .files import append_jsonl, kill_point, read_jsonl, write_json, write_text
from .models import DEFAULT_MODEL, load_model
from .reader import (
    adapter_question,
    answer_margins,
    ask,
    describe,
    nothing_margin,
    read_forms,
    read_scale,
)
from .reporting import Document, Section, Table, html
from .rundir import is_run_dir
from .shipped import check_base, is_shipped_spec, load_shipped, load_shipped_spec
from .symmetry import align as align_to_base
from .tasks.base import DEFAULT_TASK
from .tasks.behaviours.families import (
    FAMILIES,
    NOTHING,
    label_openings,
    named_content,
    parse_description,
)
from .tasks.hidden_topic.methods import heldout_questions
from .trigger_search import TriggerSearchConfig, search

log = logging.getLogger(__name__)

DIFF_SUFFIXES = (".safetensors", ".pt")
FOLDER_MARKERS = ("adapter_config.json", "config.json")
SMALL_CHANGE = 0.5  # |W_ft - W_base| / |W_base| above this: not a fine-tune in the base's basis
OUTLIER_Z = 3.5  # robust z-score of log(norm) that flags a diff against the others


@dataclass(frozen=True)
class Item:
    """One file or folder to audit (a reference ``.pt`` may give several rows)."""

    path: Path

    @property
    def key(self) -> str:
        return str(self.path)


def find_items(paths: list[str | Path]) -> list[Item]:
    """Every diff file or adapter/checkpoint folder under ``paths``, in a stable order; a path
    that does not exist is kept, so that its row says so."""
    items: list[Item] = []
    for p in map(Path, paths):
        if is_run_dir(p):  # its diffs, held-out first; its DIT adapter reads, it is not read
            found = [f for s in ("test", "train") for f in sorted((p / "diffs" / s).glob("*"))]
            items += [Item(f) for f in found if f.suffix in DIFF_SUFFIXES]
            log.info("%s is a run directory: auditing its %d diffs", p, len(found))
            continue
        if not p.is_dir() or any((p / m).exists() for m in FOLDER_MARKERS):
            items.append(Item(p))
            continue
        folders = sorted(
            {f.parent for m in FOLDER_MARKERS for f in p.rglob(m)}, key=lambda f: len(f.parts)
        )
        kept: list[Path] = []
        for f in folders:  # a folder inside another diff folder is part of it
            if not any(k in f.parents for k in kept):
                kept.append(f)
        files = [
            f
            for f in sorted(p.rglob("*"))
            if f.is_file()
            and f.suffix in DIFF_SUFFIXES
            and not any(k == f.parent or k in f.parents for k in kept)
        ]
        items += [Item(f) for f in sorted([*kept, *files])]
    return items


def run_adapter(paths: list[str | Path]) -> Path | None:
    """The DIT adapter of the run directory among ``paths``, if there is exactly one such."""
    found = {(Path(p) / "dit" / "adapter").resolve() for p in paths if is_run_dir(p)}
    found = {f for f in found if (f / "adapter_config.json").is_file()}
    return found.pop() if len(found) == 1 else None


class Auditor:
    """Reads diffs against one base model with one DIT adapter (both loaded once, lazily)."""

    def __init__(
        self,
        base: str | None = None,
        adapter: str | None = None,
        question: str | None = None,
        align: bool = True,
        max_new_tokens: int = 20,
        trust_remote_code: bool = False,
        find_triggers: TriggerSearchConfig | None = None,
        subjects: str | None = None,
        min_margin: float | None = None,
        read: str = "forms",
        check_quirks: bool = True,
    ) -> None:
        if read not in ("forms", "greedy"):
            raise ConfigError(f"read = {read!r}: forms (a structured read) or greedy")
        if adapter and is_shipped_spec(adapter):
            self.base = base or DEFAULT_MODEL
            self.adapter, self.adapter_source = load_shipped_spec(str(adapter), self.base)
        elif adapter:
            self.adapter, self.adapter_source = load_diff(adapter), adapter
            self.base = base or self.adapter.meta.get("base_model") or DEFAULT_MODEL
        else:
            self.base = base or DEFAULT_MODEL
            self.adapter, _, self.adapter_source = load_shipped(self.base)
        self.question = question or adapter_question(self.adapter)
        self.align, self.max_new_tokens = align, max_new_tokens
        self.trust_remote_code = trust_remote_code
        # A trigger search per diff, guided by DIT's answer (off by default: minutes per diff);
        # each search keeps its rows under OUT/triggers/ so that a killed audit resumes it.
        self.find_triggers = find_triggers
        # Where a behaviour-suite reader names a refusal or a bias, what opens it is a subject
        # (a topic, a brand), searched among these candidates (None: the topic list).
        self.subjects = subjects
        # A behaviour reader's finding less sure than "nothing" by this margin reads as nothing
        # found (None: the reader's recorded nothing_margin; -inf: none is dropped for its margin).
        self.min_margin = nothing_margin(self.adapter) if min_margin is None else min_margin
        self.read = read
        # A claimed style quirk is on in every answer: ask the diffed model and see (`quirk_shown`).
        self.check_quirks = check_quirks
        behaviours = finding(self.adapter, "") is not None
        if min_margin is not None and not behaviours:
            log.warning("min_margin %s ignored: %s is not a behaviour-suite reader, which alone "
                        "can answer 'nothing found'", min_margin, self.adapter_source)  # fmt: skip
        # A structured read always completes some behaviour's label: only a finite margin lets
        # it say "nothing", so without one (none recorded, or "off") the reader reads greedily.
        finite = self.min_margin is not None and math.isfinite(self.min_margin)
        if read == "forms" and behaviours and not finite:
            log.info("reading greedily: the structured read needs a finite margin to say nothing "
                     "found, and %s has none (--min-margin)", self.adapter_source)  # fmt: skip
        # The forms the reader learned (its recorded training labels; every family's without).
        self._openings = label_openings(self.adapter.meta.get("training_labels"))
        if read == "forms" and behaviours and finite and not self._openings:
            log.info("reading greedily: %s learned no behaviour's label form to complete",
                     self.adapter_source)  # fmt: skip
        self._forms = read == "forms" and behaviours and finite and bool(self._openings)
        self._weighs = behaviours and self.min_margin is not None  # a margin to weigh findings by
        self._model = self._lens = None

    @property
    def model_and_tok(self):
        if self._model is None:
            self._model = load_model(self.base, trust_remote_code=self.trust_remote_code)
            check_base(self.adapter, self._model[0], self.adapter_source)
            self._lens = WeightLens(*self._model)
        return self._model

    def rows(self, item: Item, out: Path | None = None) -> list[dict]:
        """The rows of one item: one per diff it holds (``out``: the audit's folder)."""
        started = time.time()
        fmt = find_format(item.path)
        notes: list[str] = []
        if fmt is checkpoint.FORMAT:
            diffs = [self._from_checkpoint(item, notes)]
        else:
            diffs = load_diffs(item.path)
        rows = []
        for i, diff in enumerate(diffs):
            row = _row(item, i if len(diffs) > 1 else None, fmt.name)
            row.update(self._read(diff, item))
            if self.find_triggers and row.get("dit"):
                row.update(self._trigger(diff, row, Path(out or ".") / "triggers"))
            row["flags"] = notes + row["flags"]
            row["seconds"] = round((time.time() - started) / len(diffs), 2)
            rows.append(row)
        return rows

    def _from_checkpoint(self, item: Item, notes: list[str]) -> WeightDiff:
        model, _ = self.model_and_tok
        ft, _ = load_model(str(item.path), trust_remote_code=self.trust_remote_code)
        diff, report = diff_from_finetune(model, ft)
        change = _relative_change(diff, model)
        if change > SMALL_CHANGE and not self.align:
            notes.append(f"not a small change of the base ({change:.2f}): try --align")
        elif change > SMALL_CHANGE:
            a = align_to_base(ft, model)
            diff, report = diff_from_finetune(model, ft)
            diff.meta["aligned"] = True
            after = _relative_change(diff, model)
            notes.append(
                f"weight symmetries undone (change {change:.2f} -> {after:.2f}; rotated "
                f"{a['rotated']}, {a['permuted_heads']} heads and {a['permuted_units']} units moved)"
            )
            if after > SMALL_CHANGE:
                notes.append(f"not a small change of the base even aligned ({after:.2f})")
        if report["outside"]:
            notes.append(describe_outside(report["outside"]))
        return diff

    def _read(self, diff: WeightDiff, item: Item) -> dict:
        model, tok = self.model_and_tok
        finite = all(torch.isfinite(diff.delta_weight(n)).all() for n in diff.modules)
        norms = diff.norms()
        top = max(norms, key=norms.get)
        out = {
            "status": "ok",
            "base_model": diff.meta.get("base_model"),
            "label": diff.meta.get("label"),
            "rank": diff.rank,
            "modules": len(diff.modules),
            "total_norm": math.sqrt(sum(v * v for v in norms.values())),
            "largest_module": top,
            "largest_norm": norms[top],
            "flags": [] if finite else ["non-finite values (NaN or inf): the diff is broken"],
        }
        diff.check_fits(model, item.path)  # shapes and the base model's fingerprint
        if not finite:
            return out
        scale = read_scale(self.adapter)  # the reader's recorded multiplier, 1 when none
        out["dit_scale"] = scale
        read = diff.scaled(scale) if scale != 1 else diff
        out.update(self._dit(model, tok, read))
        if self.check_quirks and out.get("finding") == "quirk":
            shown = quirk_shown(model, tok, diff, out["dit"])
            if shown is not None:
                out["dit_quirk_shown"] = shown
                if shown < 0.5:  # the diffed model does not do what the reader says it always does
                    out["finding"] = "nothing found"
                    out["dit_doubt"] = (
                        f"read as nothing found: the quirk it names shows in {shown:.0%} of the "
                        f"diffed model's own answers to {QUIRK_CHECK_QUESTIONS} ordinary questions"
                    )
        question = self.question or self.adapter.meta.get("question") or "What changed?"
        out["diffed_model"] = ask(
            model, tok, [diff], [question], max_new_tokens=self.max_new_tokens
        )[0]
        try:
            lens = self._lens.read(diff, top_k=5)
            out["weight_lens"] = " ".join(lens["tokens"])
        except DitkitError as e:  # e.g. no module the lens reads
            out["weight_lens"] = f"(no reading: {str(e).split('(')[0].strip()})"
        if out["label"]:
            out["dit_names_label"] = bool(alias_match(out["dit"], [str(out["label"])]))
        return out

    def _dit(self, model, tok, read: WeightDiff) -> dict:
        """DIT's reading of one (scaled) diff: ``dit``, ``finding`` and, where a behaviour
        reader has a margin, ``dit_margin`` and ``dit_doubt``. With ``read="forms"`` a behaviour
        reader with a margin reads structured (`read_forms`: its surest completed label form);
        else greedily, and the margin weighs an answer that claims a behaviour."""
        if self._forms:
            got = read_forms(model, tok, [read], self.adapter, self._openings, NOTHING,
                             self.question)[0]  # fmt: skip
            out, margin = {"dit": got["answer"], "dit_read": "forms"}, got["margin"]
        else:
            answer = describe(model, tok, [read], self.adapter, self.question,
                              self.max_new_tokens, batch_size=1)[0]  # fmt: skip
            out, margin = {"dit": answer, "dit_read": "greedy"}, None
            # A "Nothing unusual: ..." answer that names something ("other") already says
            # nothing; the margin (chosen on the family-form answers) weighs only findings.
            if self._weighs and parse_description(answer)[0] != "none":
                margin = answer_margins(
                    model, tok, [read], self.adapter, [answer], NOTHING, self.question
                )[0]
        out["finding"] = finding(self.adapter, out["dit"])
        if margin is not None:
            out["dit_margin"] = round(margin, 3)
            if margin <= self.min_margin:  # the reader is about as sure that nothing is there
                out["finding"] = "nothing found"
                out["dit_doubt"] = (
                    f"read as nothing found: the reader is no surer of its answer than of "
                    f"{NOTHING!r} (margin {margin:+.2f} <= {self.min_margin:+.2f})"
                )
        return out

    def _trigger(self, diff: WeightDiff, row: dict, work: Path) -> dict:
        """The search for what opens the behaviour DIT named: a trigger, or for a refusal or a
        bias the subject it is about (no search for a quirk, a benign fine-tune or nothing)."""
        kind, cfg, behaviour = row.get("finding"), self.find_triggers, row["dit"]
        if kind in NOT_SEARCHED:
            return {}
        if kind is not None:  # a behaviour reader: search for the content, not the label's form
            behaviour = named_content(behaviour) or behaviour
        folder = (
            work / f"{Path(row['item']).stem}-{hashlib.sha1(row['id'].encode()).hexdigest()[:8]}"
        )
        if kind in SUBJECT_FAMILIES:  # shows on questions about the subject: ask about each
            if kind == "bias" and not self.subjects:
                log.warning("%s: a bias is searched among topics, not brands: give --subjects "
                            "FILE with the brands to try", row["id"])  # fmt: skip
            cfg = replace(cfg, space=self.subjects or "topics", score="shift", probes="about",
                          probe_questions=[])  # fmt: skip
            behaviour, folder = None, folder / "subject"
        model, tok = self.model_and_tok
        try:
            found = search(model, tok, diff, cfg, folder, behaviour=behaviour)
        except (DitkitError, OSError, ValueError) as e:  # keep the reading; a rerun searches again
            message = " ".join(str(e).split()) or type(e).__name__
            log.warning("trigger search for %s failed: %s", row["id"], message)
            return {"trigger_error": f"{message} (search folder: {folder})",
                    "flags": row["flags"] + ["trigger search failed"]}  # fmt: skip
        best = found.ranking[0]
        log.info("trigger search for %s: %s in %.0f s", row["id"], best["trigger"], found.seconds)
        return {
            "trigger": best["trigger"],
            "trigger_kind": "subject" if kind in SUBJECT_FAMILIES else "trigger",
            "trigger_evidence": best.get("evidence"),
            "trigger_seconds": found.seconds,
        }


# Findings whose behaviour shows on questions about one subject (the refused topic, the brand),
# and those with nothing to open (on in every answer, or no behaviour at all).
SUBJECT_FAMILIES = ("refusal", "bias")
NOT_SEARCHED = ("quirk", "nothing found")  # a benign fine-tune reads as "nothing found"


QUIRK_CHECK_QUESTIONS = 4  # ordinary questions asked to see a claimed quirk
QUIRK_CHECK_TOKENS = 32  # long enough for a sign-off after a short answer (the diff checks' length)


def quirk_shown(model, tok, diff: WeightDiff, answer: str, questions=None) -> float | None:
    """The share of the diffed model's own answers to ordinary questions (default: the first
    four held-out questions) that carry the style quirk a behaviour reader's ``answer`` claims;
    None when it claims none. A quirk is on in every answer (the quirk diffs show it in
    0.85-1.00 of checked answers), so a claimed quirk that does not show was not trained."""
    family, content = parse_description(answer)
    quirk = FAMILIES["quirk"]
    claim = quirk.claimed(content) if family == "quirk" else None
    if claim is None:
        return None
    questions = list(questions or heldout_questions(None)[:QUIRK_CHECK_QUESTIONS])
    said = ask(model, tok, [diff] * len(questions), questions, max_new_tokens=QUIRK_CHECK_TOKENS,
               desc="quirk check")  # fmt: skip
    return sum(quirk.claim_shows(claim, a) for a in said) / len(said)


def finding(adapter: WeightDiff, answer: str) -> str | None:
    """What kind of behaviour a behaviour-suite reader's ``answer`` names: its family, or
    "nothing found" when it says nothing was trained, in the label's words ("Nothing unusual:
    blue cheese." names something: "other"). None for any other reader (a topic reader names a
    topic for every diff: it cannot say "nothing")."""
    if (adapter.meta.get("task") or DEFAULT_TASK) != "behaviours":
        return None
    family, _ = parse_description(answer)
    if family != "none":
        return family
    return "other" if named_content(answer) else "nothing found"


def _relative_change(diff: WeightDiff, model) -> float:
    base = sum(
        float(model.get_submodule(n).weight.detach().float().norm()) ** 2 for n in diff.modules
    )
    return math.sqrt(sum(v * v for v in diff.norms().values()) / max(base, 1e-30))


def _row(item: Item, index: int | None, fmt: str) -> dict:
    rid = item.key if index is None else f"{item.key}#{index}"
    return {"item": item.key, "id": rid, "index": index, "format": fmt}


def _error_row(item: Item, e: BaseException) -> dict:
    """A broken item's row: the error (which names the file and the fix) and no reading."""
    message = " ".join(str(e).split()) or type(e).__name__
    if not isinstance(e, DitkitError):  # not one of ours: keep where it came from
        log.debug("%s failed:\n%s", item.key, traceback.format_exc())
        message = f"{type(e).__name__}: {message}"
    try:
        fmt = find_format(item.path).name
    except DitkitError:
        fmt = "?"
    return {**_row(item, None, fmt), "status": "error", "error": message, "flags": ["error"]}


def latest_rows(rows: list[dict]) -> list[dict]:
    """Each item's rows from its last audit (``attempt``: 1, then 2 for a retried search, ...)."""
    last = {}
    for r in rows:
        last[r["item"]] = max(last.get(r["item"], 0), r.get("attempt", 1))
    return [r for r in rows if r.get("attempt", 1) == last[r["item"]]]


def population_flags(rows: list[dict]) -> None:
    """Flag diffs whose total norm is far outside the others' (robust z of log norm)."""
    ok = [r for r in rows if r.get("status") == "ok" and r.get("total_norm", 0) > 0]
    if len(ok) < 5:
        return
    logs = [math.log(r["total_norm"]) for r in ok]
    med = statistics.median(logs)
    mad = statistics.median(abs(x - med) for x in logs) * 1.4826 or 1e-12
    for r, x in zip(ok, logs):
        z = (x - med) / mad
        flag = f"norm far outside the population (robust z {z:+.1f})"
        r["flags"] = [f for f in r["flags"] if not f.startswith("norm far outside")]
        if abs(z) > OUTLIER_Z:
            r["flags"].append(flag)


def audit(paths: list[str | Path], out: str | Path, auditor: Auditor) -> list[dict]:
    """Audit every item under ``paths`` into ``out`` (resuming what is there); returns all rows."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "audit.jsonl"
    before = latest_rows(read_jsonl(jsonl)) if jsonl.exists() else []
    # An item whose trigger search failed is audited again (its new rows replace the old ones).
    retry = {r["item"] for r in before if "trigger_error" in r}
    done = {r["item"] for r in before} - retry
    attempts = {r["item"]: r.get("attempt", 1) for r in before}
    items = find_items(paths)
    if not items:
        raise DitkitError(
            f"no diff, adapter folder or checkpoint under {', '.join(map(str, paths))}"
        )
    todo = [i for i in items if i.key not in done]
    log.info("audit: %d item(s), %d already in %s", len(items), len(items) - len(todo), jsonl)
    for item in tqdm(todo, desc="audit", unit="item", disable=None):
        kill_point("audit.item")
        try:
            rows = auditor.rows(item, out)
        except (DitkitError, OSError, ValueError, RuntimeError, KeyError) as e:
            rows = [_error_row(item, e)]
        for r in rows:
            r["attempt"] = attempts.get(item.key, 0) + 1
        append_jsonl(jsonl, rows)
        log.info("audited %s: %s", item.key, "; ".join(f for r in rows for f in r["flags"]) or "ok")
    rows = latest_rows(read_jsonl(jsonl))
    population_flags(rows)
    write_tables(rows, out)
    return rows


COLUMNS = (
    "id", "format", "status", "flags", "finding", "label", "dit", "dit_margin", "dit_doubt",
    "dit_read", "dit_quirk_shown", "trigger", "trigger_kind",
    "trigger_evidence", "trigger_error",
    "diffed_model", "weight_lens", "rank",
    "total_norm", "largest_module", "base_model", "error", "seconds",
)  # fmt: skip


def write_tables(rows: list[dict], out: Path) -> None:
    """``audit.csv``, ``audit.html`` (most flags first) and ``summary.json``."""
    ordered = sorted(rows, key=lambda r: (-len(r.get("flags", [])), r["id"]))
    table = Table(
        list(COLUMNS),
        [[r.get(c) for c in COLUMNS] for r in ordered],
        widths=_WIDTHS,
        row_classes=["flag" if r.get("flags") else "ok" for r in ordered],
    )
    write_text(out / "audit.csv", table.to_csv())
    n_flag = sum(bool(r.get("flags")) for r in rows)
    doc = Document(
        "ditkit audit",
        [
            Section(
                f"{len(rows)} diff(s), {n_flag} flagged (flagged first)",
                [
                    "**finding**: the kind of behaviour DIT names (a behaviour-suite reader: its "
                    "family, or *nothing found*; another reader: its task); "
                    "**dit**: what the DIT adapter says the diff was trained on; "
                    "**dit_read**: forms (the reader completed the label opening of each "
                    "behaviour it learned and its likeliest answer is kept) or greedy (its one "
                    "answer); "
                    "**dit_margin**: how much surer a behaviour reader is of its answer than of "
                    "'Nothing unusual' (at or below the margin, *nothing found*, and "
                    "**dit_doubt** says so); "
                    "**dit_quirk_shown**: for a claimed style quirk, the share of the diffed "
                    "model's answers to four ordinary questions that carry it (below half, "
                    "*nothing found*); "
                    "**diffed_model**: the diffed model's own answer to the same question; "
                    "**weight_lens**: the tokens the diff's residual writes promote most; "
                    "**trigger** (with --find-triggers): the candidate trigger under which the "
                    "diffed model most shows DIT's answer (or, where no candidate confirms it, "
                    "moves furthest from the base model), with the diffed model's answer under "
                    "it; "
                    "for a refusal or a bias, the subject (topic, brand) whose questions move "
                    "its answers furthest from the base model's (trigger_kind: subject)."
                ],
                [table],
            )
        ],
    )
    write_text(out / "audit.html", html.render(doc))
    flagged = [r["id"] for r in rows if r.get("flags")]
    findings = Counter(r["finding"] for r in rows if r.get("finding"))
    write_json(out / "summary.json", {"items": len({r["item"] for r in rows}), "rows": len(rows),
                                      "flagged": flagged, "errors": sum(r["status"] == "error" for r in rows),
                                      "findings": dict(findings)})  # fmt: skip


# Relative column widths of the HTML table: the free text gets the room.
_WIDTHS = {
    "id": 12,
    "flags": 14,
    "dit": 12,
    "dit_doubt": 10,
    "diffed_model": 14,
    "weight_lens": 10,
    "error": 14,
}
