"""Spatial pooling of the vision towers: the grid keeps where in the frame something is; cls and mean stay."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, SiglipVisionConfig

from affectllm.config import RecipeError, load_model_config
from affectllm.model.build import TINY_VISION, build_model, load_pretrained
from affectllm.model.encoders.vision import VisionTower, feature_side, set_spatial_pooling

TINY_VIT = TINY_VISION  # the tiny preset's CLIP-style tower: 32 px, 4x4 patches of 8 px
# a convolutional tower (transformers' ResNet): 64 px in, stride 8, an 8x8 map of 64 channels
TINY_RESNET = dict(model_type="resnet", num_channels=3, embedding_size=32, hidden_sizes=[32, 64], depths=[1, 1],
                   layer_type="basic", hidden_act="relu", downsample_in_first_stage=False, image_size=64)


def _tower(pooling: str, grid: int = 2, spec: dict | None = None) -> VisionTower:
    torch.manual_seed(0)
    config = AutoConfig.for_model(**(spec or TINY_VIT))
    set_spatial_pooling(config, pooling, grid)
    return VisionTower(config).eval()


def _mirrored_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Two frames whose patch *sets* are equal but laid out left-right mirrored at patch granularity."""
    torch.manual_seed(1)
    frame = torch.randn(1, 1, 3, 32, 32)
    frame[..., 16:] = 0.0  # the content sits in the left half...
    mirrored = torch.zeros_like(frame)
    mirrored[..., 16:] = frame[..., :16]  # ...or the right half (same patches, other place)
    return frame, mirrored


@pytest.mark.parametrize("pooling, width", [("grid", 4 * 32), ("cls", 32), ("mean", 32)])
def test_every_pooling_gives_one_vector_per_frame_of_the_stated_width(pooling, width):
    tower = _tower(pooling)
    out = tower(torch.randn(2, 3, 3, 32, 32))
    assert out.shape == (2, 3, width) and tower.hidden_size == width


def test_the_grid_tells_where_the_patch_mean_does_not():
    """Content moved from the left half to the right half shows up in the right-hand cells of the grid."""
    frame, mirrored = _mirrored_pair()
    grid = _tower("grid")
    with torch.no_grad():
        a, b = grid(frame)[0, 0].view(4, 32), grid(mirrored)[0, 0].view(4, 32)
    # cells 0 and 2 (left column) of the first frame carry what cells 1 and 3 (right column) of the mirror carry
    left, right = a[[0, 2]], b[[1, 3]]
    assert (left - right).abs().mean() < 0.5 * (a[[0, 2]] - b[[0, 2]]).abs().mean()


def test_grid_size_is_configurable_and_checked():
    assert _tower("grid", 4).hidden_size == 16 * 32
    config = AutoConfig.for_model(**TINY_VIT)
    with pytest.raises(ValueError, match="must be 1..4"):
        set_spatial_pooling(config, "grid", 5)
    with pytest.raises(ValueError, match="expected one of"):
        set_spatial_pooling(config, "max", 2)


def test_siglip_cls_is_its_pooled_head_and_grid_reads_all_tokens():
    config = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=32, patch_size=8)
    set_spatial_pooling(config, "grid", 2)
    tower = VisionTower(config).eval()
    assert tower(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 128)
    set_spatial_pooling(config, "cls", 2)
    assert VisionTower(config).eval()(torch.randn(1, 2, 3, 32, 32)).shape == (1, 2, 32)


def test_a_config_without_the_field_keeps_the_patch_mean_it_was_trained_with():
    assert VisionTower(AutoConfig.for_model(**TINY_VIT)).spatial == "mean"


@pytest.mark.parametrize("pooling, width", [("grid", 4 * 64), ("cls", 64), ("mean", 64)])
def test_a_resnet_tower_pools_its_feature_map(pooling, width):
    """A ResNet (64 px in, stride 8: an 8x8 map of 64 channels) pools like the transformers."""
    tower = _tower(pooling, spec=TINY_RESNET)
    assert tower.conv and tower.side == feature_side(tower.config) == 8
    out = tower(torch.randn(2, 3, 3, 64, 64))
    assert out.shape == (2, 3, width) and tower.hidden_size == width
    with pytest.raises(ValueError, match="must be 1..8"):
        set_spatial_pooling(AutoConfig.for_model(**TINY_RESNET), "grid", 9)


def test_the_resnet_grid_tells_where_too():
    torch.manual_seed(1)
    frame = torch.randn(1, 1, 3, 64, 64)
    frame[..., 32:] = 0.0
    mirrored = torch.zeros_like(frame)
    mirrored[..., 32:] = frame[..., :32]
    tower = _tower("grid", spec=TINY_RESNET)
    with torch.no_grad():
        a, b = tower(frame)[0, 0].view(4, 64), tower(mirrored)[0, 0].view(4, 64)
    assert (a[[0, 2]] - b[[1, 3]]).abs().mean() < 0.5 * (a[[0, 2]] - b[[0, 2]]).abs().mean()


def test_the_tiny_preset_defaults_to_the_grid_and_a_saved_model_keeps_it(tmp_path):
    from transformers import AutoModelForCausalLM

    model, processor = build_model(load_model_config(["preset=tiny"]))
    assert model.model.encoders["video"].spatial == "grid" and model.model.encoders["video"].hidden_size == 128
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.model.encoders["video"].spatial == "grid" and again.model.encoders["face"].grid == 2
    other, _ = build_model(load_model_config(["preset=tiny", "spatial_pooling.video=mean"]))
    assert other.model.encoders["video"].hidden_size == 32 and other.model.encoders["face"].spatial == "grid"
    with pytest.raises(RecipeError, match="spatial_grid"):
        build_model(load_model_config(["preset=tiny", "spatial_grid=9"]))


def test_projector_norm_is_per_modality_and_saved(tmp_path):
    from torch import nn
    from transformers import AutoModelForCausalLM

    model, processor = build_model(load_model_config(["preset=tiny", "projector_norm=[video]"]))
    assert isinstance(model.model.projectors["video"].norm, nn.LayerNorm)
    assert isinstance(model.model.projectors["audio"].norm, nn.Identity)
    model.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert again.config.projector_norm == ["video"] and isinstance(again.model.projectors["video"].norm, nn.LayerNorm)
    plain, _ = build_model(load_model_config(["preset=tiny", "projector_norm=[]"]))
    assert all(isinstance(p.norm, nn.Identity) for p in plain.model.projectors.values())


def test_a_saved_model_with_resnet_towers_loads_with_the_llms_sdpa_kernel(tmp_path):
    """A stage loads its start asking for the LLM's sdpa kernel: a ResNet tower (no attention) must still build."""
    from transformers import AutoConfig as Auto

    model, processor = build_model(load_model_config(["preset=tiny"]))
    config = Auto.for_model(**TINY_RESNET)
    set_spatial_pooling(config, "grid", 4)
    model.model.encoders["video"] = VisionTower(config)
    model.config.vision_config = config
    model.model.projectors["video"] = type(model.model.projectors["video"])(16 * 64, 128, norm=True)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again, _ = load_pretrained(tmp_path, attn_implementation="sdpa")
    assert again.model.encoders["video"].conv and again.model.encoders["video"].hidden_size == 16 * 64


def test_a_readout_reaches_the_projector_and_is_saved_with_its_tower(tmp_path):
    """A tower's stage 0 head (its readout) goes into the projector beside the pooled features where
    ``model.readout`` names the modality; saved and loaded with the tower; dropped, the projector reads none."""
    from transformers import AutoModelForCausalLM

    model, processor = build_model(load_model_config(["preset=tiny"]))
    inner = model.model.eval()
    assert inner.config.readout == ["video", "audio", "face", "words"] and inner.projectors["video"].extra_dim == 0
    readout = inner.attach_readout("video", ["AU1", "AU4"], ["happy", "sad", "angry"])
    assert readout.width == 2 + 3 + 2 and inner.projectors["video"].extra_dim == 7
    feats = torch.randn(2, 8, inner.encoders["video"].hidden_size)
    values = readout(feats)
    assert torch.allclose(values[:, 2:5].sum(-1), torch.ones(2)) and bool((values[:, :2] > 0).all())
    before = inner.project_media("video", feats)
    with torch.no_grad():
        readout.linear.bias.add_(1.0)  # the same features, another verdict
    assert not torch.allclose(inner.project_media("video", feats), before)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert again.config.vision_config.readout_aus == ["AU1", "AU4"] and again.model.encoders["audio"].readout is None
    assert torch.allclose(again.model.project_media("video", feats), inner.project_media("video", feats))
    inner.drop_readout("video")
    assert inner.encoders["video"].readout is None and inner.projectors["video"].extra_dim == 0
    assert not hasattr(inner.config.vision_config, "readout_emotions")
    # a modality not in model.readout keeps its tower's readout but its projector does not read it
    plain, _ = build_model(load_model_config(["preset=tiny", "readout=[]"]))
    plain.model.attach_readout("video", [], ["happy"])
    assert plain.model.projectors["video"].extra_dim == 0 and plain.model.encoders["video"].readout is not None
    with pytest.raises(RecipeError, match="model.readout"):
        build_model(load_model_config(["preset=tiny", "readout=[au]"]))


def test_the_builtin_tiny_resnet_builds_without_a_saved_directory():
    model, processor = build_model(load_model_config(["preset=tiny", "vision=builtin:tiny-resnet", "spatial_grid=4"]))
    video = model.model.encoders["video"]
    assert video.conv and video.hidden_size == 16 * 64 and processor.image_processor.size["shortest_edge"] == 64
    assert model.model.encode_media("video", torch.randn(1, 2, 3, 64, 64)).shape == (1, 2, 16 * 64)


@pytest.mark.parametrize("name", ["mean", "attention"])
def test_a_pooler_pools_each_clip_over_its_own_frames_in_one_call(name):
    """With ``lengths`` a built-in pooler equals pooling each clip's valid frames alone, in one module call: under
    ZeRO-3 every module call is a step of the parameter prefetcher's trace, and one call per clip (a different
    count on ranks holding different numbers of clips) put two ranks' collectives out of step."""
    from affectllm.model.pooling import build_pooler, takes_lengths

    torch.manual_seed(0)
    pooler = build_pooler(name, 16, 3).eval()
    if name == "attention":
        torch.nn.init.normal_(pooler.queries)
    x, lengths = torch.randn(3, 7, 16), torch.tensor([7, 2, 5])
    calls = []
    pooler.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        batched = pooler(x, lengths)
        assert len(calls) == 1 and takes_lengths(pooler)
        alone = torch.cat([pooler(x[i:i + 1, :n]) for i, n in enumerate(lengths.tolist())])
    torch.testing.assert_close(batched, alone, rtol=0, atol=1e-6)
