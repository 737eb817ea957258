"""Sweep files: expansion into trials, trial keys, validation of every mistake, and --dry-run."""
from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from orchestrator.__main__ import main
from orchestrator.sweep import TABLES, load_sweep, sweep_files, trial_key
from retina.config import ConfigError, load_config

from .conftest import SCRATCH_BACKBONE

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SWEEPS = PROJECT_ROOT / "sweeps"
SHIPPED = [p.name for p in sweep_files(SWEEPS)]


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# the shipped sweeps


CONFIRMATORY = [100, 101, 102, 103, 104]  # seeds no study record used


def test_alpha_gamma_gives_33_trials_for_14_rows_with_the_papers_pairs():
    sweep = load_sweep(SWEEPS / "alpha_gamma.yaml")
    # 14 rows, CE alpha .75 shared by 1a and 1b; the rows a claim rests on (CE .10, .50, .90, .99 and FL
    # gamma 2 alpha .25) with five seeds, the others with one: 9 + 5 x 5 - 1 shared = 33 trials
    assert len(sweep.trials) == 33 and len({(m.table, m.label) for t in sweep.trials for m in t.memberships}) == 14
    for gamma, alpha in ((2.0, 0.25), (0.0, 0.1), (0.0, 0.5), (0.0, 0.9), (0.0, 0.99)):
        seeds = sorted(t.seed for t in sweep.trials if t.config.loss.gamma == gamma and t.config.loss.alpha == alpha)
        assert seeds == CONFIRMATORY, (gamma, alpha)
    claimed = {label for c in sweep.declaration.claims for _, label in c.rows}
    assert all(len(sweep.seeds_of(table, label)) >= 5 for table, label in
               {(m.table, m.label) for t in sweep.trials for m in t.memberships} if label in claimed)
    rows = {(m.table, round(t.config.loss.gamma, 3), round(t.config.loss.alpha, 3))
            for t in sweep.trials for m in t.memberships}
    table_1a = {(0.0, a) for a in (0.10, 0.25, 0.50, 0.75, 0.90, 0.99, 0.999)}
    table_1b = {(0.0, 0.75), (0.1, 0.75), (0.2, 0.75), (0.5, 0.50), (1.0, 0.25), (2.0, 0.25), (5.0, 0.25)}
    assert {(g, a) for table, g, a in rows if table == "1a"} == table_1a
    assert {(g, a) for table, g, a in rows if table == "1b"} == table_1b
    assert all(t.config.loss.kind == "focal" for t in sweep.trials)


def test_the_row_shared_by_1a_and_1b_is_one_trial_with_two_labels():
    sweep = load_sweep(SWEEPS / "alpha_gamma.yaml")
    shared = [t for t in sweep.trials if len(t.memberships) > 1]
    assert len(shared) == 1
    trial = shared[0]
    assert (trial.config.loss.gamma, trial.config.loss.alpha) == (0.0, 0.75)
    assert sorted(m.table for m in trial.memberships) == ["1a", "1b"]


@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_sweep_validates_under_every_profile(name, profile):
    sweep = load_sweep(SWEEPS / name, profile=profile)
    assert sweep.trials and set(sweep.tables) <= set(TABLES)
    assert len({t.key for t in sweep.trials}) == len(sweep.trials)
    for trial in sweep.trials:
        assert trial.key == trial_key(trial.config)


def test_one_sweep_file_per_ablation_is_shipped():
    assert {"alpha_gamma.yaml", "anchors.yaml", "ohem_vs_fl.yaml", "speed_accuracy.yaml",
            "prior_init.yaml"} <= set(SHIPPED)


def test_anchor_rows_are_the_papers_scales_by_ratios():
    sweep = load_sweep(SWEEPS / "anchors.yaml")
    pairs = {(t.config.anchors.scales_per_octave, len(t.config.anchors.aspect_ratios)) for t in sweep.trials}
    assert pairs == {(1, 1), (2, 1), (3, 1), (1, 3), (2, 3), (3, 3), (4, 3)}


def test_ohem_rows_cover_batch_sizes_nms_and_the_1_to_3_variant():
    sweep = load_sweep(SWEEPS / "ohem_vs_fl.yaml")
    ohem = {(t.config.loss.ohem_batch_size, t.config.loss.ohem_nms, t.config.loss.ohem_pos_ratio)
            for t in sweep.trials if t.config.loss.kind == "ohem"}
    assert ohem == {(b, n, None) for b in (128, 256, 512) for n in (0.7, 0.5)} | {(b, 0.5, 0.25) for b in (128, 256, 512)}
    best = [t.seed for t in sweep.trials if t.config.loss.kind == "ohem" and t.config.loss.ohem_batch_size == 128
            and t.config.loss.ohem_nms == 0.7]
    assert best == CONFIRMATORY  # the best OHEM row on the exploration seeds: the claim's row
    focal = [t for t in sweep.trials if t.config.loss.kind == "focal"]
    assert [(t.config.loss.gamma, t.config.loss.alpha, t.seed) for t in focal] == [(2.0, 0.25, s) for s in CONFIRMATORY]
    assert {t.config.model.depth for t in load_sweep(SWEEPS / "ohem_vs_fl.yaml", profile="paper").trials} == {101}


def test_speed_accuracy_keeps_paper_labels_and_scales_images_per_profile():
    paper = load_sweep(SWEEPS / "speed_accuracy.yaml", profile="paper")
    cpu = load_sweep(SWEEPS / "speed_accuracy.yaml", profile="cpu")
    assert sorted(t.label for t in paper.trials) == sorted(t.label for t in cpu.trials)
    assert {t.config.data.min_size for t in paper.trials} == {400, 500, 600, 700, 800}
    assert {t.config.data.min_size for t in cpu.trials} == {64, 80, 96, 112, 128}
    r50_400 = next(t for t in cpu.trials if t.label == "R50 400px")
    assert r50_400.scaled == {"data.min_size": (400, 64), "model.depth": (50, 18)}
    assert {t.config.model.depth for t in cpu.trials} == {18, 34} and {t.config.model.depth for t in paper.trials} == {50, 101}


def test_prior_init_rows_differ_only_in_the_prior_and_never_clip():
    sweep = load_sweep(SWEEPS / "prior_init.yaml")
    assert sorted((t.config.model.prior_init, t.seed) for t in sweep.trials) == \
        [(p, s) for p in (False, True) for s in CONFIRMATORY]
    assert all(t.config.train.grad_clip_norm is None and t.config.loss.gamma == 0.0 for t in sweep.trials)
    # on the cpu profile both stabilizers that hide the divergence are off: GroupNorm in the subnets and a high lr
    assert all(t.config.model.head_norm == "none" and t.config.train.lr <= 0.00125 for t in sweep.trials)
    with_prior, without = (next(t for t in sweep.trials if t.config.model.prior_init is p and t.seed == 100) for p in (True, False))
    assert with_prior.diff.keys() ^ without.diff.keys() <= {"model.prior_init"}


# ----------------------------------------------------------------------------------------------
# keys


def test_trial_key_is_stable_and_ignores_settings_that_cannot_change_results():
    cfg = load_config("cpu")
    same = load_config("cpu", overrides=["train.log_every=7", "train.checkpoint_every=3", "train.num_threads=2",
                                         "data.num_workers=2", "output_dir=/elsewhere",
                                         "train.compile=max-autotune"])
    assert trial_key(cfg) == trial_key(same) and len(trial_key(cfg)) == 12
    assert trial_key(cfg) != trial_key(load_config("cpu", overrides=["loss.alpha=0.5"]))
    assert trial_key(cfg) != trial_key(load_config("cpu", overrides=["train.seed=1"]))


def test_a_key_added_later_changes_no_earlier_key_at_its_default():
    """train.amp_cpu came after stores held runs: at its default (false) the key is the one computed
    without it, so those runs are found and resumed; set, it makes another trial."""
    cfg = load_config("cpu")
    before = OmegaConf.to_container(cfg, resolve=True)
    del before["train"]["amp_cpu"]
    assert trial_key(cfg) == trial_key(before)
    assert trial_key(cfg) != trial_key(load_config("cpu", overrides=["train.amp_cpu=true"]))


def test_ints_and_floats_and_dotted_and_nested_keys_give_the_same_trial(tmp_path):
    a = write(tmp_path, "tables: [1a]\nrows:\n  - {label: x, set: {loss.gamma: 0, loss.alpha: 0.5}}\n", "a.yaml")
    b = write(tmp_path, "tables: [1a]\nrows:\n  - {label: x, set: {loss: {gamma: 0.0, alpha: 0.50}}}\n", "b.yaml")
    assert load_sweep(a).trials[0].key == load_sweep(b).trials[0].key


def test_seeds_multiply_rows_and_enter_the_key(tmp_path):
    path = write(tmp_path, "tables: [1a]\nseeds: [0, 1, 2]\nrows:\n  - {label: x}\n  - {label: y, set: {loss.alpha: 0.5}}\n")
    sweep = load_sweep(path)
    assert len(sweep.trials) == 6
    assert sorted(t.seed for t in sweep.trials) == [0, 0, 1, 1, 2, 2]


def test_command_line_overrides_apply_to_every_row(tmp_path):
    path = write(tmp_path, "tables: [1a]\ngrid:\n  - {label: 'a={loss.alpha}', axes: {loss.alpha: [0.25, 0.5]}}\n")
    sweep = load_sweep(path, overrides=["train.iterations=5"])
    assert [t.config.train.iterations for t in sweep.trials] == [5, 5]
    assert [t.label for t in sweep.trials] == ["a=0.25", "a=0.5"]


# ----------------------------------------------------------------------------------------------
# mistakes: one line, naming the file and the key


@pytest.mark.parametrize("text,fragments", [
    ("tables: [1a]\nrowz: []\n", ["unknown top-level key 'rowz'", "'rows'"]),
    ("tables: [1a]\nrows:\n  - {label: x, set: {loss.alpah: 0.5}}\n", ["rows[0]", "loss.alpah", "'loss.alpha'"]),
    ("tables: [1a]\nbase: {train: {iteraions: 5}}\nrows: [{label: x}]\n", ["base", "train.iteraions", "'train.iterations'"]),
    ("tables: [1a]\ngrid:\n  - {label: x, axes: {loss.alhpa: [0.1]}}\n", ["grid[0]", "loss.alhpa", "'loss.alpha'"]),
    ("tables: [1a]\nrows:\n  - {label: x, set: {train.iterations: many}}\n", ["train.iterations", "int"]),
    ("tables: [1a]\nrows:\n  - {label: x, set: {loss.alpha: 1.5}}\n", ["rows[0]", "loss.alpha=1.5", "[0, 1]"]),
    ("tables: [1a]\nrows:\n  - {label: x, set: {train.lr: -0.1}}\n", ["train.lr", "positive"]),
    ("tables: [1a]\ngrid:\n  - {label: x, axes: {}}\n", ["grid[0]", "empty grid"]),
    ("tables: [1a]\ngrid:\n  - {label: x, axes: {loss.alpha: []}}\n", ["empty grid", "loss.alpha"]),
    ("tables: [1a]\nrows:\n  - {label: x}\n  - {label: x, set: {loss.alpha: 0.5}}\n", ["duplicate label 'x'", "1a"]),
    ("tables: [9z]\nrows: [{label: x}]\nclaims:\n  - {kind: wins, a: x, b: x}\n", ["unknown claim kind 'wins'"]),
    ("tables: [1a, 1a]\nrows: [{label: x}]\n", ["table '1a' is listed twice"]),
    ("tables: [1a]\nrows: [{table: 1b, label: x}]\n", ["table '1b' is not in the sweep's tables"]),
    ("tables: [1a]\ngrid:\n  - {label: 'a={loss.gamma}', axes: {loss.alpha: [0.1]}}\n", ["{loss.gamma}", "axes"]),
    ("tables: [1a]\n", ["no rows"]),
    ("tables: [1a]\nprofiles: {laptop: {}}\nrows: [{label: x}]\n", ["profiles.laptop", "unknown profile"]),
    ("tables: [1a]\ngrid:\n  - {label: 'a', axes: {loss.alpha: [0.1, 0.2]}}\nprofiles: {cpu: {axes: {loss.alpha: [0.3]}}}\n",
     ["profiles.cpu.axes.loss.alpha", "2"]),
    ("tables: [1a]\nresources: {cpus_per_trial: -1}\nrows: [{label: x}]\n", ["cpus_per_trial=-1", "out of range"]),
])
def test_sweep_mistakes_are_one_line_errors_naming_file_and_key(tmp_path, text, fragments):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_profile_is_refused_listing_the_known_ones():
    with pytest.raises(ConfigError, match="unknown profile 'laptop'.*cpu, gpu, paper"):
        load_sweep(SWEEPS / "alpha_gamma.yaml", profile="laptop")


def test_missing_dataset_path_is_refused_before_anything_runs():
    # the paper profile points at COCO where this machine has none
    with pytest.raises(ConfigError, match=r"data\.train\.annotations=.*does not exist"):
        load_sweep(SWEEPS / "alpha_gamma.yaml", profile="paper", check_paths=True)


# ----------------------------------------------------------------------------------------------
# --dry-run


def test_dry_run_lists_every_trial_and_starts_nothing(tmp_path, capsys, monkeypatch):
    from orchestrator import runner

    def must_not_run(*args, **kwargs):
        raise AssertionError("--dry-run started Ray or a trial")

    monkeypatch.setattr(runner, "start_ray", must_not_run)
    monkeypatch.setattr(runner, "run_trials", must_not_run)
    store, storage = tmp_path / "mlflow.db", tmp_path / "ray"
    rc = main(["run", str(SWEEPS / "alpha_gamma.yaml"), "--dry-run", "--tracking-uri", f"sqlite:///{store}",
               "--storage-path", str(storage)])
    out = capsys.readouterr().out
    assert rc == 0
    sweep = load_sweep(SWEEPS / "alpha_gamma.yaml")
    for trial in sweep.trials:
        assert trial.key in out and trial.memberships[0].label in out
    assert "loss.alpha=0.999 loss.gamma=0" in out  # the settings that differ from the base
    assert not store.exists() and not storage.exists()


# ----------------------------------------------------------------------------------------------
# seeds per row, keys that ignore evaluation settings, numbers as OmegaConf reads them


def test_a_row_can_run_more_seeds_than_the_others_and_a_seed_redraws_data_and_training(tmp_path):
    path = write(tmp_path, "tables: [1b]\nrows:\n  - {label: decisive, seeds: [0, 1, 2], set: {loss.gamma: 2.0}}\n"
                           "  - {label: other, set: {loss.gamma: 1.0}}\n")
    sweep = load_sweep(path)
    by = {}
    for t in sweep.trials:
        by.setdefault(t.label, []).append((t.config.train.seed, t.config.data.synthetic.seed))
    assert sorted(by["decisive"]) == [(0, 0), (1, 1), (2, 2)] and by["other"] == [(0, 0)]
    assert sweep.num_rows == 4 and len({t.key for t in sweep.trials}) == 4


def test_seeds_are_offsets_so_set_train_seed_moves_the_whole_sweep(tmp_path):
    path = write(tmp_path, "tables: [1b]\nseeds: [0, 1]\nrows:\n  - {label: x, set: {loss.gamma: 2.0}}\n")
    moved = load_sweep(path, overrides=["train.seed=10", "data.synthetic.seed=20"])
    assert sorted((t.config.train.seed, t.config.data.synthetic.seed) for t in moved.trials) == [(10, 20), (11, 21)]
    assert not {t.key for t in moved.trials} & {t.key for t in load_sweep(path).trials}


def test_seed_zero_keeps_the_key_a_row_had_without_seeds(tmp_path):
    plain = write(tmp_path, "tables: [1b]\nrows:\n  - {label: x, set: {loss.gamma: 2.0}}\n", "a.yaml")
    seeded = write(tmp_path, "tables: [1b]\nrows:\n  - {label: x, seeds: [0, 1], set: {loss.gamma: 2.0}}\n", "b.yaml")
    assert load_sweep(plain).trials[0].key in {t.key for t in load_sweep(seeded).trials}


def test_evaluation_settings_stay_out_of_the_trial_key():
    base = load_config("cpu")
    for change in ("eval.every=60", "eval.score_thresh=0.01", "eval.batch_size=3", "data.max_val_images=50"):
        assert trial_key(load_config("cpu", overrides=[change])) == trial_key(base), change
    assert trial_key(load_config("cpu", overrides=["loss.alpha=0.5"])) != trial_key(base)


def test_pretrain_settings_count_only_for_a_synthetic_backbone():
    scratch = SCRATCH_BACKBONE
    base = load_config("cpu", overrides=scratch)
    assert trial_key(load_config("cpu", overrides=scratch + ["pretrain.iterations=7"])) == trial_key(base)
    synthetic = ["model.backbone_weights=synthetic", "model.backbone_norm=frozen_bn", "model.freeze_at=2"]
    a = load_config("cpu", overrides=synthetic)
    b = load_config("cpu", overrides=synthetic + ["pretrain.iterations=7"])
    c = load_config("cpu", overrides=synthetic + ["pretrain.num_threads=1"])  # other weights' last bits
    assert trial_key(a) != trial_key(b) and trial_key(a) != trial_key(c)


def test_numbers_in_sweep_files_are_read_as_omegaconf_reads_them(tmp_path):
    """PyYAML alone (YAML 1.1) reads 1e-1 as a string; a label format then cannot format it."""
    path = write(tmp_path, "tables: [1a]\ngrid:\n  - label: 'CE alpha={loss.alpha:.3g}'\n"
                           "    axes: {loss.alpha: [1e-1, 2.5e-1]}\n    set: {loss.gamma: 0}\n")
    sweep = load_sweep(path)
    assert [t.label for t in sweep.trials] == ["CE alpha=0.1", "CE alpha=0.25"]
    assert [t.config.loss.alpha for t in sweep.trials] == [0.1, 0.25]


def test_set_may_come_before_the_sweep_file(capsys):
    assert main(["run", "--set", "train.iterations=3", str(SWEEPS / "prior_init.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "--set train.iterations=3" in out and "dry run: nothing started" in out


def test_a_shipped_sweep_is_found_by_its_name_from_any_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "sweeps/prior_init.yaml", "--dry-run"]) == 0
    assert main(["run", "prior_init", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("sweep prior_init") == 2
    assert main(["run", "no_such_sweep", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "no shipped sweep has that name" in err and "alpha_gamma" in err


def test_the_paper_profiles_dry_run_names_its_backbone_weights(bccd, capsys):
    ann, images = bccd / "annotations", bccd / "images"
    data = [f"data.train.annotations={ann / 'instances_train.json'}", f"data.train.images={images}",
            f"data.val.annotations={ann / 'instances_val.json'}", f"data.val.images={images}"]
    assert main(["run", "prior_init", "--profile", "paper", "--dry-run", "--set", *data]) == 0
    out = capsys.readouterr().out
    assert "backbone: ResNet-50, torchvision's ImageNet weights IMAGENET1K_V1" in out and "frozen_bn, freeze_at 2" in out


def test_seed_k_is_a_full_draw_including_the_backbone():
    sweep = load_sweep(SWEEPS / "prior_init.yaml")
    for t in sweep.trials:
        assert t.config.train.seed == t.config.data.synthetic.seed == t.config.pretrain.seed == t.seed
    keys = {t.config.pretrain.seed for t in sweep.trials}
    assert keys == set(CONFIRMATORY)  # each seed fine-tunes a backbone of its own


def test_another_profile_or_set_is_a_variant_with_its_own_parent():
    assert load_sweep(SWEEPS / "anchors.yaml").variant == "default"
    assert load_sweep(SWEEPS / "anchors.yaml", overrides=["train.seed=7"]).variant == "--set train.seed=7"
    assert load_sweep(SWEEPS / "anchors.yaml", profile="gpu").variant == "profile gpu"


def test_a_sweep_may_declare_a_table_of_its_own(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("tables: [mine]\nrows:\n  - {label: a, set: {loss.gamma: 1.0}}\n  - {table: mine, label: b}\n")
    sweep = load_sweep(path)
    assert sweep.tables == ["mine"] and {m.table for t in sweep.trials for m in t.memberships} == {"mine"}
    assert sweep.declaration.tables["mine"].paper is False
