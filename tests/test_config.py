"""Config schema: profiles load, and each mistake is a one-line error naming where and what."""
import pytest

from retina.config import ConfigError, PROFILES_DIR, load_config, valid_keys


@pytest.mark.parametrize("profile", ["cpu", "gpu", "paper"])
def test_every_shipped_profile_validates(profile):
    cfg = load_config(profile)
    assert cfg.train.iterations >= 1


def test_defaults_are_the_papers_recipe():
    cfg = load_config(None)
    assert (cfg.model.depth, cfg.model.fpn_channels, cfg.model.head_convs) == (50, 256, 4)
    assert (cfg.loss.alpha, cfg.loss.gamma, cfg.model.prior_prob) == (0.25, 2.0, 0.01)
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.lr) == (90000, 16, 0.01)
    assert [round(s * 90000) for s in cfg.train.lr_steps] == [60000, 80000]
    assert (cfg.matcher.fg_iou, cfg.matcher.bg_iou, cfg.loss.smooth_l1_beta) == (0.5, 0.4, 0.11)


def test_dotlist_overrides_apply_with_yaml_types():
    cfg = load_config("cpu", overrides=["loss.alpha=0.5", "anchors.aspect_ratios=[1.0]", "train.grad_clip_norm=null"])
    assert cfg.loss.alpha == 0.5 and list(cfg.anchors.aspect_ratios) == [1.0] and cfg.train.grad_clip_norm is None


def test_unknown_key_names_the_file_and_the_closest_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss:\n  alpah: 0.5\n")
    with pytest.raises(ConfigError) as e:
        load_config("cpu", files=[bad])
    msg = str(e.value)
    assert str(bad) in msg and "loss.alpah" in msg and "loss.alpha" in msg and "\n" not in msg


def test_wrong_type_names_the_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"train.iterations.*int"):
        load_config("cpu", overrides=["train.iterations=many"])


@pytest.mark.parametrize("override,key", [("loss.alpha=1.5", "loss.alpha"), ("train.lr=-0.1", "train.lr"),
                                          ("loss.gamma=-1", "loss.gamma"), ("model.depth=19", "model.depth"),
                                          ("loss.kind=hinge", "loss.kind"), ("train.compile=fast", "train.compile")])
def test_out_of_range_values_are_refused(override, key):
    with pytest.raises(ConfigError, match=key):
        load_config("cpu", overrides=[override])


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ConfigError, match="cpu, gpu, paper"):
        load_config("laptop")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("loss:\n  alpha: [0.5\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: YAML syntax error"):
        load_config("cpu", files=[bad])


def test_yaml_never_constructs_python_objects(tmp_path):
    bad = tmp_path / "evil.yaml"
    bad.write_text("loss: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="YAML"):
        load_config("cpu", files=[bad])


def test_missing_coco_path_is_named_when_paths_are_checked():
    with pytest.raises(ConfigError, match="data.train.annotations"):
        load_config("paper", overrides=["data.train.annotations=/nonexistent/x.json"], check_paths=True)


def test_valid_keys_cover_every_section():
    keys = valid_keys()
    for k in ("model.depth", "anchors.scales_per_octave", "matcher.fg_iou", "loss.ohem_pos_ratio",
              "data.train.annotations", "data.synthetic.seed", "train.grad_clip_norm", "eval.nms_thresh"):
        assert k in keys
    assert {p.stem for p in PROFILES_DIR.glob("*.yaml")} == {"cpu", "gpu", "paper"}
