"""Typed schema of a run's configuration.

Every recipe under ``recipes/`` is validated against :class:`RunConfig`. OmegaConf's structured mode makes an
unknown key fail with its dotted name and the closest valid key, and a wrong type fail with the key and value.
Defaults here are small and CPU-friendly; the paper-scale values live in the recipes, each marked where it is
our choice rather than the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING


@dataclass
class UNetConfig:
    """One UNet for images (``b c h w``) and videos (``b c t h w``); temporal layers exist by config."""

    in_channels: int = 3
    out_channels: int = 3
    # Channels concatenated to the noisy input (↑F: 3 known-frame channels + 1 mask channel). Zero-initialised.
    extra_in_channels: int = 0
    # Space-to-depth: the UNet works on p x p pixel patches (pixel_unshuffle in, pixel_shuffle out), so its first
    # level runs at 1/p of the image size with p^2 times the input channels. 1 = on pixels (ADM).
    patch_size: int = 1
    base_channels: int = 32
    channel_mults: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 1
    # Downsampling factors (1 = full resolution) at which self/cross attention blocks are placed.
    attention_levels: list[int] = field(default_factory=lambda: [2])
    head_dim: int = 32
    dropout: float = 0.0
    # GroupNorm: 32 groups, fewer when the UNet is so narrow that a group would hold fewer channels than this.
    norm_channels_per_group: int = 4
    # Conditioning on the CLIP image embedding: added to the timestep embedding and as extra attention tokens.
    cond_dim: int = 0
    num_cond_tokens: int = 4
    # Scale the CLIP image embedding to norm sqrt(cond_dim) before use: its direction carries CLIP's meaning, its
    # norm depends on the CLIP (a trained toy CLIP: ~30, a random one: ~0.2), so the conditioning strength does not.
    cond_normalize: bool = True
    # Optional text conditioning (per-token CLIP text states as extra attention context); 0 disables.
    text_dim: int = 0
    # Video: pseudo-3D convolutions and attention.
    temporal: bool = False
    temporal_kernel: int = 3
    max_frames: int = 128
    fps_cond: bool = False
    # Video: the temporal attention also reads the timestep (+ fps) embedding, added to its normalised input through
    # a zero-initialised projection (our choice). Without it the fps reaches the temporal layers only through the
    # spatial layers' scale/shift, the same for every frame, and D^t's motion hardly depends on it.
    temporal_attn_emb: bool = False
    # Video: the fps embedding goes to the temporal attention only (needs temporal_attn_emb), not into the spatial
    # layers' scale/shift. Those treat every frame alike, so through them the fps can only change how each frame is
    # drawn (a D^t trained on fast clips learns to blur the shape there), never how the frames differ.
    fps_temporal_only: bool = False
    # Super-resolution: embed the noise-augmentation level of the low-res input (a timestep in [0, T)) and add it
    # to the timestep embedding (Imagen's noise-conditioning augmentation).
    aug_level_cond: bool = False
    gradient_checkpointing: bool = False


@dataclass
class PriorConfig:
    """The prior P (DALL-E 2's diffusion prior): a causal transformer over [projected per-token text states,
    pooled text embedding, timestep embedding, noised image embedding, learned query]; the output at the query
    is the prediction. ``embed_dim`` / ``text_dim`` / ``text_tokens`` must match the configured CLIP (checked at
    start)."""

    embed_dim: int = 32  # CLIP embedding width (image and pooled text)
    text_dim: int = 64  # CLIP text transformer width (per-token states)
    text_tokens: int = 32  # CLIP context length
    dim: int = 128  # transformer width
    depth: int = 2
    heads: int = 4
    ff_mult: int = 4
    dropout: float = 0.0
    # How image embeddings are made fit for Gaussian diffusion: l2 (unit norm x sqrt(d), DALLE2-pytorch) or
    # standardize (per-dimension dataset mean/std, Karlo). The statistics are buffers of the checkpoint.
    normalization: str = "l2"
    stats_samples: int = 4096  # standardize: embeddings the mean/std are computed over at the start of fit
    # Sampling: keep the best of this many candidates per prompt (cosine with the text embedding, DALL-E 2).
    num_candidates: int = 2


@dataclass
class DiffusionConfig:
    timesteps: int = 1000
    schedule: str = "cosine"  # cosine | linear
    linear_start: float = 1e-4
    linear_end: float = 2e-2
    parameterization: str = "eps"  # eps | v | x0 (the prior predicts x0) | edm (skip + correction, Karras et al.)
    # edm only: the data's standard deviation, which sets where the skip hands over to the prediction.
    sigma_data: float = 0.5
    # Min-SNR-gamma loss weighting (0 = off, plain MSE on the target); 5 is the paper's value.
    min_snr_gamma: float = 0.0
    # With min-SNR: the x0-error weight never falls below this (0 = plain min-SNR, whose weight SNR -> 0 at the
    # noisiest timesteps).
    min_snr_floor: float = 0.0
    # Training timesteps: uniform over [0, T), except that this fraction of each batch is drawn uniformly from the
    # noisy end [noisy_from * T, T) instead (ours; 0 = plain uniform). There the sample's composition must come
    # from the conditioning alone, and that is what a small decoder learns last (README, decoder diagnosis).
    noisy_fraction: float = 0.0
    noisy_from: float = 0.6
    # Video (b c t h w) only: this share of every frame's noise variance is one draw per clip, the rest per frame
    # (the mixed noise prior of PYoCo, Ge et al. 2023: eps_f = sqrt(s) eps_clip + sqrt(1 - s) eps_f), in training
    # and in sampling alike; 0 = independent frames. In [0, 1).
    frame_noise_share: float = 0.0
    # Self-conditioning (Chen et al. 2022, "Analog Bits"): the network also reads its own previous estimate of x0 as
    # unet.out_channels extra input channels (the first of unet.extra_in_channels). In training, half of the steps
    # first predict x0 with a zero estimate (no gradient) and feed that back; in sampling each step gets the last
    # step's estimate. Implemented for the decoder, the temporal decoder and ↑F (interpolation: the estimate, then the
    # known frames and the mask, unet.extra_in_channels = out_channels + 4).
    self_condition: bool = False
    # Sampling defaults (overridable per call).
    sampler: str = "ddim"  # ddim | ddpm | dpmpp (DPM-Solver++ 2M, deterministic)
    sample_steps: int = 50
    ddim_eta: float = 0.0
    guidance_scale: float = 3.0
    # Guidance in a limited interval (Kynkaanniemi et al. 2024): [lo, hi] as fractions of the timesteps; there the
    # scale is guidance_interval_scale, elsewhere guidance_scale. Only where a call samples with the recipe's
    # guidance (a call that names its own scale gets that scale everywhere). null = guidance_scale everywhere.
    guidance_interval: list[float] | None = None
    guidance_interval_scale: float = 1.0
    clip_denoised: bool = True


def interval_fractions(interval) -> tuple[float, float]:
    """``diffusion.guidance_interval`` checked: ``(lo, hi)`` with ``0 <= lo <= hi <= 1``, else ValueError."""
    values = list(interval)
    if len(values) != 2 or not 0.0 <= float(values[0]) <= float(values[1]) <= 1.0:
        raise ValueError(f"guidance_interval must be [lo, hi] with 0 <= lo <= hi <= 1 (fractions of the timesteps), "
                         f"got {values}")
    return float(values[0]), float(values[1])


@dataclass
class ClipConfig:
    """Frozen open_clip model: an open_clip name (``ViT-L-14``), ``toy`` (the toy world's CLIP) or ``custom``
    (``custom_cfg``)."""

    model: str = "custom"
    # A pretrained tag known to open_clip (``openai``), a local checkpoint path, null for random weights, or
    # ``demo``: the toy CLIP (model: toy) trained by recipes/demo/clip.yaml into the cache on first use.
    pretrained: str | None = None
    # Random weights (pretrained: null) are drawn from this seed, so every process builds the same CLIP.
    seed: int = 0
    # For model=custom: kwargs of open_clip.model.CLIP (embed_dim, vision_cfg, text_cfg). Tests/demos use a tiny one.
    custom_cfg: dict[str, Any] = field(
        default_factory=lambda: {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        }
    )
    # Tokenizer name for open_clip.get_tokenizer (its BPE vocabulary ships with open_clip).
    tokenizer: str = "ViT-B-32"


@dataclass
class CurriculumConfig:
    """fps ~ 1 + 29 * Beta(alpha, beta); (alpha, beta) move linearly from start to end over ``steps``.

    Our choice (the paper gives none): start concentrated at high fps (little motion), end at low fps.
    """

    fps_min: float = 1.0
    fps_max: float = 30.0
    alpha_start: float = 5.0
    beta_start: float = 1.0
    alpha_end: float = 1.0
    beta_end: float = 3.0
    steps: int = 10000


@dataclass
class DataConfig:
    kind: str = "image_text"  # image_text | video
    shards: str | None = None
    batch_size: int = 8
    num_workers: int = 2
    # How loader workers start: forkserver (a clean process, immune to locks held by the trainer's threads at
    # fork time; a script of your own then needs the `if __name__ == "__main__":` guard) | fork (faster start, the
    # old default; can hang at random) | spawn.
    worker_start: str = "forkserver"
    resolution: int = 64
    # Resolution at which the conditioning image (CLIP input) is produced; null = use ``resolution``.
    clip_resolution: int | None = None
    # Samples per rank per epoch (resampled shards; every rank gets the same number of batches).
    epoch_samples: int = 10000
    val_shards: str | None = None
    val_samples: int = 64
    shuffle_buffer: int = 1000
    # Keep the training stream's decoded images in memory, up to this many MB per loader process, so that later
    # epochs neither read the tars nor decode again (datamodules/memory_cache.py): for data sets that fit, like the
    # demo's 20,000 toy images. Same batches as without. 0 = off. Video clips are drawn at random on every read
    # and never cached (with data.image_shards, the joint image stream is).
    memory_cache_mb: float = 0
    # Image filters on the json fields, e.g. ["pwatermark<0.5", "punsafe<0.5"].
    filters: list[str] = field(default_factory=list)
    min_image_size: int = 16
    # Images whose short side is below data.resolution: "upscale" (bicubic, counted as data/upscaled) or "skip"
    # (counted as data/skipped_below_resolution).
    small_images: str = "upscale"
    seed: int = 0
    # Video only.
    num_frames: int = 16
    short_clip: str = "adjust"  # adjust (lowest fps that fits) | skip
    # Read clips with a whole number of source frames between output frames (↑F: keyframes and in-betweens are
    # then evenly spaced real frames of the source); false rounds a fractional stride per frame (D^t).
    integer_stride: bool = False
    cond_frame: str = "first"  # first | middle | random
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    # Joint image+video batches for temporal components: image-text shards mixed in (null = off).
    image_shards: str | None = None
    image_batch_size: int = 0
    # Precomputed CLIP embeddings in the clip-retrieval layout (img_emb/, text_emb/, metadata/): the prior
    # trains from them instead of image shards; the decoder reads its image embeddings from them by key instead
    # of running the CLIP image tower. ``demo``: the demo shards' embeddings, computed into the cache on first use.
    embeddings: str | None = None
    # Toy world: colour x shape pairs ("red circle") whose captions are skipped (reason "filtered"), so that a
    # prior can be judged on combinations it never read.
    holdout_pairs: list[str] = field(default_factory=list)
    # Demo data: when shards is null and demo is true, the toy world is generated into the cache.
    demo: bool = False
    demo_samples: int = 256


@dataclass
class OptimConfig:
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    warmup_steps: int = 100
    # Cosine decay to lr * min_lr_ratio at decay_steps (null = trainer.max_steps).
    decay_steps: int | None = None
    min_lr_ratio: float = 0.1
    # Per-parameter learning-rate multipliers: {regex: scale}, matched (re.search) against the trained module's
    # parameter names, first match wins; e.g. {'conv_\\d\\.temporal\\.': 0.1}. A pattern that matches no trained
    # parameter is an error. Scale 0 freezes the matched parameters.
    lr_scales: dict[str, float] = field(default_factory=dict)


@dataclass
class EMAConfig:
    enabled: bool = True
    decay: float = 0.9999
    warmup: bool = True  # decay = min(decay, (1 + step) / (10 + step))
    start_step: int = 0


@dataclass
class RepaConfig:
    """Representation alignment (REPA, Yu et al. 2024): an extra training loss that asks the UNet's middle
    features, through a small trained projector, to match (cosine per position) the frozen CLIP image tower's
    features of the clean training image. The denoiser then has to recover, from a noisy input, what the CLIP
    sees in the clean one: on the toy world that includes the shape's outline (docs/results.md, session 35)."""

    weight: float = 0.0  # 0 = off
    # The module of the CLIP image tower whose output is the target, by its name in
    # ``clip.model.visual.named_modules()``: e.g. ``layer2`` (ModifiedResNet), ``transformer.resblocks.7`` (ViT).
    encoder_layer: str = "layer2"
    projector_dim: int = 256  # hidden width of the projector (two 1x1 convolutions)
    # Which UNet feature is aligned: "middle" (the bottleneck's output) or "down.K", the output of encoder block K
    # (UNet.down, downsamplers counted). The projection is resized to the CLIP layer's grid when they differ.
    unet_feature: str = "middle"


@dataclass
class MaskConfig:
    """↑F training masks: which frames of a clip are known. The modes are mixed by these (relative) ratios; our
    choice, the paper gives none (Open-Sora-Plan mixes image-to-video : transition : continuation 5 : 4 : 1,
    LVDM leaves 10% with nothing known)."""

    interpolation: float = 0.5  # every s-th frame known, s drawn uniformly from min_skip..max_skip
    extrapolation_forward: float = 0.15  # the first k frames known, k from 1..max_known
    extrapolation_backward: float = 0.15  # the last k frames known
    animation: float = 0.1  # only the first frame known
    unconditional: float = 0.1  # nothing known, image embedding dropped (classifier-free guidance)
    min_skip: int = 2  # skip 1 would leave no frame unknown
    max_skip: int = 5
    max_known: int = 4
    # Gaussian noise (std, in [-1, 1] pixel units) added to the known frames in training (LVDM and Open-Sora-Plan
    # noise them a little); 0 = clean known frames.
    known_noise: float = 0.0


@dataclass
class ComponentConfig:
    # Condition dropout for classifier-free guidance (DALL-E 2: image embedding 10%, text 50%).
    p_drop_image_emb: float = 0.1
    p_drop_text: float = 0.5
    # Video components: train only the new temporal layers (the paper) or everything.
    freeze_spatial: bool = True
    # Super-resolution (sr_low, sr_high, temporal_sr_low): the low-resolution input is the training image
    # downsampled (antialiased) to ``low_res`` px, resized back up to ``data.resolution`` and concatenated to the
    # noisy input (unet.extra_in_channels: 3).
    low_res: int = 64
    # Noise-conditioning augmentation, as a fraction of the diffusion timesteps: training noises the low-res input
    # at a level drawn per sample uniformly from [0, low_res_noise_max]; sampling uses low_res_noise_level.
    low_res_noise_max: float = 0.5
    low_res_noise_level: float = 0.1
    # Gaussian blur of the low-res input before upsampling (DALL-E 2's upsamplers: p 0.5, sigma 0.6, kernel 3).
    low_res_blur_prob: float = 0.0
    low_res_blur_sigma: list[float] = field(default_factory=lambda: [0.4, 0.6])
    # Super-resolution: diffuse the residual x - up(low_res) instead of the image (SRDiff, Li et al. 2022): the
    # output is the (clean) resized-up input plus the sampled residual, so an untrained net already returns the
    # bicubic upsampling and training only has to learn the detail bicubic misses.
    # Interpolation ↑F: diffuse x - the known frames' blend (cross-fade between them, held beyond them); the
    # output convolution restarts at zero after init.checkpoint, so an untrained ↑F returns the cross-fade.
    # Sampling then needs guidance 1 (the nothing-known branch predicts frames, not a residual).
    residual: bool = False
    # ↑F with model.residual: the residual is diffused multiplied by this (its std is ~0.07 on the toy world, so
    # unscaled it drowns in the noise at all but the last timesteps; latent diffusion scales its latents the same
    # way).
    residual_scale: float = 1.0
    # sr_high: train on random crops of this size of the high-res image (null = the whole image); samples are
    # always full size.
    crop_size: int | None = None
    # Interpolation ↑F: the frame skip of sample logging and the default of `interpolate` (16 -> 76 frames at 5),
    # and the training masks.
    frame_skip: int = 5
    masks: MaskConfig = field(default_factory=MaskConfig)
    # ↑F sampling: 1 starts from pure noise; below 1 from the blend of the known frames (cross-fade between them,
    # held before the first and after the last) noised to that fraction of the timesteps (SDEdit).
    sample_strength: float = 1.0
    # clip: captions per toy-world image that differ in one attribute, as extra negatives (0 = plain CLIP loss),
    # the changed attributes drawn from hard_negative_attributes (distinct while they last; "position" also means
    # a moving shape's direction).
    hard_negatives: int = 0
    hard_negative_attributes: list[str] = field(
        default_factory=lambda: ["color", "background", "shape", "position", "size"])


@dataclass
class TrainerConfig:
    """Passed to ``lightning.Trainer`` (unknown Trainer arguments go in ``extra``)."""

    max_steps: int = 1000
    max_epochs: int = -1
    devices: Any = 1
    num_nodes: int = 1
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    accumulate_grad_batches: int = 1
    gradient_clip_val: float | None = 1.0
    log_every_n_steps: int = 10
    val_check_interval: int | None = None
    limit_val_batches: int | None = None
    enable_progress_bar: bool = True
    deterministic: bool = False
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "mav_train"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # wandb mode: auto = online when credentials are configured, offline otherwise.
    mode: str = "auto"  # auto | online | offline | disabled


@dataclass
class CheckpointConfig:
    every_n_steps: int = 500
    save_top_k: int = 1
    monitor: str = "val/loss"
    resume: str = "auto"  # auto (resume from run_dir/checkpoints/last.ckpt if present) | never


@dataclass
class SamplingConfig:
    every_n_steps: int = 500
    num_samples: int = 4
    steps: int | None = None
    guidance_scale: float | None = None


@dataclass
class InitConfig:
    # A checkpoint of an earlier component to start from (decoder → temporal_decoder, sr_low → temporal_sr_low).
    checkpoint: str | None = None


@dataclass
class SlurmConfig:
    """``submit``: the sbatch script rendered from ``mav_train/slurm/train.sbatch``. One task per GPU; with
    ``gpus_per_node=0``, ``tasks_per_node`` CPU tasks."""

    nodes: int = 1
    gpus_per_node: int = 8
    tasks_per_node: int = 1
    cpus_per_task: int = 8
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: str = "48:00:00"
    mem: str | None = None
    # SIGUSR1 this many seconds before the time limit: save, stop, requeue.
    requeue_signal_seconds: int = 120
    # Extra "#SBATCH" lines ("--constraint=a100" or "#SBATCH --constraint=a100").
    extra_sbatch: list[str] = field(default_factory=list)
    # Shell lines run before srun (module load ..., source venv/bin/activate, export NCCL_...=...).
    setup: list[str] = field(default_factory=list)
    # Interpreter the tasks run; null = the one running `submit` (added: null default, was "python").
    python: str | None = None
    # sbatch --job-name (added); null = mav-<recipe>.
    job_name: str | None = None


@dataclass
class RunConfig:
    recipe: str = MISSING
    description: str = ""
    component: str = MISSING
    run_dir: str | None = None
    cache_dir: str | None = None
    unet: UNetConfig = field(default_factory=UNetConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    repa: RepaConfig = field(default_factory=RepaConfig)
    model: ComponentConfig = field(default_factory=ComponentConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    init: InitConfig = field(default_factory=InitConfig)
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
