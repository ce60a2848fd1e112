"""Tests the run report against the partition it describes: real runs with the shipped model over real test images,
a generated 14-night history, the drift flag on a night built to drift and not on an ordinary one, the least
confident keys read back with pyarrow, failures, an image gone since, and (slow) the page as Chromium renders it."""

import html
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from model.vocabulary import CLASS_NAMES
from pipeline import score
from pipeline.report import report
from pipeline.outputs import partitions
from tests import samples
from tests.helpers import SAMPLE_INPUTS

pytestmark = pytest.mark.clock  # also run with the clock moved to another day and zone: make test-clock

BROKEN = os.path.join(SAMPLE_INPUTS, "images", "broken")
TONIGHT = "2026-11-15"


def _history(output):
    """14 earlier nights, 2026-11-01 to 2026-11-14, made up by sample_inputs/history.py (an even class mix)."""
    result = subprocess.run([sys.executable, os.path.join(SAMPLE_INPUTS, "history.py"), output, "--nights", "14",
                             "--until", "2026-11-14"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _tonight(test_split, folder, bags_share):
    """400 real test images: an even mix of true classes, or `bags_share` of them bags; plus the broken samples."""
    generator = np.random.default_rng(5)
    labels = test_split.labels
    bags = generator.choice(np.flatnonzero(labels == 8), int(400 * bags_share), replace=False)
    others = generator.choice(np.flatnonzero(labels != 8), 400 - len(bags), replace=False)
    chosen = np.sort(np.concatenate([bags, others])) if bags_share else np.sort(generator.choice(len(labels), 400,
                                                                                                  replace=False))
    samples.write_pngs(test_split.images[chosen], str(folder), [samples.file_name(i, labels[i]) for i in chosen])
    for name in os.listdir(BROKEN):
        shutil.copy(os.path.join(BROKEN, name), folder / name)


def _run(test_split, shipped_model, tmp_path, bags_share):
    inputs, output = tmp_path / "in", str(tmp_path / "out")
    _tonight(test_split, inputs, bags_share)
    _history(output)
    code = score.run(["--input", str(inputs), "--output", output, "--model", shipped_model, "--run_date", TONIGHT,
                      "--progress_seconds", "0", "--max_error_rate", "0.5"])
    assert code == score.EXIT_OK
    partition = os.path.join(output, f"dt={TONIGHT}")
    with open(os.path.join(partition, report.REPORT), encoding="utf-8") as stream:
        return partition, stream.read()


def _flagged(page) -> list:
    found = re.search(r"<b>Flagged: ([^<]*)</b>", page)
    return html.unescape(found.group(1)).split(", ") if found else []


def test_an_ordinary_night_is_reported_in_full_and_not_flagged(test_split, shipped_model, tmp_path, capsys):
    partition, page = _run(test_split, shipped_model, tmp_path, bags_share=0)
    assert f"report: {partition}/report.html" in capsys.readouterr().out
    manifest = json.load(open(os.path.join(partition, partitions.MANIFEST)))
    counts = manifest["counts"]
    assert (counts["scored"], counts["failed"]) == (400, 2)
    assert f"<b class=''>{counts['scored']:,}</b><span>scored</span>" in page
    assert f"<b class='bad'>{counts['failed']:,}</b><span>failed</span>" in page
    assert "succeeded (exit 0)" in page and manifest["model"]["version"] in page
    assert _flagged(page) == [] and "Every class's share is within its usual range." in page
    assert "previous 14 of up to 14 nights (2026-11-01 to 2026-11-14)" in page
    for name in CLASS_NAMES:
        assert f"tonight {counts['per_class'][name] / 400:.1%} ({counts['per_class'][name]:,})" in html.unescape(page)
    # The contact sheet: the 24 least confident rows of the partition, both pictures of each, in order.
    scores = pq.read_table(os.path.join(partition, "scores")).to_pylist()
    least = [row["key"] for row in sorted(scores, key=lambda row: (row["confidence"], row["key"]))[:24]]
    shown = [html.unescape(key.replace("<wbr>", ""))
             for key in re.findall(r"<div class=key(?: title='[^']*')?>(.*?)</div>", page)]
    assert shown == least
    assert page.count("<img class='seen'") == page.count("<img class='original'") == 24
    # Failures come right after the run's figures: each type with its count, its message and its keys.
    run_heading = "<h2>" + html.escape("Tonight's run") + "</h2>"
    assert page.index(run_heading) < page.index("<h2>Failures (2)</h2>") < page.index("<h2>Class mix")
    assert "<h2>Class mix against the 14 previous nights</h2>" in page
    errors = pq.read_table(os.path.join(partition, "errors")).to_pylist()
    for row in errors:
        assert html.escape(row["key"]) in page.replace("<wbr>", "") and f"<td class=''>{row['error_type']}</td>" in page
        assert html.escape(row["error_message"][:60]) in page
    # The duration is the whole command's, the scoring time beside it.
    assert manifest["command_seconds"] > manifest["seconds"] > 0
    assert f"{manifest['command_seconds']:,.1f} s</b><span>duration (scoring {manifest['seconds']:,.1f} s)" in page
    # 400 images a night can see a shift of a class at 10% of about 4.5 points: no warning that tonight is too small.
    assert report.smallest_flagged_shift(0.1, 400) == pytest.approx(3 * np.sqrt(0.09 / 400))
    assert "too few to flag a small shift" not in page


def test_a_night_with_a_shifted_class_mix_is_flagged(test_split, shipped_model, tmp_path):
    _, page = _run(test_split, shipped_model, tmp_path, bags_share=0.4)
    assert "Bag" in _flagged(page)
    bag_panel = page[page.index("<div class=name>Bag</div>"):]
    assert bag_panel.index("more than usual") < bag_panel.index("<div class=name>", 1)


def test_the_report_is_rebuilt_for_any_partition_and_notes_images_gone_since(test_split, shipped_model, tmp_path,
                                                                              capsys):
    partition, page = _run(test_split, shipped_model, tmp_path, bags_share=0)
    least_confident = min(pq.read_table(os.path.join(partition, "_sheet.parquet")).to_pylist(),
                          key=lambda row: (row["confidence"], row["key"]))
    os.remove(least_confident["key"])
    target = str(tmp_path / "rebuilt.html")
    assert report.main([partition, "--to", target, "--images", "5", "--history", "3"]) == 0
    rebuilt = open(target, encoding="utf-8").read()
    assert rebuilt.count("gone since it was scored") == 1 and rebuilt.count("<img class='seen'") == 4
    assert "previous 3 of up to 3 nights (2026-11-12 to 2026-11-14)" in rebuilt
    assert report.main([str(tmp_path / "out" / "dt=2026-12-01")]) == 2
    assert "is not a published partition" in capsys.readouterr().err


def test_a_first_small_night_says_there_is_no_history_and_what_it_cannot_see(shipped_model, tmp_path):
    output = str(tmp_path / "out")
    assert score.run(["--input", os.path.join(SAMPLE_INPUTS, "images"), "--output", output, "--model", shipped_model,
                      "--run_date", TONIGHT, "--progress_seconds", "0", "--max_error_rate", "0.5"]) == score.EXIT_OK
    page = open(os.path.join(output, f"dt={TONIGHT}", report.REPORT), encoding="utf-8").read()
    assert "<h2>Class mix (no earlier nights yet)</h2>" in page and "previous 14" not in page
    assert "0 earlier nights found; flags need at least 3" in page
    scored = json.load(open(os.path.join(output, f"dt={TONIGHT}", partitions.MANIFEST)))["counts"]["scored"]
    shift = report.smallest_flagged_shift(0.1, scored)
    assert shift > 0.1  # a few dozen images: only a large shift can be seen
    assert (f"Tonight's {scored:,} images are too few to flag a small shift:</b> a class at 10% of the images is "
            f"flagged only if it moves by more than {shift:.1%}") in html.unescape(page)
    # Rebuilt by the command, nothing but its one line reaches the console (no library's warnings).
    rebuilt = subprocess.run([sys.executable, "-m", "pipeline.report", os.path.join(output, f"dt={TONIGHT}"), "--to",
                              str(tmp_path / "again.html")], capture_output=True, text=True, timeout=120)
    assert (rebuilt.returncode, rebuilt.stderr, rebuilt.stdout) == (0, "", f"wrote {tmp_path / 'again.html'}\n")


def test_usual_band_follows_the_history_and_tonights_noise():
    assert report.band([0.1, 0.1], 1000) is None  # too few nights to say
    low, high = report.band([0.10, 0.11, 0.09, 0.10, 0.10], 1000)
    assert low < 0.10 < high and high - low == pytest.approx(2 * 3 * np.sqrt(0.1 * 0.9 / 1000))
    wide = report.band([0.05, 0.15, 0.10, 0.08, 0.12], 1000)
    assert wide[1] - wide[0] > high - low  # nights that vary make a wider band
    assert report.band([0.1] * 5, 10**9)[1] - 0.1 == pytest.approx(0.01)  # never narrower than one point


@pytest.mark.slow
def test_the_report_renders_in_chromium(test_split, shipped_model, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("Chromium is missing: `apt-get install -y chromium` (.ci/run installs it)")
    partition, _ = _run(test_split, shipped_model, tmp_path, bags_share=0.4)
    url = "file://" + os.path.join(partition, report.REPORT)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert len(re.findall(r"<img ", dom)) == 48 and re.search(r"Flagged: [^<]*Bag", dom)
    shot = str(tmp_path / "report.png")
    subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1280,2400", url], capture_output=True,
                   timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1280) and pixels.std() > 20  # a page, not a blank one
    dark_rows = (pixels < 128).mean(axis=1)
    assert (dark_rows > 0.01).sum() > 400  # text, charts and pictures all the way down


@pytest.mark.parametrize("count", [1, 2, 7_777, 20_000])
def test_tonights_confidence_is_gathered_a_batch_at_a_time_and_equals_numpys(tmp_path, count):
    """The confidence section's counts, histograms and median, gathered over row batches of several files, equal
    numpy's over the whole night at once (the median exactly, for odd and even counts, ties included)."""
    import pyarrow as pa

    generator = np.random.default_rng(count)
    labels = generator.integers(0, 10, count).astype(np.int32)
    confidence = np.round(generator.uniform(0.1, 1.0, count), 3).astype(np.float32)  # rounded: many ties
    folder = tmp_path / "scores"
    folder.mkdir()
    for part, rows in enumerate(np.array_split(np.arange(count), 3)):
        pq.write_table(pa.table({"label_index": labels[rows], "confidence": confidence[rows]}),
                       folder / f"part-{part}.parquet", row_group_size=1000)
    found = report.Confidence.of(str(folder), 10, 0.6)
    assert found.median == float(np.median(confidence))
    edges = np.linspace(0.0, 1.0, report.BINS + 1)
    for index in range(10):
        mine = confidence[labels == index]
        assert found.predicted[index] == len(mine) and found.below[index] == int((mine < 0.6).sum())
        assert found.histograms[index].tolist() == np.histogram(mine, bins=edges)[0].tolist()
