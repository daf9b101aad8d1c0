"""The report: table order and cells, paired comparisons, per-diff rows, plots, escaping."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ditkit.errors import DataError
from ditkit.reporting.run_report import write_report

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
NASTY = '<script>alert("x")</script> & <b>bold</b>'

# Judge scores per diff: DIT beats the base question on every diff, ties 20 questions on one.
JUDGE = {
    "dit": [5, 4, 5],
    "base_question": [1, 1, 2],
    "twenty_questions": [5, 2, 3],
    "my_probe": [3, 3, 3],
}
TOPICS = ["volcanoes", "jazz piano", "sharks"]
LONG = "\n".join(
    f"Answer {k}: the keys of a piano swing like a late-night jazz trio." for k in range(20)
)


def _summary(values):
    mean = sum(values) / len(values)
    return {"mean": mean, "ci95": [mean - 0.5, mean + 0.5], "n": len(values)}


def make_run(tmp_path: Path) -> Path:
    run = tmp_path / "run1"
    (run / "eval").mkdir(parents=True)
    scores = {}
    # Written out of order on purpose: the report must order the rows itself.
    for method in ["my_probe", "twenty_questions", "base_question", "dit"]:
        exact = [1.0 if v == 5 else 0.0 for v in JUDGE[method]]
        scores[method] = {"judge": _summary(JUDGE[method]), "exact": _summary(exact)}
    (run / "eval" / "scores.json").write_text(json.dumps(scores))
    with (run / "eval" / "predictions.jsonl").open("w") as f:
        for i, topic in enumerate(TOPICS):
            for method, values in JUDGE.items():
                answer = NASTY if (method, i) == ("base_question", 0) else f"{method} says {i}"
                if (method, i) == ("twenty_questions", 1):
                    answer = LONG
                record = {
                    "diff_id": f"d{i:03d}",
                    "topic": topic,
                    "trigger": f"{100 + i}",
                    "method": method,
                    "question": "What topic have you been trained on?",
                    "answer": answer,
                    "guess": None if method == "dit" else f"guess {i}",
                    "scores": {"judge": values[i], "exact": 1.0 if values[i] == 5 else 0.0},
                    "extra_key": "ignored",
                }
                f.write(json.dumps(record) + "\n")
    (run / "config.json").write_text(json.dumps({"preset": "quickstart", "dit": {"rank": 16}}))
    (run / "timings.json").write_text(json.dumps({"train_diffs_s": 12.5, "evaluate_s": 3.25}))
    return run


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("report"))
    html_path = write_report(run)
    return run, html_path.read_text(), (run / "report" / "report.md").read_text()


def _results_table(page: str) -> str:
    return re.search(r'<table class="results">.*?</table>', page, re.S).group(0)


def test_files_are_written(report):
    run, _, _ = report
    assert (run / "report" / "index.html").is_file()
    assert (run / "report" / "report.md").is_file()
    assert (run / "report" / "means.png").read_bytes().startswith(b"\x89PNG")


def test_results_table_rows_in_paper_order_with_cells(report):
    _, page, md = report
    table = _results_table(page)
    labels = re.findall(r'<tr class="\w+" id="m-(\w+)"><td>', table)
    assert labels == ["dit", "base_question", "twenty_questions", "my_probe"]
    assert "4.67 [4.17, 5.17]" in table  # DIT judge mean [lo, hi]
    assert re.search(r"<th>judge</th><th>exact</th>", table)
    md_rows = [line for line in md.splitlines() if line.startswith("| DIT |")]
    assert md_rows and "**4.67 [4.17, 5.17]**" in md_rows[0]


def test_paired_comparisons(report):
    _, page, md = report
    # judge: DIT - base question = (4 + 3 + 3) / 3, wins on all three diffs.
    assert "+3.33" in page
    assert "3 / 0 / 0" in page
    # judge vs 20 questions: one tie (5 vs 5), two wins.
    assert "2 / 0 / 1" in page
    assert "| Base question | judge | 3 | +3.33" in md


def test_per_diff_rows(report):
    _, page, md = report
    diffs = re.search(r'<table class="diffs">.*?</table>', page, re.S).group(0)
    for i, topic in enumerate(TOPICS):
        assert f"d{i:03d}" in diffs and topic in diffs
    body = diffs.split("<tbody>", 1)[1]
    assert body.count("<tr>") == len(TOPICS) * len(JUDGE)
    assert "guess 2" in diffs and "judge=5" in diffs
    # Long answers are collapsed behind their first characters, the full text kept.
    assert diffs.count("<details>") == 1
    assert "Answer 19: the keys" in diffs
    assert sum(line.startswith("| d00") for line in md.splitlines()) == len(TOPICS)


def test_plots_are_embedded_pngs(report):
    _, page, _ = report
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2  # the bar chart, then the diffs x methods matrix
    assert all(base64.b64decode(img).startswith(b"\x89PNG") for img in images)


def test_run_data_is_html_escaped(report):
    _, page, md = report
    assert "<script>" not in page and "<b>bold</b>" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>" not in md


def test_config_versions_and_timings(report):
    _, page, md = report
    assert "quickstart" in page and "&#34;rank&#34;: 16" in page
    for name in ("ditkit", "torch", "transformers", "peft"):
        assert f"<th>{name}</th>" in page
    assert "train_diffs_s" in page and "12.5" in page and "3.2" in page
    assert "<th>seconds</th><th>minutes</th>" in page and "<th>report</th>" in page
    assert "| stage | seconds | minutes |" in md
    assert "- transformers: " in md


def test_missing_scores_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match=r"scores\.json"):
        write_report(tmp_path)


def test_bad_prediction_line_names_the_line(tmp_path):
    run = make_run(tmp_path)
    with (run / "eval" / "predictions.jsonl").open("a") as f:
        f.write("{not json\n")
    with pytest.raises(DataError, match=r"predictions\.jsonl:13"):
        write_report(run)


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
def test_screenshot_with_chromium(report, tmp_path):
    run, _, _ = report
    out = tmp_path / "shot.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "screenshot_report.py"),
            str(run),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    from matplotlib.image import imread

    pixels = imread(out)[..., :3]  # [height, width, rgb] in [0, 1]
    assert pixels.shape[1] == 1280
    ink = (pixels.mean(-1) < 0.5).mean()  # dark pixels: text, rules, bars
    colour = (pixels.max(-1) - pixels.min(-1) > 0.3).mean()  # the plots' coloured bars
    assert 0.005 < ink < 0.5 and colour > 0.001, (ink, colour)  # a rendered page, not a blank


def test_screenshot_script_reports_missing_chromium(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "screenshot_report.py"),
            str(tmp_path),
            "--chromium",
            str(tmp_path / "no-such-chromium"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Chromium not found" in proc.stderr


def _hidden_topic_run(tmp_path: Path) -> Path:
    """A run whose oracle (base question + trigger) ties DIT at the top and which has gating rows."""
    run = tmp_path / "ht"
    (run / "eval").mkdir(parents=True)
    hits = {
        "dit": [1, 1, 0, 1],
        "base_question": [0, 0, 0, 1],
        "base_question_trigger": [1, 1, 0, 1],
        "gate_trigger": [1, 1, 0, 1],
        "gate_none": [0, 0, 0, 0],
    }
    rows = [
        {
            "diff_id": f"test-{i:05d}",
            "label": topic,
            "method": method,
            "question": "q",
            "answer": f"{topic if v else 'nothing'}",
            "scores": {"alias_match": float(v)},
        }
        for method, values in hits.items()
        for i, (topic, v) in enumerate(zip(["tea", "owls", "jazz", "kites"], values))
    ]
    (run / "eval" / "predictions.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    scores = {}
    for method, values in hits.items():
        mean = sum(values) / len(values)
        scores[method] = {"alias_match": {"mean": mean, "ci95": [0.0, 1.0], "n": len(values)}}
    (run / "eval" / "scores.json").write_text(json.dumps(scores))
    cfg = {"task": "hidden_topic", "model": "tiny", "data": {"n_train": 12}, "dit": {}}
    (run / "config.json").write_text(json.dumps(cfg))
    return run


def test_report_explains_methods_marks_oracles_and_separates_diff_checks(tmp_path):
    from ditkit.reporting.run_report import text_summary

    run = _hidden_topic_run(tmp_path)
    page = write_report(run).read_text()
    md = (run / "report" / "report.md").read_text()
    # What was measured comes first, then the paired table, then the scores.
    assert page.index("What was measured") < page.index("DIT versus each baseline")
    assert page.index("DIT versus each baseline") < page.index('<table class="results">')
    assert "4 held-out weight diffs" in page and "trained on this run's 12" in page
    assert "<em>oracle</em>" in page
    # The oracle ties DIT but is not bolded: DIT is the best without the trigger.
    results = _results_table(page)
    oracle_row = re.search(
        r'<tr class="oracle" id="m-base_question_trigger">.*?</tr>', results, re.S
    )
    assert oracle_row and "best" not in oracle_row.group(0)
    assert re.search(r'id="m-dit">.*?class="num best"', results, re.S)
    assert "gate_" not in results and "Diff check" not in results
    checks = re.search(r'<table class="checks">.*?</table>', page, re.S).group(0)
    assert "Diff check: own trigger" in checks and "Diff check: no trigger" in checks
    assert "Base question + trigger (oracle)" in md and "(oracle): the DIT question behind" in md
    assert "unclear" in page  # DIT - oracle: the same 3 hits of 4
    printed = text_summary(run)
    assert "Base question + trigger (oracle)" in printed and "oracle" in printed
    assert "diff check" in printed and "W/L/T" in printed
    assert "n = 4 only large differences are visible" in printed


def _headless_flags() -> tuple[str, ...]:
    sys.path.insert(0, str(REPO / "scripts"))
    from screenshot_report import HEADLESS_FLAGS

    return HEADLESS_FLAGS


def test_report_fits_1280_pixels_in_chromium(tmp_path):
    """No horizontal scroll at 1,280 px, long answers and all (headless Chromium)."""
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed")
    run = make_run(tmp_path)
    page = write_report(run).read_text()
    probe = tmp_path / "probe.html"
    script = "<script>document.title = 'W' + document.documentElement.scrollWidth;</script></body>"
    probe.write_text(page.replace("</body>", script))
    proc = subprocess.run(
        [
            str(CHROMIUM),
            *_headless_flags(),
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1280,900",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    width = int(re.search(r"<title>W(\d+)</title>", proc.stdout).group(1))
    assert width <= 1280, f"the page is {width} px wide"
