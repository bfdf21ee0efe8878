"""The prior P: token layout and causal mask, null text, normalisation, candidate choice, learning a batch."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mav_train.components.base import DiffusionComponent
from mav_train.components.prior import Prior, select_candidates
from mav_train.components.registry import load_component
from mav_train.config.load import load_config
from mav_train.config.schema import PriorConfig
from mav_train.nn.prior import EXTRA_TOKENS, PriorTransformer, prior_attention_mask
from tests.components.test_decoder import Repeat, toy_batch

# The tiny random CLIP of the schema's defaults (embedding 32, text width 64, 32 tokens): nothing to train.
TINY = ["clip.model=custom", "clip.pretrained=null", "prior.embed_dim=32", "prior.text_dim=64",
        "prior.text_tokens=32", "prior.dim=64", "prior.depth=2", "prior.heads=4", "diffusion.sample_steps=8",
        "ema.decay=0.9", "optim.warmup_steps=5", "optim.lr=2e-3", "logger=none"]


def tiny_prior(*overrides: str) -> Prior:
    return Prior(load_config("demo/prior", [*TINY, *overrides]))


def test_attention_mask_is_causal_and_hides_padding():
    text_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    mask = prior_attention_mask(text_mask)
    length = 4 + EXTRA_TOKENS
    assert mask.shape == (2, 1, length, length)
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    assert torch.equal(mask[1, 0], causal)  # nothing padded: exactly causal
    assert not mask[0, 0, :, 2:4].any()  # padding tokens are nobody's keys
    assert torch.equal(mask[0, 0, :, 4:], causal[:, 4:])
    assert mask[:, 0, :, 0].all()  # every row keeps the start token: none is empty


def _inputs(cfg: PriorConfig, b: int = 3, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    mask = torch.arange(cfg.text_tokens) < torch.tensor([[3], [5], [cfg.text_tokens]])[:b]
    return {"x_t": torch.randn(b, cfg.embed_dim, generator=g), "t": torch.tensor([1, 500, 999])[:b],
            "text_states": torch.randn(b, cfg.text_tokens, cfg.text_dim, generator=g), "text_mask": mask,
            "text_emb": torch.randn(b, cfg.embed_dim, generator=g)}


def test_token_layout_and_causality():
    cfg = PriorConfig(embed_dim=8, text_dim=12, text_tokens=6, dim=16, depth=2, heads=2)
    net = PriorTransformer(cfg).eval()
    inputs = _inputs(cfg)
    tokens, _ = net.tokens(inputs["x_t"], inputs["t"], inputs["text_states"], inputs["text_mask"],
                           inputs["text_emb"], None)
    assert tokens.shape == (3, cfg.text_tokens + EXTRA_TOKENS, cfg.dim)
    # Layout: text states, pooled text, timestep, noised image embedding, query (each checked by its projection).
    n = cfg.text_tokens
    assert torch.allclose(tokens[:, :n] - net.pos_emb[:n], net.text_proj(inputs["text_states"]), atol=1e-6)
    assert torch.allclose(tokens[:, n] - net.pos_emb[n], net.pooled_proj(inputs["text_emb"]), atol=1e-6)
    assert torch.allclose(tokens[:, n + 1] - net.pos_emb[n + 1], net.time_emb(inputs["t"]), atol=1e-6)
    assert torch.allclose(tokens[:, n + 2] - net.pos_emb[n + 2], net.x_proj(inputs["x_t"]), atol=1e-6)
    assert torch.allclose(tokens[:, n + 3] - net.pos_emb[n + 3], net.query.expand(3, -1), atol=1e-6)
    out = net(**inputs)
    assert out.shape == (3, cfg.embed_dim)
    # Padding text states change nothing; a real text state does.
    changed = {**inputs, "text_states": inputs["text_states"].clone()}
    changed["text_states"][0, 4] += 10.0  # row 0 has 3 real tokens
    assert torch.allclose(net(**changed)[0], out[0], atol=1e-5)
    changed["text_states"][0, 1] += 10.0
    assert not torch.allclose(net(**changed)[0], out[0], atol=1e-3)
    # Dropped text: the output no longer depends on the text at all.
    drop = torch.tensor([True, False, True])
    dropped = net(**inputs, drop_text=drop)
    other = net(**{**inputs, "text_states": torch.randn_like(inputs["text_states"]),
                   "text_emb": torch.randn_like(inputs["text_emb"])}, drop_text=drop)
    assert torch.allclose(dropped[drop], other[drop], atol=1e-5)
    assert not torch.allclose(dropped[~drop], other[~drop], atol=1e-3)


def test_last_block_computes_the_query_alone_with_the_same_numbers_and_gradients():
    # The final block computes only the query token's output; run every block in full instead and read the last
    # token: the prediction and every parameter's gradient must be the same.
    cfg = PriorConfig(embed_dim=8, text_dim=12, text_tokens=6, dim=16, depth=3, heads=2)
    net = PriorTransformer(cfg)
    inputs = {**_inputs(cfg), "drop_text": torch.tensor([False, True, False])}
    fast = net(**inputs)
    fast.square().sum().backward()
    fast_grads = {name: p.grad.clone() for name, p in net.named_parameters()}
    net.zero_grad()
    x, mask = net.tokens(inputs["x_t"], inputs["t"], inputs["text_states"], inputs["text_mask"],
                         inputs["text_emb"], inputs["drop_text"])
    attn_mask = prior_attention_mask(mask)
    for block in net.blocks:
        x = block(x, attn_mask)
    full = net.to_out(net.norm_out(x[:, -1]))
    full.square().sum().backward()
    assert torch.allclose(fast, full, atol=1e-6)
    for name, p in net.named_parameters():
        assert torch.allclose(fast_grads[name], p.grad, atol=1e-5), name


def test_text_prefix_computed_once_gives_the_same_predictions_and_samples():
    # Sampling computes the text tokens' keys and values once and runs only the three step tokens: the network's
    # output and the sampled embeddings must equal those of the full sequence.
    cfg = PriorConfig(embed_dim=8, text_dim=12, text_tokens=6, dim=16, depth=3, heads=2)
    net = PriorTransformer(cfg).eval()
    inputs = _inputs(cfg)
    drop = torch.tensor([False, True, False])
    text = {k: inputs[k] for k in ("text_states", "text_mask", "text_emb")}
    prefix = net.text_prefix(**text, drop_text=drop)
    for t in (torch.tensor([0, 500, 999]), torch.tensor([7, 7, 7])):
        full = net(inputs["x_t"], t, **text, drop_text=drop)
        assert torch.allclose(net(inputs["x_t"], t, prefix=prefix), full, atol=1e-5)
    for name, value in text.items():
        with pytest.raises(ValueError, match="not both"):
            net(inputs["x_t"], inputs["t"], **{name: value}, prefix=prefix)
    with pytest.raises(ValueError, match="rows"):
        net(inputs["x_t"][:2], inputs["t"][:2], prefix=prefix)

    prior = tiny_prior().eval()
    captions = ["a red circle at the top left on a blue background", "a small green star"]

    def embeddings() -> torch.Tensor:
        return prior.generate(captions, num_candidates=2, generator=torch.Generator().manual_seed(0))

    cached = embeddings()
    prior.network_fn = lambda net, cond, b, estimate=None: DiffusionComponent.network_fn(prior, net, cond, b,
                                                                                         estimate)  # full sequence
    assert torch.allclose(cached, embeddings(), atol=1e-5)


def test_prior_refuses_other_conditions():
    cfg = PriorConfig(embed_dim=8, text_dim=12, text_tokens=6, dim=16, depth=1, heads=2)
    with pytest.raises(ValueError, match="text only"):
        PriorTransformer(cfg)(**_inputs(cfg), image_emb=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="divisible"):
        PriorTransformer(PriorConfig(dim=10, heads=4))


@pytest.mark.parametrize("normalization", ["l2", "standardize"])
def test_normalisation_round_trip(normalization):
    prior = tiny_prior(f"prior.normalization={normalization}")
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(256, 32, generator=g) * 0.3 + torch.linspace(-1, 1, 32)
    emb = F.normalize(emb, dim=-1) * 7.5  # CLIP embeddings of one norm, as the l2 mode assumes
    prior.set_statistics(emb)
    x0 = prior.normalize(emb)
    if normalization == "l2":
        assert torch.allclose(x0.norm(dim=-1), torch.full((256,), math.sqrt(32)), atol=1e-4)
    else:
        assert torch.allclose(x0.mean(0), torch.zeros(32), atol=1e-4)
        assert torch.allclose(x0.std(0), torch.ones(32), atol=1e-3)
    assert torch.allclose(prior.denormalize(x0), emb, atol=1e-4)
    # The statistics are buffers: they travel in the checkpoint.
    state = prior.state_dict()
    assert {"emb_mean", "emb_std", "emb_norm", "stats_count"} <= set(state)
    assert int(state["stats_count"]) == 256


def test_prior_refuses_clamping_x0():
    with pytest.raises(ValueError, match="clip_denoised"):
        tiny_prior("diffusion.clip_denoised=true")


def test_candidate_selection_keeps_the_most_text_like():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[[0.0, 5.0], [3.0, 0.1]],  # row 0: the second is closer to the text
                               [[0.2, 2.0], [1.0, 0.0]]])  # row 1: the first
    chosen = select_candidates(candidates, text)
    assert torch.equal(chosen, torch.stack([candidates[0, 1], candidates[1, 0]]))


def _fixed_loss(prior: Prior, batch: dict) -> float:
    prior.eval()
    with torch.no_grad():
        x0, cond = prior.prepare_batch(batch)
        losses = [prior.diffusion_loss(x0, cond, generator=torch.Generator().manual_seed(s), dropout=False)
                  for s in range(4)]
    prior.train()
    return float(torch.stack(losses).mean())


def test_prior_learns_a_small_batch_and_samples_it(tmp_path):
    """A prior that cannot learn fails here: after 150 steps on 8 toy pairs its loss must fall, and its sampled
    embeddings (through the checkpoint) must sit closer to their own image than to the others'."""
    torch.manual_seed(0)
    prior = tiny_prior("prior.num_candidates=1", "model.p_drop_text=0.0", "diffusion.guidance_scale=1.0")
    batch = toy_batch(8, resolution=32)
    prior.set_statistics(prior.clip.encode_image(batch["clip_image"]))
    before = _fixed_loss(prior, batch)
    trainer = L.Trainer(max_steps=150, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, gradient_clip_val=1.0, default_root_dir=tmp_path)
    trainer.fit(prior, train_dataloaders=DataLoader(Repeat(batch, 1000), batch_size=None))
    after = _fixed_loss(prior, batch)
    assert after < 0.3 * before, (before, after)
    path = tmp_path / "prior.ckpt"
    trainer.save_checkpoint(path)
    loaded = load_component(path)
    assert torch.equal(loaded.emb_norm, prior.emb_norm)
    pred = loaded.generate(batch["caption"], generator=torch.Generator().manual_seed(0))
    truth = loaded.clip.encode_image(batch["clip_image"])
    sims = F.normalize(pred, dim=-1) @ F.normalize(truth, dim=-1).T
    own = sims.diagonal()
    assert pred.shape == truth.shape
    assert own.mean() > 0.9, own
    assert (own >= sims.max(dim=1).values - 1e-6).float().mean() >= 0.75, sims
