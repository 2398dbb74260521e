"""convexp predict and convexp export (convexp/predict.py, convexp/export.py): a trained run's
network on image files of any size, and the same network as an ONNX or TorchScript file.

Two tiny runs on the course's own PNGs (conftest's course_varres) are trained once for the module:
a varres-pool study (global pooling, one child) and a varres-resize run (MNISTConvNet)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.helpers import invoke, only_run

TRAIN = ["--set", "train.epochs=2", "--device", "cpu", "-q"]
NETWORKS = ["pool", "resize"]


@pytest.fixture(scope="module")
def runs(course_varres, tmp_path_factory) -> dict[str, Path]:
    """{"pool": a varres-pool study with one child (max-seed0), "resize": a varres-resize run}."""
    out = tmp_path_factory.mktemp("runs")
    commands = {"pool": ["varres-pool", "--set", "model.pooling=[max]"], "resize": ["varres-resize"]}
    found = {}
    for kind, command in commands.items():
        result = invoke(*command, "--set", f"data.root={course_varres}", *TRAIN, "--out", str(out / kind))
        assert result.returncode == 0, result.stderr
        found[kind] = only_run(out / kind)
    return found


@pytest.fixture(scope="module")
def predictions(runs, course_varres, tmp_path_factory) -> dict[str, list[dict]]:
    """predictions.csv of each run over the course's test PNGs, as rows."""
    out = tmp_path_factory.mktemp("predictions")
    found = {}
    for kind, run in runs.items():
        result = invoke("predict", str(run), str(course_varres / "test"), "--out", str(out / f"{kind}.csv"), "--device", "cpu")
        assert result.returncode == 0, result.stderr
        assert "images/s" in result.stdout
        found[kind] = read_csv(out / f"{kind}.csv")
    return found


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def trained_folder(run: Path) -> Path:
    """The folder holding model.pt: the run itself, or the study's one child."""
    return run if (run / "model.pt").is_file() else run / "max-seed0"


def pixels(path: str) -> torch.Tensor:
    """(1, 1, h, w) float32 in [0, 1], read as a user without convexp would (PIL, grey)."""
    import numpy
    from PIL import Image

    return torch.from_numpy(numpy.asarray(Image.open(path).convert("L"), dtype=numpy.float32) / 255)[None, None]


# -- predict against the run's own test evaluation ------------------------------------------------


@pytest.mark.slow(seconds=25)
@pytest.mark.parametrize("kind", NETWORKS)
def test_predict_over_the_test_pngs_gives_the_runs_own_test_evaluation(runs, predictions, kind):
    rows = predictions[kind]
    summary = json.loads((trained_folder(runs[kind]) / "summary.json").read_text())
    truth = [int(Path(row["path"]).parent.name) for row in rows]
    labels = [int(row["label"]) for row in rows]
    assert len(rows) == 100 and list(rows[0]) == ["path", "label", "probability", *(f"p{k}" for k in range(10))]
    assert sum(t == p for t, p in zip(truth, labels)) / len(rows) == summary["test_accuracy"]
    confusion = [[0] * 10 for _ in range(10)]
    for t, p in zip(truth, labels):
        confusion[t][p] += 1
    assert confusion == summary["confusion_matrix"]  # image for image, not only in total
    for row in rows:
        p = [float(row[f"p{k}"]) for k in range(10)]
        assert abs(sum(p) - 1) < 1e-4 and float(row["probability"]) == max(p)


# -- export ---------------------------------------------------------------------------------------


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    if fmt == "onnx":
        import onnxruntime

        return torch.from_numpy(onnxruntime.InferenceSession(str(path)).run(None, {"pixels": x.numpy()})[0])
    with warnings.catch_warnings():  # torch.jit's deprecation notice: TorchScript is still what was asked for
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path))(x)


@pytest.mark.slow(seconds=15)
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("kind", NETWORKS)
def test_the_exported_file_gives_predicts_labels_on_every_image(runs, predictions, tmp_path, kind, fmt):
    from convexp.data import Split
    from convexp.varres import resize_split

    out = tmp_path / f"model.{fmt}"
    result = invoke("export", str(runs[kind]), "--format", fmt, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "largest absolute logit difference" in result.stdout and out.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no draft left beside it
    for row in predictions[kind]:
        x = pixels(row["path"])
        if kind == "resize":  # the file takes 28x28: resizing is the caller's, as varres-resize's
            x = resize_split(Split([x], [torch.zeros(1, dtype=torch.long)]), merge=False).images[0]
        assert run_exported(out, fmt, x).argmax(1).item() == int(row["label"]), row["path"]
    if kind == "pool":
        from convexp.predict import load_trained, prepare

        trained = load_trained(trained_folder(runs[kind]), torch.device("cpu"))
        for h, w in [(32, 32), (48, 48), (64, 64), (100, 80), (33, 47)]:
            x = torch.rand(3, 1, h, w)
            logits = run_exported(out, fmt, x)
            assert logits.shape == (3, 10)
            with torch.inference_mode():
                assert (logits - trained.network(prepare(x, trained))).abs().max() < 1e-4


def test_export_refuses_a_file_that_differs_and_leaves_nothing(runs, tmp_path, monkeypatch):
    import convexp.export

    monkeypatch.setattr(convexp.export, "TOLERANCE", -1.0)  # every file "differs"
    result = invoke("export", str(runs["resize"]), "--format", "torchscript", "--out", str(tmp_path / "m.pt"))
    assert result.returncode == 2 and "not written" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_without_onnxruntime_says_what_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    result = invoke("export", str(runs["pool"]), "--out", str(tmp_path / "m.onnx"))
    assert result.returncode == 2 and "pip install -e '.[export]'" in result.stderr
    assert result.stderr.count("\n") == 1 and list(tmp_path.iterdir()) == []


# -- the images predict accepts -------------------------------------------------------------------


def save(path: Path, mode: str, size: tuple[int, int], color) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)
    return path


def test_rgb_rgba_and_jpeg_of_any_size_are_read_as_the_training_data(runs, tmp_path):
    folder = tmp_path / "scans"
    save(folder / "a.png", "RGBA", (40, 30), (200, 200, 200, 128))
    save(folder / "sub" / "b.jpg", "RGB", (77, 91), (10, 250, 30))
    save(folder / "c.png", "L", (28, 28), 0)
    for kind in NETWORKS:
        out = tmp_path / f"{kind}.csv"
        result = invoke("predict", str(runs[kind]), str(folder), "--out", str(out), "--batch-size", "1")
        assert result.returncode == 0, result.stderr
        assert [Path(r["path"]).name for r in read_csv(out)] == ["a.png", "c.png", "b.jpg"]


# -- bad input: one line, exit 2, nothing written (a folder's bad files: skipped, exit 1) -----------


def fake_run(tmp_path: Path, command: str) -> Path:
    """A completed run folder of `command` as it would be left: summary.json and config.yaml."""
    run = tmp_path / f"run-{command}"
    run.mkdir()
    (run / "summary.json").write_text(json.dumps({"command": command, "status": "completed"}))
    shutil.copy(Path(__file__).resolve().parents[1] / "configs" / f"{command}.yaml", run / "config.yaml")
    return run


def without_model(runs, tmp_path: Path) -> Path:
    run = shutil.copytree(trained_folder(runs["pool"]), tmp_path / "failed")
    (run / "model.pt").unlink()
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | {"status": "failed"}))
    return run


BAD = {
    "not-an-image": (lambda t, r: [r["pool"], t / "empty" / "notes.txt"], "is not an image"),
    "corrupt": (lambda t, r: [r["pool"], t / "bad.png"], "cannot read image"),
    "empty-folder": (lambda t, r: [r["pool"], t / "empty"], "no PNG or JPEG images under"),
    "missing-path": (lambda t, r: [r["pool"], t / "nowhere.png"], "does not exist"),
    "no-model": (lambda t, r: [without_model(r, t), t / "x.png"], "holds no model.pt (status: failed)"),
    "count-params": (lambda t, r: [fake_run(t, "count-params"), t / "x.png"], "count-params, which trains no model"),
    "bench": (lambda t, r: [fake_run(t, "bench"), t / "x.png"], "bench, which trains no model"),
    "not-a-run": (lambda t, r: [t, t / "x.png"], "is not a run folder"),
    "1x1": (lambda t, r: [r["resize"], save(t / "dot.png", "L", (1, 1), 255)], "is 1x1 px, too small to hold a digit"),
    "below-receptive-field": (lambda t, r: [r["pool"], save(t / "small.png", "L", (4, 6), 255)],
                              "is 6x4 px, smaller than the smallest input of this network (8x8 px"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_exit_2_and_nothing_written(runs, tmp_path, case):
    make, message = BAD[case]
    save(tmp_path / "x.png", "L", (32, 32), 0)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    run, path = make(tmp_path, runs)
    out = tmp_path / "predictions.csv"
    result = invoke("predict", str(run), str(path), "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert not out.exists()


def test_a_bad_file_in_a_folder_is_skipped_the_others_predicted_exit_1(runs, course_varres, tmp_path):
    folder = shutil.copytree(course_varres / "test" / "7", tmp_path / "sevens")
    (folder / "broken.png").write_bytes(b"not a png")
    save(folder / "tiny.png", "L", (1, 1), 0)
    out = tmp_path / "predictions.csv"
    result = invoke("predict", str(runs["pool"]), str(folder), "--out", str(out))
    assert result.returncode == 1
    assert "skipped:" in result.stderr and "broken.png" in result.stderr and "tiny.png" in result.stderr
    assert "2 of 12 images could not be predicted" in result.stderr
    assert len(read_csv(out)) == 10


def test_a_study_with_several_trained_runs_asks_which(runs, tmp_path):
    study = shutil.copytree(runs["pool"], tmp_path / "study")
    shutil.copytree(study / "max-seed0", study / "max-seed1")
    image = save(tmp_path / "x.png", "L", (32, 32), 0)
    out = tmp_path / "p.csv"
    result = invoke("predict", str(study), str(image), "--out", str(out))
    assert result.returncode == 2 and "choose one with --child NAME (max-seed0, max-seed1)" in result.stderr
    assert not out.exists()
    result = invoke("predict", str(study), str(image), "--out", str(out), "--child", "max-seed1")
    assert result.returncode == 0, result.stderr
    assert invoke("predict", str(study), str(image), "--out", str(out), "--child", "mean-seed0").returncode == 2


@pytest.mark.parametrize("command", ["predict", "export"])
@pytest.mark.parametrize("where,message", [
    ("a-folder", "is a folder: pass a file path, e.g. --out"),
    ("under-a-file", "is a file): pass a writable --out"),
])
def test_an_out_that_cannot_be_written_is_one_line_before_any_work(runs, tmp_path, command, where, message):
    (tmp_path / "a-file").write_text("")
    out = tmp_path if where == "a-folder" else tmp_path / "a-file" / "out"
    image = save(tmp_path / "x.png", "L", (32, 32), 0)
    args = [str(image)] if command == "predict" else []
    result = invoke(command, str(runs["pool"]), *args, "--out", str(out))
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
