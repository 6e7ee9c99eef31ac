"""The data audit on generated images: duplicates, near duplicates, label conflicts, blank/corrupt images, cells
pasted over foreign pictures; report, contact sheets, cleaning, the leak-free split and `bcauto audit`."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from bcauto.audit import (
    AuditOptions,
    audit,
    clean_dataset,
    near_duplicate_groups,
    write_clean_npz,
)
from bcauto.audit.command import run_audit_command
from bcauto.cli import build_parser, main
from bcauto.data import Dataset
from bcauto.data.split import stratified_split
from bcauto.errors import BcautoError
from bcauto_builtin.sources import BLOOD_CELL_CLASSES
from bcauto_builtin.sources.synthetic import generate

SIZE = 64


def jpeg(image: np.ndarray, quality: int = 80) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("RGB"))


def near_copy(image: np.ndarray, rng) -> np.ndarray:
    """Cropped by 3 pixels and resized back, 5% brighter, re-encoded."""
    left, top = (int(v) for v in rng.integers(0, 4, 2))
    cropped = Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BILINEAR, box=(left, top, SIZE - 3 + left, SIZE - 3 + top))
    return jpeg(np.clip(np.asarray(cropped, float) * 1.05, 0, 255).astype(np.uint8))


def foreign(image: np.ndarray, rng, kind: str) -> np.ndarray:
    """The centre of ``image`` (the cell) pasted over a drawing or a photo-like texture."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    if kind == "cartoon":
        background = np.empty((SIZE, SIZE, 3))
        background[:] = rng.integers(0, 256, 3)
        for _ in range(5):
            y0, x0 = rng.uniform(0, 1, 2)
            shape = (np.abs(yy - y0) < rng.uniform(0.05, 0.3)) & (np.abs(xx - x0) < rng.uniform(0.05, 0.3))
            background[shape] = rng.integers(0, 256, 3)
    else:  # a leafy or rocky texture: a few random waves through a natural colour ramp
        field = sum(np.sin(2 * np.pi * (rng.uniform(1, 9) * xx + rng.uniform(1, 9) * yy) + rng.uniform(0, 6)) for _ in range(6))
        field = (field - field.min()) / np.ptp(field)
        low, high = np.array([[20, 60, 10], [60, 50, 40]][rng.integers(2)]), np.array([[140, 200, 90], [200, 190, 170]][rng.integers(2)])
        background = low + field[..., None] * (high - low) + rng.normal(0, 6, (SIZE, SIZE, 3))
    cell = np.hypot(yy - 0.5, xx - 0.5) < 0.3
    return jpeg(np.where(cell[..., None], image, np.clip(background, 0, 255)).astype(np.uint8), 90)


@pytest.fixture(scope="module")
def dirty():
    """400 synthetic cells plus known contamination; returns (dataset, truth dict)."""
    rng = np.random.default_rng(3)
    images, labels = generate(400, SIZE, seed=11)
    images, labels = list(images), list(labels)
    truth = {"foreign": list(range(40)), "exact": [], "near": [], "conflicting": [], "blank": []}
    for i in truth["foreign"]:
        images[i] = foreign(images[i], rng, "cartoon" if i % 2 else "photo")
    truth["clean"] = list(range(60, 400))  # untouched and never copied

    def add(image, label):
        images.append(image)
        labels.append(label)
        return len(images) - 1

    for source in range(40, 45):  # exact copies, same label
        truth["exact"].append((add(images[source].copy(), labels[source]), source))
    for source in range(45, 50):  # near copies, same label
        truth["near"].append((add(near_copy(images[source], rng), labels[source]), source))
    for source in (50, 51):  # exact copies filed under another class
        copy = add(images[source].copy(), (labels[source] + 1) % 8)
        truth["exact"].append((copy, source))
        truth["conflicting"] += [copy, source]
    copy = add(near_copy(images[52], rng), (labels[52] + 3) % 8)  # a near copy under another class
    truth["near"].append((copy, 52))
    truth["conflicting"] += [copy, 52]
    blank = np.full((SIZE, SIZE, 3), 200, np.uint8)
    truncated = images[53].copy()
    truncated[SIZE // 2 :] = 128
    noise = rng.integers(0, 256, (SIZE, SIZE, 3)).astype(np.uint8)
    truth["blank"] = [add(blank, 0), add(truncated, labels[53]), add(noise, 2)]
    data = Dataset(np.stack(images), np.array(labels, np.int64), BLOOD_CELL_CLASSES, "test-dirty")
    return data, truth


@pytest.fixture(scope="module")
def report(dirty):
    return audit(dirty[0])


def test_exact_duplicates_found_and_only_them(dirty, report):
    _, truth = dirty
    groups = report.group_ids("exact_duplicates")
    for copy, source in truth["exact"]:
        assert groups[copy] >= 0 and groups[copy] == groups[source]
    assert len(report.groups["exact_duplicates"]) == len(truth["exact"])
    assert set(report.flagged_indices(["exact_duplicates"]).tolist()) == {copy for copy, _ in truth["exact"]}  # first kept


def test_near_duplicates_survive_crop_brightness_and_jpeg(dirty, report):
    _, truth = dirty
    groups = report.group_ids("near_duplicates")
    for copy, source in truth["near"]:
        assert groups[copy] >= 0 and groups[copy] == groups[source], (copy, source)
    grouped = {i for group in report.groups["near_duplicates"] for i in group}
    assert not grouped & set(truth["clean"][40:]), "unrelated images grouped as near duplicates"


def test_copies_with_conflicting_labels_are_flagged_all(dirty, report):
    _, truth = dirty
    conflicts = set(report.flagged_indices(["label_conflicts"]).tolist())
    assert set(truth["conflicting"]) <= conflicts
    same_label_copies = {c for c, _ in truth["exact"] + truth["near"]} - set(truth["conflicting"])
    assert not conflicts & same_label_copies
    assert any("filed as" in reason for reason in report.reasons[truth["conflicting"][0]])


def test_blank_truncated_and_noise_images(dirty, report):
    _, truth = dirty
    assert report.flagged["blank_or_corrupt"] == truth["blank"]
    reasons = [report.reasons[i][0] for i in truth["blank"]]
    assert reasons[0].startswith("blank") and reasons[1].startswith("broken") and reasons[2].startswith("noise")


def test_cells_pasted_over_foreign_pictures_are_outliers(dirty, report):
    _, truth = dirty
    outliers = set(report.flagged_indices(["outliers"]).tolist())
    recall = np.mean([i in outliers for i in truth["foreign"]])
    false_positive = np.mean([i in outliers for i in truth["clean"]])
    assert recall >= 0.9, recall
    assert false_positive <= 0.03, false_positive
    assert all(report.reasons[i] for i in outliers)


def bare_frame(image: np.ndarray, kind: str) -> np.ndarray:
    """The centre of ``image`` (the cell) over a fill in the smear's own colour: flat, or the image itself far out
    of focus (its red cells smeared away). Colours stay those of the smear; only the missing red cells and detail
    show."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    pixels = image.reshape(-1, 3).astype(float)
    if kind == "flat":
        background = np.broadcast_to(np.median(pixels[pixels.sum(1) >= np.quantile(pixels.sum(1), 0.75)], 0), image.shape)
    else:
        background = ndimage.gaussian_filter(image.astype(float), (4, 4, 0))
    cell = (np.hypot(yy - 0.5, xx - 0.5) < 0.3)[..., None]
    return jpeg(np.where(cell, image, background).clip(0, 255).astype(np.uint8), 90)


def test_the_bare_frame_check_finds_cells_over_smear_coloured_fills_and_spares_soft_images():
    """A fill in the smear's own colours passes the colour check; a frame without red cells or detail must not.
    A defocused image loses detail everywhere, its cell included, and is no pasted picture. The bare-frame check
    alone (the other two switched off) must tell the two apart."""
    rng = np.random.default_rng(9)
    images, labels = generate(400, SIZE, seed=13)
    pasted, soft = np.arange(0, 30), np.arange(30, 70)
    for i in pasted:
        images[i] = bare_frame(images[i], "flat" if i % 2 else "blurred")
    for i in soft:
        sigma = rng.uniform(1.5, 2.5)
        images[i] = ndimage.gaussian_filter(images[i].astype(float), (sigma, sigma, 0)).clip(0, 255).astype(np.uint8)
    only_bare = AuditOptions(checks=("outliers",), colour_threshold=1e9, learned_threshold=1e9)
    report = audit(Dataset(images, labels, BLOOD_CELL_CLASSES, "bare"), only_bare)
    outliers = set(report.flagged_indices(["outliers"]).tolist())
    assert np.mean([i in outliers for i in pasted]) >= 0.9, sorted(outliers & set(pasted.tolist()))
    assert sum(i in outliers for i in soft) <= 1, sorted(outliers & set(soft.tolist()))
    assert sum(i in outliers for i in range(70, 400)) <= 6
    assert all(report.reasons[i][0].startswith("frame bare: far ") for i in outliers)


def test_a_cell_over_a_flat_fill_flagged_as_broken_also_gets_the_outlier_reason():
    """A cell pasted over a flat fill leaves rows of one colour above and below it, as a truncated file does: the
    image is listed as broken, and its reasons must also say what the outlier check saw, not only "damaged file"."""
    images, labels = generate(400, SIZE, seed=5)
    pasted = np.arange(8)
    fill = np.median(images[20:].reshape(-1, 3), axis=0).astype(np.uint8)
    for i in pasted:
        images[i, :18] = fill
        images[i, -18:] = fill
    report = audit(Dataset(images, labels, BLOOD_CELL_CLASSES, "fills"), AuditOptions(checks=("blank_or_corrupt", "outliers")))
    assert set(pasted.tolist()) <= set(report.flagged["blank_or_corrupt"])
    assert not set(pasted.tolist()) & set(report.flagged["outliers"]), "each image is listed once"
    reasons = {int(i): report.reasons[i] for i in pasted}
    explained = [i for i, said in reasons.items() if any(r.startswith("broken") for r in said) and any("frame" in r for r in said)]
    assert len(explained) >= 6, reasons


def test_summary_class_distribution_and_flag_semantics(dirty, report):
    data, _ = dirty
    summary = report.summary()
    assert summary["all"]["flagged"] + summary["all"]["kept"] == len(data.labels)
    rows = report.class_distribution()
    assert [r["images"] for r in rows] == data.class_counts().tolist()
    assert sum(r["flagged"] for r in rows) == summary["all"]["flagged"]
    everything = set(report.flagged_indices().tolist())
    assert everything == set().union(*(set(report.flagged_indices([k]).tolist()) for k in report.checks))
    with pytest.raises(ValueError, match="unknown audit kind"):
        report.flagged_indices(["duplicates"])


def test_clean_dataset_removes_the_flagged_and_says_why(dirty, report):
    data, truth = dirty
    cleaned, removed = clean_dataset(data, report)
    assert len(cleaned.labels) == len(data.labels) - len(removed) == len(data.labels) - len(report.flagged_indices())
    by_index = {entry["index"]: entry for entry in removed}
    assert by_index[truth["blank"][0]]["kinds"] == ["blank_or_corrupt"]
    assert "exact_duplicates" in by_index[truth["exact"][0][0]]["kinds"] and truth["exact"][0][1] not in by_index
    assert set(removed[0]) == {"index", "label", "label_index", "kinds", "reasons", "group"}
    assert cleaned.notes[-1].startswith("audit: removed")
    _, removed_copies = clean_dataset(data, report, kinds=["exact_duplicates"])
    assert len(removed_copies) == len(truth["exact"])
    other = Dataset(data.images[:-1], data.labels[:-1], data.class_names, "other")
    with pytest.raises(BcautoError, match="audit report is of other data"):
        clean_dataset(other, report)


def test_near_duplicate_groups_include_exact_copies(dirty):
    data, truth = dirty
    groups = near_duplicate_groups(data.images)
    for copy, source in truth["exact"] + truth["near"]:
        assert groups[copy] == groups[source]
    assert len(np.unique(groups)) >= len(groups) - 2 * len(truth["exact"] + truth["near"]) - 5


def test_distinct_cells_on_a_plain_background_are_not_near_duplicates():
    """Segmented cells on one flat background (some datasets ship them so): the frames are alike, the cells are
    not, so only the real copies are grouped, not a chain of every round cell."""
    rng = np.random.default_rng(5)
    cells, _ = generate(300, SIZE, seed=21)
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE
    inside = (np.hypot(yy - 0.5, xx - 0.5) < 0.3)[..., None]
    plain = np.array([236.0, 222.0, 214.0]) + rng.normal(0, 2, (len(cells), SIZE, SIZE, 1))
    images = [jpeg(np.where(inside, cell, plain[i]).clip(0, 255).astype(np.uint8), 90) for i, cell in enumerate(cells)]
    sources = range(0, 20)
    images += [near_copy(images[source], rng) for source in sources]
    groups = near_duplicate_groups(np.stack(images))
    assert all(groups[300 + k] == groups[source] for k, source in enumerate(sources))
    sizes = np.bincount(groups)
    wrongly_grouped = [i for i in range(20, 300) if sizes[groups[i]] > 1]
    assert len(wrongly_grouped) <= 3, (len(wrongly_grouped), sizes.max())


def test_split_keeps_every_near_copy_on_one_side(dirty):
    data, truth = dirty
    pairs = truth["exact"] + truth["near"]
    for seed in range(3):
        split = stratified_split(data, 0.2, seed)
        train = set(split.train.tolist())
        for copy, source in pairs:
            assert (copy in train) == (source in train), (seed, copy, source)
    with pytest.raises(BcautoError, match="group ids"):
        stratified_split(data, 0.2, 0, groups=np.zeros(3))


def test_options_are_checked():
    with pytest.raises(BcautoError, match="unknown option"):
        AuditOptions.from_mapping({"near_treshold": 0.9})
    with pytest.raises(BcautoError, match="unknown check"):
        AuditOptions.from_mapping({"checks": ["outliers", "blurry"]})
    with pytest.raises(BcautoError, match="near_threshold"):
        AuditOptions.from_mapping({"near_threshold": 1.5})


def test_a_handful_of_images_is_audited_without_outlier_detection():
    images, labels = generate(12, 32, seed=0)
    images[5] = images[2]
    result = audit(Dataset(images, labels, BLOOD_CELL_CLASSES, "tiny"))
    assert result.groups["exact_duplicates"] == [[2, 5]]
    assert result.flagged["outliers"] == [] and any("too few" in note for note in result.notes)


def _cli_args(*argv):
    return build_parser().parse_args(["audit", *argv])


def test_cli_writes_report_sheets_and_clean_npz(dirty, tmp_path):
    data, _ = dirty
    source = tmp_path / "dirty.npz"
    np.savez(source, images=data.images, labels=data.labels, class_names=np.array(data.class_names))
    from rich.console import Console

    console = Console(file=io.StringIO(), width=160)
    out, clean = tmp_path / "audit", tmp_path / "clean.npz"
    args = _cli_args("--data", str(source), "--image-size", str(SIZE), "--out", str(out), "--write-clean", str(clean))
    assert run_audit_command(args, console) == 0
    printed = console.file.getvalue()
    assert "exact_duplicates" in printed and "class distribution" in printed and "basophil" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == len(data.labels) and report["class_names"] == list(BLOOD_CELL_CLASSES)
    assert report["kinds"]["blank_or_corrupt"]["images"] == 3
    assert report["kinds"]["exact_duplicates"]["groups"][0][0]["label"] in BLOOD_CELL_CLASSES
    assert sum(row["images"] for row in report["class_distribution"]) == len(data.labels)
    for kind in ("exact_duplicates", "near_duplicates", "label_conflicts", "blank_or_corrupt", "outliers"):
        with Image.open(out / f"{kind}.png") as sheet:
            assert sheet.width >= 480 and sheet.height > 96
    with np.load(clean) as npz:
        assert len(npz["labels"]) == report["kept"] == len(npz["images"])
        assert npz["images"].shape[1:] == (SIZE, SIZE, 3) and list(npz["class_names"]) == list(BLOOD_CELL_CLASSES)


def test_cli_json_goes_to_stdout_alone(dirty, tmp_path, capsys):
    data, _ = dirty
    source = tmp_path / "small.npz"
    np.savez(source, images=data.images[:60], labels=data.labels[:60])
    from rich.console import Console

    args = _cli_args("--data", str(source), "--image-size", "32", "--out", str(tmp_path / "a"), "--json")
    assert run_audit_command(args, Console(file=io.StringIO())) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] == 60 and report["image_size"] == 32 and "kinds" in report


def test_cli_error_messages(tmp_path, capsys):
    assert main(["audit", "--data", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "a")]) == 2
    assert "missing.npz" in capsys.readouterr().err
    from rich.console import Console

    console = Console(file=io.StringIO())
    with pytest.raises(BcautoError, match=r"--write-clean .*must end in \.npz"):
        run_audit_command(_cli_args("--data", "synthetic:50", "--write-clean", str(tmp_path / "clean.txt")), console)
    with pytest.raises(BcautoError, match="--image-size must be 8 or more"):
        run_audit_command(_cli_args("--data", "synthetic:50", "--image-size", "4"), console)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BcautoError, match="--out .*file"):
        run_audit_command(_cli_args("--data", "synthetic:50", "--image-size", "32", "--out", str(tmp_path / "file")), console)
    with pytest.raises(BcautoError, match="folder .* does not exist"):
        write_clean_npz(
            Dataset(*generate(20, 32), BLOOD_CELL_CLASSES, "s"),
            audit(Dataset(*generate(20, 32), BLOOD_CELL_CLASSES, "s")),
            tmp_path / "nowhere" / "clean.npz",
        )


@pytest.fixture
def image_folder(tmp_path):
    """A class-folder dataset with a copy, a blank image, a text file and an undecodable file; returns its root."""
    root = tmp_path / "cells"
    images, labels = generate(60, 32, seed=5)
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / BLOOD_CELL_CLASSES[label]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"cell_{i:03d}.png")
    first = BLOOD_CELL_CLASSES[labels[0]]
    Image.fromarray(images[0]).save(root / first / "zz_copy_of_000.png")
    Image.fromarray(np.full((32, 32, 3), 128, np.uint8)).save(root / first / "zz_blank.png")
    (root / first / "readme.txt").write_text("not an image")
    (root / first / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def _entries(report: dict):
    for kind in report["kinds"].values():
        for group in kind.get("groups", []):
            yield from group
        yield from kind.get("flagged_images", [])


def test_json_names_every_flagged_image_by_its_path_and_keeps_what_was_left_out(image_folder, tmp_path, capsys):
    from rich.console import Console

    args = _cli_args("--data", str(image_folder), "--image-size", "32", "--out", str(tmp_path / "a"), "--json", "--on-bad-image", "skip")
    assert run_audit_command(args, Console(file=io.StringIO())) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((tmp_path / "a" / "report.json").read_text())
    entries = list(_entries(report))
    assert entries and all((image_folder / entry["path"]).is_file() for entry in entries)
    first = BLOOD_CELL_CLASSES[generate(60, 32, seed=5)[1][0]]
    [copies] = report["kinds"]["exact_duplicates"]["groups"]
    assert [entry["path"] for entry in copies] == [f"{first}/cell_000.png", f"{first}/zz_copy_of_000.png"]
    assert {entry["path"] for entry in report["kinds"]["blank_or_corrupt"]["flagged_images"]} == {f"{first}/zz_blank.png"}
    # what loading left out is in the report, not only on the terminal
    assert any("skipped 1 undecodable image(s)" in note for note in report["notes"])
    assert any("ignored 1 " in note and "readme.txt" in note for note in report["notes"])
    assert {entry["path"]: entry["why"].split(" (")[0] for entry in report["left_out"]} == {
        f"{first}/readme.txt": "not an image file",
        f"{first}/zz_broken.png": "cannot be decoded",
    }


def test_terminal_prints_each_note_once(image_folder, tmp_path):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=300)
    args = _cli_args("--data", str(image_folder), "--image-size", "32", "--out", str(tmp_path / "a"), "--on-bad-image", "skip")
    assert run_audit_command(args, console) == 0
    printed = console.file.getvalue()
    assert printed.count("skipped 1 undecodable") == 1 and printed.count("readme.txt") == 1


def test_npz_images_are_named_by_array_and_index(tmp_path):
    images, labels = generate(30, 32, seed=2)
    images[7] = images[3]
    path = tmp_path / "m.npz"
    np.savez(path, train_images=images[:20], train_labels=labels[:20], val_images=images[20:], val_labels=labels[20:])
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    report = audit(load_data(str(path), 32, components(), {})).to_dict()
    [copies] = report["kinds"]["exact_duplicates"]["groups"]
    assert [(entry["index"], entry["path"]) for entry in copies] == [(3, "train_images[3]"), (7, "train_images[7]")]
    images[25] = images[3]
    np.savez(path, train_images=images[:20], train_labels=labels[:20], val_images=images[20:], val_labels=labels[20:])
    report = audit(load_data(str(path), 32, components(), {})).to_dict()
    assert [entry["path"] for entry in report["kinds"]["exact_duplicates"]["groups"][0]] == [
        "train_images[3]",
        "train_images[7]",
        "val_images[5]",
    ]


def test_contact_sheet_captions_name_the_file(image_folder):
    from bcauto.audit.render import _rows, contact_sheet
    from bcauto.data.sources import load_data
    from bcauto.plugins import components

    data = load_data(str(image_folder), 32, components(), {"on_bad_image": "skip"})
    report = audit(data)
    rows = _rows(report, "exact_duplicates")
    first = BLOOD_CELL_CLASSES[generate(60, 32, seed=5)[1][0]]
    # the class folder is the class on the first line
    assert [text.split("\n")[1] for _, text in rows[0]] == ["cell_000.png", "zz_copy_of_000.png"]
    assert all(text.split("\n")[0].endswith(f" {first}") for _, text in rows[0])
    named = contact_sheet(data.images, rows, "t")
    unnamed = contact_sheet(data.images, [[(i, text.split("\n")[0]) for i, text in row] for row in rows], "t")
    assert named.height > unnamed.height  # room for the file line under each tile
    _, removed = clean_dataset(data, report, kinds=["exact_duplicates"])
    assert [entry["path"] for entry in removed] == [f"{first}/zz_copy_of_000.png"]
