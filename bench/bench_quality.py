"""The toy-world judge's numbers for the demo models (README "How well the demo models work").

    python -m bench.bench_quality                       # every demo run found under runs/demo/
    python -m bench.bench_quality --decoder runs/demo/decoder/last.ckpt --num 64 --out quality.json
    python -m bench.bench_quality --prior runs/demo/prior/last.ckpt --decoder runs/demo/decoder/last.ckpt

- clip: zero-shot accuracy of the toy CLIP on held-out images: its caption against every caption that differs
  in exactly one attribute (colour, background, shape, position, size).
- decoder: samples conditioned on the CLIP image embeddings of ``--num`` held-out toy images (seed 1; the demo
  data is seed 0), with the recipe's sampling settings, judged against the held-out captions; and two readings
  behind the judge's shape accuracy (``mav_train.evaluation.shape_probe``): ``behind_circles`` (for non-circles,
  is the best non-circle template the true shape; chance 0.25) and ``shape_swap`` (16 held-out scenes drawn as
  each shape, sampled from one noise: does the decoder draw the shape it is told).
- prior: text -> image through the demo prior and the decoder (the `generate` verb's code), on ``--num`` held-out
  prompts whose colour x shape pair the prior never read (its recipe's ``data.holdout_pairs``), judged against
  the prompts; and the cosine between the prior's embedding and the true image's CLIP embedding (median, mean),
  on those pairs and on ordinary held-out scenes; and the shape a linear probe of the CLIP's image embeddings
  (fit on rendered toy images) reads from the prior's embeddings. ``--write-prompts FILE`` writes those prompts
  for `generate`.
- temporal_decoder: videos conditioned on the first frame of held-out clips at fps 4, 8, 16 and 30; per-frame
  background and colour, identity consistency, and the mean per-frame displacement at each fps; and the same with
  one noise draw shared by every frame (``same_noise``): the motion the temporal layers make by themselves.
- sr_low / sr_high: held-out images at the SR net's output size, downsampled (antialiased) to its input size and
  super-resolved at several sampling noise levels; beside bicubic upsampling of the same inputs: PSNR against
  the true high-res image, low-res consistency (the output downsampled back vs the input), edge sharpness (see
  ``mav_train.evaluation.super_res``) and the judge's scores.
- interpolation (↑F): held-out clips rendered at 30 fps, every 5th frame kept, in-betweens generated: PSNR
  against the true frames beside cross-fade and nearest keyframe, the judge's centroid error against the true
  trajectory beside the nearest keyframe; extrapolation and animation: identity consistency and motion of the
  generated frames beside the true continuation (``mav_train.evaluation.interpolation``), and the same clips
  sampled with one noise draw for every frame of a window (``one_draw``): the motion ↑F makes by itself.
- temporal_sr_low: held-out clips (30 fps) downsampled and super-resolved by SR_l^t (an independent noise draw per
  frame, and one draw shared by the frames of a clip: ``shared_noise``), beside its SR_l (the
  ``init.checkpoint`` of the run, or ``--sr-low``) applied per frame with independent noise and with shared
  noise, and bicubic; the judge's background flicker of each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from datamodules.heldout import heldout_clips, heldout_images, heldout_pair_images
from mav_train.components.registry import load_component
from mav_train.evaluation.clip_zero_shot import toy_zero_shot
from mav_train.evaluation.embedding_probe import AttributeProbe, fit_probe
from mav_train.evaluation.learned_motion import frame_change, same_noise_sample
from mav_train.evaluation.shape_probe import behind_circles, shape_swap
from mav_train.evaluation.super_res import sr_measures
from mav_train.evaluation.toy_judge import score_images, score_videos

FPS_LEVELS = (4, 8, 16, 30)


def judge_clip(clip_ckpt: Path | None, decoder, num: int) -> dict:
    """Zero-shot reading of the CLIP a decoder was trained with (or of a clip component checkpoint)."""
    clip = _frozen_from(load_component(clip_ckpt)) if clip_ckpt is not None else decoder.clip
    images, captions = heldout_images(num, seed=1, resolution=32)
    return toy_zero_shot(clip, images, captions)


def _frozen_from(module):
    """A frozen CLIP with the weights of a clip component (through the open_clip export it writes)."""
    from mav_train.components.clip import EXPORT_NAME, export_open_clip
    from mav_train.config.schema import ClipConfig
    from mav_train.nn.encoders import FrozenCLIP

    path = export_open_clip(module.network, Path(tempfile.mkdtemp(prefix="bench_quality_")) / EXPORT_NAME)
    clip = module.cfg.clip
    return FrozenCLIP(ClipConfig(model=clip.model, pretrained=str(path), custom_cfg=clip.custom_cfg,
                                 tokenizer=clip.tokenizer))


@torch.no_grad()
def judge_decoder(module, num: int, seed: int = 0, batch: int = 32) -> dict:
    """Samples of the decoder conditioned on held-out images' CLIP embeddings, judged against their captions."""
    resolution = module.cfg.data.resolution
    images, captions = heldout_images(num, seed=1, resolution=resolution)
    generator = torch.Generator().manual_seed(seed)
    samples = []
    from mav_train.components.base import Conditions

    for start in range(0, num, batch):
        chunk = images[start:start + batch]
        cond = Conditions(image_emb=module.clip.encode_image(chunk))
        samples.append(module.sample(cond, tuple(chunk.shape), generator=generator))
    samples = torch.cat(samples)
    return {**score_images(samples, captions).as_dict(), "behind_circles": behind_circles(samples, captions),
            "shape_swap": shape_swap(module, num=min(num, 16))}


@torch.no_grad()
def prior_cosines(prior, images: torch.Tensor, captions: list[str], seed: int = 0, batch: int = 64,
                  probe: AttributeProbe | None = None) -> dict:
    """cos(prior's embedding for the caption, CLIP embedding of the true image): median and mean; the CLIP's
    zero-shot reading of the predicted embeddings (caption vs one-attribute variants), as of the true images; and
    with ``probe``, a linear probe's reading of the shape from the predicted and the true images' embeddings."""
    from mav_train.components.prior import cosine
    from mav_train.evaluation.clip_zero_shot import embedding_zero_shot

    generator = torch.Generator().manual_seed(seed)
    pred = torch.cat([prior.generate(captions[s:s + batch], generator=generator)
                      for s in range(0, len(captions), batch)])
    true = prior.clip.encode_image(images)
    cos = cosine(pred, true)
    out = {"cos_median": float(cos.median()), "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
           "zero_shot_pred": embedding_zero_shot(prior.clip, pred, captions),
           "zero_shot_true_image": toy_zero_shot(prior.clip, images, captions)}
    if probe is not None:
        out["shape_probe"] = {"pred": probe.accuracy(pred, captions), "true_image": probe.accuracy(true, captions),
                              "probe_held_out": probe.held_out_accuracy}
    return out


@torch.no_grad()
def judge_prior(prior, decoder, num: int, seed: int = 0, batch: int = 32) -> dict:
    """Prompts of held-out colour x shape pairs → prior → decoder (as `generate` does), judged; and cosines."""
    from mav_train.cli.generate import generate_images

    pairs = list(prior.cfg.data.holdout_pairs)
    images, captions = heldout_pair_images(num, pairs, seed=1, resolution=decoder.cfg.data.resolution)
    samples = torch.cat([generate_images(prior, decoder, captions[s:s + batch], seed=seed + s)[0]
                         for s in range(0, num, batch)])
    seen_images, seen_captions = heldout_images(num, seed=1, resolution=decoder.cfg.data.resolution)
    probe = fit_probe(prior.clip, "shape", resolution=decoder.cfg.data.resolution)
    return {"heldout_pairs": pairs, "judge": score_images(samples, captions).as_dict(),
            "unseen_pairs": prior_cosines(prior, images, captions, seed, probe=probe),
            "any_pairs": prior_cosines(prior, seen_images, seen_captions, seed, probe=probe)}


@torch.no_grad()
def judge_temporal_decoder(module, num: int, seed: int = 0, batch: int = 16, guidance: float | None = None,
                           same_noise_num: int = 16) -> dict:
    """Videos conditioned on held-out clips' first frames at several fps (guidance: the recipe's by default);
    judged per fps. Also, on the first ``same_noise_num`` clips, the same videos sampled with one noise draw for
    every frame (x_T and each stochastic step): frames can then differ only by what the temporal layers make of
    frame position and fps, so ``same_noise`` shows the motion D^t has learned, apart from what independent noise
    adds (``displacement_px``, and ``frame_change``: mean absolute change between consecutive frames, 0-255)."""
    cfg = module.cfg
    clips, captions = heldout_clips(num, seed=1, resolution=cfg.data.resolution, frames=cfg.data.num_frames)
    same = min(num, same_noise_num)
    out = {}
    for fps in FPS_LEVELS:
        generator = torch.Generator().manual_seed(seed)
        samples = []
        for start in range(0, num, batch):
            first = clips[start:start + batch, :, 0]
            samples.append(module.sample(module.video_conditions(first, fps), module.sample_shape(first.shape[0]),
                                         generator=generator, guidance_scale=guidance))
        out[f"fps{fps}"] = score_videos(torch.cat(samples), captions).as_dict()
        if same > 0:
            generator = torch.Generator().manual_seed(seed)
            firsts = [clips[s:min(s + batch, same), :, 0] for s in range(0, same, batch)]
            videos = torch.cat([same_noise_sample(module, module.video_conditions(first, fps), first.shape[0],
                                                  generator, guidance) for first in firsts])
            out[f"fps{fps}"]["same_noise"] = {**score_videos(videos, captions[:same]).as_dict(),
                                              "frame_change": frame_change(videos)}
    return out


SR_NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2)
SR_KEYS = ("shape", "color", "background", "readable")


def _judged(out: torch.Tensor, truth: torch.Tensor, low: torch.Tensor, captions: list[str], video: bool) -> dict:
    scores = (score_videos if video else score_images)(out, captions).as_dict()
    keep = (*SR_KEYS, "flicker") if video else SR_KEYS
    return {**sr_measures(out, truth, low), **{k: scores[k] for k in keep}}


@torch.no_grad()
def judge_super_res(module, num: int, seed: int = 0, batch: int = 16,
                    levels: tuple[float, ...] = SR_NOISE_LEVELS) -> dict:
    """SR_l or SR_h on held-out images at its output size, per sampling noise level, beside bicubic."""
    from mav_train.components.low_res import downsample, upsample

    size, low_size = module.cfg.data.resolution, module.cfg.model.low_res
    truth, captions = heldout_images(num, seed=1, resolution=size)
    low = downsample(truth, low_size)
    out: dict = {"bicubic": _judged(upsample(low, size), truth, low, captions, video=False)}
    for level in levels:
        generator = torch.Generator().manual_seed(seed)
        samples = torch.cat([module.upsample(low[i:i + batch], noise_level=level, generator=generator)
                             for i in range(0, num, batch)])
        out[f"level{level:g}"] = _judged(samples, truth, low, captions, video=False)
    return out


@torch.no_grad()
def judge_temporal_sr_low(module, sr_low, num: int, seed: int = 0, fps: float = 30.0) -> dict:
    """SR_l^t on held-out clips (independent and shared noise), beside SR_l per frame (independent and shared
    noise) and bicubic."""
    from einops import rearrange

    from mav_train.components.low_res import downsample, upsample
    from mav_train.pipeline import sr_high_on_video

    cfg = module.cfg
    truth, captions = heldout_clips(num, seed=1, resolution=cfg.data.resolution, frames=cfg.data.num_frames,
                                    fps=fps)
    low = downsample(truth, cfg.model.low_res)
    t = truth.shape[2]
    out: dict = {"protocol": f"{num} held-out clips, {t} frames at {fps:g} fps, "
                             f"{cfg.model.low_res} -> {cfg.data.resolution} px"}
    out["bicubic"] = _judged(upsample(low, cfg.data.resolution), truth, low, captions, video=True)
    generator = torch.Generator().manual_seed(seed)
    video = torch.cat([module.upsample(low[i:i + 1], fps=fps, generator=generator) for i in range(num)])
    out["temporal_sr_low"] = _judged(video, truth, low, captions, video=True)
    generator = torch.Generator().manual_seed(seed)
    video = torch.cat([module.upsample(low[i:i + 1], fps=fps, generator=generator, shared_noise=True)
                       for i in range(num)])
    out["temporal_sr_low_shared_noise"] = _judged(video, truth, low, captions, video=True)
    generator = torch.Generator().manual_seed(seed)
    frames = rearrange(low, "b c t h w -> (b t) c h w")
    independent = torch.cat([sr_low.upsample(frames[i:i + t], generator=generator)
                             for i in range(0, frames.shape[0], t)])
    independent = rearrange(independent, "(b t) c h w -> b c t h w", t=t)
    out["sr_low_independent_noise"] = _judged(independent, truth, low, captions, video=True)
    # Shared noise per clip, as SR_h runs on video (the same function works for any image SR net).
    shared = sr_high_on_video(sr_low, low, generator=torch.Generator().manual_seed(seed))
    out["sr_low_shared_noise"] = _judged(shared, truth, low, captions, video=True)
    return out


UPF_MODES = ("interpolate", "extrapolate", "animate")


@torch.no_grad()
def judge_interpolation(module, num: int, steps: int | None = None, modes: tuple[str, ...] = UPF_MODES,
                        one_draw_num: int | None = None) -> dict:
    """↑F: interpolation at skip 5 (16 keyframes -> 76 frames at 30 fps), extrapolation, animation (``modes``).
    Extrapolation and animation are also read with one noise draw for every frame of a window (``one_draw``; the
    same clips, or the first ``one_draw_num``): what ↑F moves by itself, apart from its frames' noise."""
    from mav_train.evaluation.interpolation import measure_animation, measure_extrapolation, measure_interpolation

    context = min(module.cfg.model.masks.max_known, module.window - 1)
    one = num if one_draw_num is None else min(num, one_draw_num)
    measures = {"interpolate": lambda: measure_interpolation(module, num, skip=5, keyframes=16, steps=steps),
                "extrapolate": lambda: {
                    **measure_extrapolation(module, num, context=context, n=16, steps=steps),
                    "one_draw": measure_extrapolation(module, one, context=context, n=16, steps=steps,
                                                      noise_share=1.0)},
                "animate": lambda: {**measure_animation(module, num, n=16, steps=steps),
                                    "one_draw": measure_animation(module, one, n=16, steps=steps, noise_share=1.0)}}
    return {mode: measures[mode]() for mode in modes}


def _flat(scores: dict) -> dict:
    """Nested dicts one level down as ``outer.inner`` keys (for one printed line)."""
    out = {}
    for key, value in scores.items():
        if isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/demo", help="where the demo run directories are")
    parser.add_argument("--clip", type=Path, help="a clip component checkpoint (default: the decoder's CLIP)")
    parser.add_argument("--decoder", type=Path)
    parser.add_argument("--temporal-decoder", type=Path)
    parser.add_argument("--prior", type=Path, help="a demo prior checkpoint (judged through --decoder)")
    parser.add_argument("--write-prompts", type=Path, help="write the prior's held-out-pair prompts, one a line")
    parser.add_argument("--sr-low", type=Path)
    parser.add_argument("--sr-high", type=Path)
    parser.add_argument("--temporal-sr-low", type=Path)
    parser.add_argument("--interpolation", type=Path, help="an interpolation (↑F) checkpoint")
    parser.add_argument("--steps", type=int, help="sampling steps for ↑F (default: the recipe's)")
    parser.add_argument("--strength", type=float,
                        help="↑F's model.sample_strength: 1 = from noise, lower = from the noised cross-fade of the "
                             "known frames (default: the checkpoint's)")
    parser.add_argument("--guidance", type=float, help="guidance scale of D^t and ↑F (default: each checkpoint's own)")
    parser.add_argument("--upf-modes", nargs="+", choices=UPF_MODES, default=list(UPF_MODES),
                        help="which of ↑F's measurements to run (interpolation is the slow one)")
    parser.add_argument("--sr-levels", type=float, nargs="+", default=list(SR_NOISE_LEVELS),
                        help="sampling noise levels of the low-res input to measure (sr_low / sr_high)")
    parser.add_argument("--num", type=int, default=64, help="held-out items per measurement")
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    decoder_path = args.decoder or _existing(runs / "decoder" / "last.ckpt")
    temporal_path = args.temporal_decoder or _existing(runs / "temporal_decoder" / "last.ckpt")
    sr_low_path = args.sr_low or _existing(runs / "sr_low" / "last.ckpt")
    sr_high_path = args.sr_high or _existing(runs / "sr_high" / "last.ckpt")
    temporal_sr_path = args.temporal_sr_low or _existing(runs / "temporal_sr_low" / "last.ckpt")
    torch.manual_seed(0)
    report: dict = {"protocol": f"{args.num} held-out toy items (seed 1), recipe sampling settings, toy judge"}
    decoder = load_component(decoder_path) if decoder_path else None
    if args.clip or decoder is not None:
        report["clip_zero_shot"] = judge_clip(args.clip, decoder, max(args.num, 256))
        print("clip zero-shot:", _fmt(report["clip_zero_shot"]))
    if decoder is not None:
        report["decoder"] = judge_decoder(decoder, args.num)
        print("decoder:", _fmt(report["decoder"]))
        print("decoder, behind the circles:", _fmt(report["decoder"]["behind_circles"]))
        for shape, reading in report["decoder"]["shape_swap"].items():
            print(f"decoder, told {shape}:", _fmt(reading))
    prior_path = args.prior or _existing(runs / "prior" / "last.ckpt")
    if prior_path:
        prior = load_component(prior_path)
        pairs = list(prior.cfg.data.holdout_pairs)
        if args.write_prompts:
            _, prompts = heldout_pair_images(args.num, pairs, seed=1)
            args.write_prompts.write_text("\n".join(prompts) + "\n")
        if decoder is None:  # the prior alone: its embeddings against the true images'
            probe = fit_probe(prior.clip, "shape")
            unseen = prior_cosines(prior, *heldout_pair_images(args.num, pairs, seed=1), probe=probe)
            report["prior"] = {"heldout_pairs": pairs, "unseen_pairs": unseen,
                               "any_pairs": prior_cosines(prior, *heldout_images(args.num, seed=1), probe=probe)}
            print("prior cos(pred, true image), unseen pairs:", _fmt(unseen), "| any pairs:",
                  _fmt(report["prior"]["any_pairs"]))
            print("CLIP zero-shot reading of the prior's embeddings, unseen pairs:", _fmt(unseen["zero_shot_pred"]),
                  "| of the true images:", _fmt(unseen["zero_shot_true_image"]))
        else:
            report["prior"] = judge_prior(prior, decoder, args.num)
            print("prior -> decoder on unseen pairs:", _fmt(report["prior"]["judge"]))
            print("prior cos(pred, true image), unseen pairs:", _fmt(report["prior"]["unseen_pairs"]),
                  "| any pairs:", _fmt(report["prior"]["any_pairs"]))
        for name in ("unseen_pairs", "any_pairs"):
            print(f"shape read by a linear probe of the CLIP's image embeddings, {name}:",
                  _fmt(report["prior"][name]["shape_probe"]))
    if temporal_path:
        report["temporal_decoder"] = judge_temporal_decoder(load_component(temporal_path), args.num,
                                                            guidance=args.guidance)
        for fps, scores in report["temporal_decoder"].items():
            print(f"temporal_decoder {fps}:", _fmt(scores))
            if "same_noise" in scores:
                print(f"temporal_decoder {fps}, one noise draw for every frame:", _fmt(scores["same_noise"]))
    for name, path in (("sr_low", sr_low_path), ("sr_high", sr_high_path)):
        if path:
            report[name] = judge_super_res(load_component(path), args.num, levels=tuple(args.sr_levels))
            for level, scores in report[name].items():
                print(f"{name} {level}:", _fmt(scores))
    if temporal_sr_path:
        module = load_component(temporal_sr_path)
        base = sr_low_path or _existing(Path(module.cfg.init.checkpoint or ""))
        if base is None:
            raise SystemExit("temporal_sr_low needs its SR_l: pass --sr-low (its init.checkpoint is not there)")
        report["temporal_sr_low"] = judge_temporal_sr_low(module, load_component(base), args.num)
        for name, scores in report["temporal_sr_low"].items():
            print(f"temporal_sr_low {name}:", scores if isinstance(scores, str) else _fmt(scores))
    interpolation_path = args.interpolation or _existing(runs / "interpolation" / "last.ckpt")
    if interpolation_path:
        # Sampling settings, not weights: the checkpoint's config with them replaced.
        settings = {}
        if args.strength is not None:
            settings["model"] = {"sample_strength": args.strength}
        if args.guidance is not None:
            settings["diffusion"] = {"guidance_scale": args.guidance}
        if settings:
            from mav_train.components.registry import component_from_checkpoint, load_checkpoint_file

            upf = component_from_checkpoint(load_checkpoint_file(interpolation_path), interpolation_path, settings)
        else:
            upf = load_component(interpolation_path)
        report["interpolation"] = judge_interpolation(upf, args.num, args.steps, tuple(args.upf_modes))
        for name, scores in report["interpolation"].items():
            shown = {k: v for k, v in scores.items() if k != "one_draw"}
            print(f"interpolation {name}:", _fmt(_flat(shown)))
            if "one_draw" in scores:
                print(f"interpolation {name}, one noise draw for every frame:", _fmt(_flat(scores["one_draw"])))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


def _existing(path: Path) -> Path | None:
    return path if path.is_file() else None


def _fmt(scores: dict) -> str:
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()
                    if not isinstance(v, dict))


if __name__ == "__main__":
    raise SystemExit(main())
