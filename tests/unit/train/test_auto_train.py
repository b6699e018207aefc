"""Trained by default: the decision to train, the verdict against the base space, the switch.

A stand-in trainer writes a real (tiny) ONNX model directory with chosen cross-validation
figures, so the real decision, registration, re-embedding and activation run in seconds on
the real PostgreSQL database; `mammosearch train` itself is tested in test_train.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from mammosearch.config import Settings
from mammosearch.db.session import session_scope
from mammosearch.embed.serving_record import read_serving
from mammosearch.train import auto
from tests.factories import make_image, make_patient

TINY_PX = 32


def _onnx_bytes(seed: int) -> bytes:
    """A tiny embedding network (pooled pixels -> linear -> 8-d) as ONNX; `seed` sets weights."""
    import torch

    torch.manual_seed(seed)

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.project = torch.nn.Linear(3 * 4 * 4, 8)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            pooled = torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)
            return torch.nn.functional.normalize(self.project(pooled), dim=1)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny().eval(), (torch.zeros(1, 3, TINY_PX, TINY_PX),), buffer,
            input_names=["images"], output_names=["vectors"],
            dynamic_axes={"images": {0: "n"}, "vectors": {0: "n"}}, dynamo=False,
        )  # fmt: skip
    return buffer.getvalue()


def _cv(trained: list[float], base: list[float]) -> dict[str, Any]:
    """Cross-validation figures as `train` records them: pooled, and per fold."""

    def pooled(values: list[float]) -> dict[str, Any]:
        mean = sum(values) / len(values)
        return {
            "metrics": {"precision@5": mean, "ndcg@5": mean, "vote_accuracy": mean},
            "vote_per_class_recall": {"1": mean, "2": mean},
            "per_class_precision@5": {"similarity": {"1": mean, "2": mean}},
        }

    return {
        "trained": pooled(trained), "base": pooled(base),
        "per_fold": [
            {"fold": i + 1, "trained": {"precision@5": t}, "base": {"precision@5": b}}
            for i, (t, b) in enumerate(zip(trained, base, strict=True))
        ],
    }  # fmt: skip


class StandInTrainer:
    """Writes a model directory with the given figures, as `run_training` would."""

    def __init__(self, cv: dict[str, Any], seed: int = 1,
                 before: Callable[[Path], None] | None = None) -> None:  # fmt: skip
        self.cv, self.seed, self.before = cv, seed, before
        self.calls: list[dict[str, Any]] = []

    def __call__(self, session: Session, config: Any, out_dir: Path, command_line: str,
                 **options: Any) -> Path:  # fmt: skip
        self.calls.append({"out_dir": out_dir, "config": config, **options})
        if self.before is not None:
            self.before(out_dir)
        options["status"]("fold 1/2", {"epoch": 1, "epochs": 1, "loss": 1.0})
        out_dir.mkdir(parents=True, exist_ok=True)
        model = _onnx_bytes(self.seed)
        (out_dir / "model.onnx").write_bytes(model)
        (out_dir / "model.json").write_text(json.dumps({
            "format": 1, "name": options["name"], "model_sha256": hashlib.sha256(model).hexdigest(),
            "input": {"image_size_px": TINY_PX}, "output": {"dim": 8},
            "base": {"backbone": "efficientnet-lite0"}, "labels": {"birads": ["1", "2"]},
            "training_images": {"count": 16}, "cross_validation": self.cv,
            "training": {"device": (options.get("setting") or {}).get("device", "cpu"),
                         "setting": options.get("setting")},
        }))  # fmt: skip
        return out_dir


WINS = _cv([0.60, 0.62, 0.58], [0.40, 0.41, 0.39])
LOSES = _cv([0.41, 0.40, 0.42], [0.40, 0.40, 0.40])


def _add_images(settings: Settings, count: int, first_seed: int = 0) -> None:
    """`count` labelled images, two BIRADS classes, four images per patient."""
    with session_scope(settings.database_url) as session:
        for seed in range(first_seed, first_seed + count):
            if seed % 4 == 0:
                patient = make_patient(session, f"P{seed // 4}")
            make_image(session, settings, patient, seed=seed, birads=1 + seed % 2)


@pytest.fixture
def labelled(pg_settings: Settings) -> Settings:
    """16 labelled images, not embedded (the decision counts rows); training starts at 12."""
    settings = pg_settings.with_overrides(auto_train_min_images=12)
    _add_images(settings, 16)
    return settings


@pytest.fixture
def archive(pg_settings: Settings) -> Settings:
    """16 labelled images embedded in the base space; training starts at 12."""
    from mammosearch.pipeline.process import process_pending

    settings = pg_settings.with_overrides(auto_train_min_images=12, embed_batch_size=16)
    _add_images(settings, 16)
    process_pending(settings)
    return settings


def _serving(settings: Settings) -> str | None:
    record = read_serving(settings.data_dir)
    return record["backbone"] if record else None


def test_a_model_that_wins_is_activated_and_can_be_rolled_back(archive: Settings) -> None:
    from mammosearch.embed.serving import serving_space
    from mammosearch.jobs.space_switch import space_progress

    trainer = StandInTrainer(WINS)
    record = auto.run_auto_train(archive, trainer)
    assert record["state"] == "activated", record
    assert record["verdict"]["wins"] and record["verdict"]["gain"] == pytest.approx(0.2)
    assert _serving(archive) == "auto-16" and record["previous_backbone"] == "auto"
    with session_scope(archive.database_url) as session:
        progress = space_progress(session, serving_space(session, archive))
    assert progress["indexed"] == progress["searchable_images"] == 16
    assert not auto.work_out_dir(archive).exists()  # registered, the work copy gone
    # Nothing more to do until the archive grows by a quarter.
    again = auto.run_auto_train(archive, trainer)
    assert len(trainer.calls) == 1 and "retrains at 21" in again["check"]["reason"]

    rolled = auto.rollback(archive)
    assert rolled["state"] == "rolled-back" and _serving(archive) == "auto"
    with session_scope(archive.database_url) as session:
        assert serving_space(session, archive).backbone == "efficientnet-lite0"


def test_a_model_within_the_noise_is_kept_out_and_the_page_says_why(labelled: Settings) -> None:
    archive = labelled  # not embedded: the decision's flow, not the vectors
    trainer = StandInTrainer(LOSES)
    record = auto.run_auto_train(archive, trainer)
    assert record["state"] == "kept-base" and _serving(archive) is None
    assert "+0.010, not more than the noise 0.015" in record["reason"]
    assert (archive.data_dir / "models" / "registry" / "auto-16" / "model.json").is_file()
    assert len(trainer.calls) == 1
    auto.run_auto_train(archive, trainer)
    assert len(trainer.calls) == 1  # the same archive is not trained on again
    _add_images(archive, 4, first_seed=100)  # 20 < 16 * 1.25 + 1
    auto.run_auto_train(archive, trainer)
    assert len(trainer.calls) == 1
    _add_images(archive, 4, first_seed=200)  # 24: grown by more than a quarter
    retrained = auto.run_auto_train(archive, StandInTrainer(WINS, seed=2))
    assert retrained["state"] == "activated" and _serving(archive) == "auto-24"


def test_the_fold_spread_is_the_noise_when_it_is_larger() -> None:
    verdict = auto.judge(_cv([0.55, 0.35, 0.50], [0.40, 0.40, 0.40]), min_gain=0.015)
    assert verdict.gain == pytest.approx(0.0667, abs=1e-3) and verdict.noise > 0.1
    assert not verdict.wins and "per-fold spread" in verdict.reason
    assert auto.judge(WINS, 0.015).wins


def test_automatic_training_off_or_too_few_labels_trains_nothing(labelled: Settings) -> None:
    archive = labelled
    trainer = StandInTrainer(WINS)
    off = auto.run_auto_train(archive.with_overrides(auto_train=False), trainer)
    assert off["state"] == "disabled" and "MAMMOSEARCH_AUTO_TRAIN=0" in off["check"]["reason"]
    few = auto.run_auto_train(archive.with_overrides(auto_train_min_images=200), trainer)
    assert few["state"] == "waiting"
    assert (
        "16 BIRADS-labelled images in 2 classes; training starts at 200" in few["check"]["reason"]
    )
    assert trainer.calls == [] and _serving(archive) is None


def test_an_interrupted_run_resumes_from_its_work_folder(labelled: Settings) -> None:
    archive = labelled  # not embedded: the decision's flow, not the vectors

    def killed(out_dir: Path) -> None:
        work = out_dir.with_name(out_dir.name + ".work")
        work.mkdir(parents=True)
        (work / "fold-1.npz").write_bytes(b"a finished fold")
        raise KeyboardInterrupt  # the process dies: nothing after this line runs

    with pytest.raises(KeyboardInterrupt):
        auto.run_auto_train(archive, StandInTrainer(WINS, before=killed))
    assert auto.read_state(archive)["state"] == "training"

    found: list[bool] = []

    def resumed(out_dir: Path) -> None:
        found.append((out_dir.with_name(out_dir.name + ".work") / "fold-1.npz").is_file())

    trainer = StandInTrainer(WINS, before=resumed)
    record = auto.run_auto_train(archive, trainer)
    assert found == [True] and trainer.calls[0]["out_dir"] == auto.work_out_dir(archive)
    assert record["state"] == "activated" and record["run"]["resumed"] == 1
    assert record["run"]["model"] == "auto-16"


def test_an_interrupted_switch_resumes_without_training_again(
    labelled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = labelled  # not embedded: the decision's flow, not the vectors
    from mammosearch.jobs import space_switch

    real_activate = space_switch.activate

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(space_switch, "activate", killed)
    with pytest.raises(KeyboardInterrupt):
        auto.run_auto_train(archive, StandInTrainer(WINS))
    assert auto.read_state(archive)["state"] == "re-embedding" and _serving(archive) is None
    monkeypatch.setattr(space_switch, "activate", real_activate)
    untouched = StandInTrainer(LOSES)
    record = auto.run_auto_train(archive, untouched)
    assert untouched.calls == [] and record["state"] == "activated"
    assert _serving(archive) == "auto-16" and "resumed" in record["reason"]


def test_a_failed_switch_is_retried_at_the_next_check_without_training(
    labelled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = labelled  # not embedded: the switch's flow, not its vectors
    from mammosearch.jobs import space_switch

    real_activate = space_switch.activate

    def refused(*args: Any, **kwargs: Any) -> None:
        raise space_switch.SpaceSwitchError("its indexes do not match the database")

    monkeypatch.setattr(space_switch, "activate", refused)
    failed = auto.run_auto_train(archive, StandInTrainer(WINS))
    assert failed["state"] == "failed" and "do not match" in failed["error"]
    assert failed["switch_pending"] == "auto-16" and _serving(archive) is None
    monkeypatch.setattr(space_switch, "activate", real_activate)
    untouched = StandInTrainer(LOSES)
    record = auto.run_auto_train(archive, untouched)
    assert untouched.calls == [] and record["state"] == "activated"
    assert "error" not in record and "switch_pending" not in record


def test_a_run_killed_after_registering_its_model_does_not_train_again(
    labelled: Settings,
) -> None:
    archive = labelled  # not embedded: the switch's flow, not its vectors
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import register_model

    def killed(out_dir: Path) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        auto.run_auto_train(archive, StandInTrainer(WINS, before=killed))
    written = StandInTrainer(WINS)(None, None, archive.data_dir / "elsewhere", "test",
                                   name="auto-16", status=lambda *_: None)  # fmt: skip
    register_model(written, registry_dir(archive), "auto-16")  # then the process died
    untouched = StandInTrainer(LOSES)
    record = auto.run_auto_train(archive, untouched)
    assert untouched.calls == [] and record["state"] == "activated"
    assert _serving(archive) == "auto-16"


def test_one_run_at_a_time(labelled: Settings) -> None:
    from mammosearch.durable.file_lock import exclusive_file_lock

    archive = labelled
    trainer = StandInTrainer(WINS)
    with exclusive_file_lock(archive.data_dir / "models" / auto.LOCK_FILE, "another run"):
        record = auto.run_auto_train(archive, trainer)
    assert "another run by pid" in record["busy"] and trainer.calls == []


def test_progress_names_the_fold_the_epoch_and_the_time_left(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    record: dict[str, Any] = {"state": "training"}
    progress = auto.Progress(settings, record, folds=5, epochs=15, ensemble=1)
    assert progress.total_epochs == 90
    assert progress.epochs_done("fold 2/5", 3) == (18, 2)
    assert progress.epochs_done("final model", 1) == (76, None)
    progress("fold 1/5", {"epoch": 1, "epochs": 15, "loss": 2.0})
    assert auto.read_state(settings)["progress"]["eta_s"] is None  # one epoch: no rate yet
    progress.first = (progress.first[0] - 10.0, progress.first[1])  # that epoch took 10 s
    progress("fold 1/5", {"epoch": 2, "epochs": 15, "loss": 1.9})
    shown = auto.read_state(settings)["progress"]
    assert shown["fold"] == 1 and shown["epochs_done"] == 2
    assert shown["eta_s"] == pytest.approx(880, abs=5)  # 88 epochs left at 10 s each


def test_serve_starts_the_watcher_beside_itself_only_without_a_broker_and_when_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The embedded default trains in a child process (its own CPU priority); a stack's beat
    does it instead, and MAMMOSEARCH_AUTO_TRAIN=0 starts nothing."""
    import subprocess

    from mammosearch.cli import serve_commands
    from mammosearch.config import get_settings

    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "Popen", lambda command, **_: started.append(command))
    for broker, flag, expected in (("", "1", 1), ("redis://x:6379/0", "1", 0), ("", "0", 0)):
        monkeypatch.setenv("CELERY_BROKER_URL", broker)
        monkeypatch.setenv("MAMMOSEARCH_AUTO_TRAIN", flag)
        get_settings.cache_clear()
        before = len(started)
        serve_commands._start_auto_training()
        assert len(started) - before == expected, (broker, flag)
    get_settings.cache_clear()
    assert started[0][-2:] == ["auto-train", "--watch"]


def test_the_command_checks_at_low_priority_and_says_why_it_waits(
    labelled: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from mammosearch.cli import main

    lowered: list[bool] = []
    monkeypatch.setattr(auto, "lower_priority", lambda *args: lowered.append(True))
    result = CliRunner().invoke(main, ["auto-train"])  # the environment's minimum: 200
    assert result.exit_code == 0, result.output
    assert result.output.startswith("waiting: 16 BIRADS-labelled images in 2 classes")
    assert lowered == [True]
    status = CliRunner().invoke(main, ["status"])
    assert "archive's own model: waiting: 16 BIRADS-labelled images" in status.output
    rollback = CliRunner().invoke(main, ["auto-train", "--rollback"])
    assert rollback.exit_code == 1 and "nothing to roll back to" in rollback.output


def test_a_gpu_trains_the_strongest_setting_measured_and_a_cpu_the_defaults() -> None:
    """One rule (choose_setting): GeM + 320 px + two seeds on CUDA, train's defaults else."""
    from mammosearch.train.config import TrainConfig

    gpu, cpu = auto.choose_setting("cuda"), auto.choose_setting("cpu")
    config = gpu.config()
    assert (config.pooling, config.image_size_px, config.ensemble) == ("gem", 320, 2)
    assert config.fit == TrainConfig().fit and config.loss == TrainConfig().loss
    assert cpu.config() == TrainConfig() and cpu.changes == {}
    assert gpu.name == "strongest measured" and "a CUDA GPU is present" in gpu.reason
    assert cpu.name == "defaults" and "no CUDA GPU (on cpu)" in cpu.reason


def test_the_run_trains_with_the_devices_setting_and_records_it_with_why(
    labelled: Settings,
) -> None:
    """Device detection injected: a GPU's run gets the strongest setting, its state and the
    model's record say which setting, which device and why; the progress counts both seeds."""
    from mammosearch.embed.loader import registry_dir
    from mammosearch.embed.registry import registered_models

    trainer = StandInTrainer(LOSES)
    record = auto.run_auto_train(labelled, trainer, device=lambda: "cuda")
    config = trainer.calls[0]["config"]
    assert (config.pooling, config.image_size_px, config.ensemble) == ("gem", 320, 2)
    setting = record["run"]["setting"]
    assert setting["device"] == "cuda" and setting["name"] == "strongest measured"
    assert setting["changes"] == {"pooling": "gem", "image_size_px": 320, "ensemble": 2}
    (model,) = registered_models(registry_dir(labelled))
    assert model.record["training"]["setting"] == setting
    assert trainer.calls[0]["setting"]["reason"].startswith("a CUDA GPU is present")

    cpu_trainer = StandInTrainer(LOSES)
    _add_images(labelled, 8, first_seed=300)  # grown by a quarter: trained again
    cpu = auto.run_auto_train(labelled, cpu_trainer, device=lambda: "cpu")
    assert cpu_trainer.calls[0]["config"].ensemble == 1
    assert cpu["run"]["setting"]["name"] == "defaults"
    assert cpu["run"]["setting"]["device"] == "cpu"


def test_the_banner_counts_cached_images_while_training_prepares() -> None:
    """Caching the trunk's views takes minutes: the banner says how far, not "preparing"."""
    from mammosearch.train.runner import _CachedCount

    heard: list[tuple[str, dict[str, Any]]] = []
    cached = _CachedCount(10, lambda stage, details: heard.append((stage, details)), every_s=60)
    for _ in range(5):
        cached.add(2)
    assert heard[0] == ("caching views", {"done": 2, "total": 10})
    assert heard[-1] == ("caching views", {"done": 10, "total": 10})  # the last always reports
    assert len(heard) == 2  # throttled between
    record = {"state": "training", "run": {"model": "auto-10"}, "progress": heard[-1][1]}
    record["progress"]["stage"] = "caching views"
    assert auto.summary_line(record) == "training auto-10: caching views (10/10 images)"
